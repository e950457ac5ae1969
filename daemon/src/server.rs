//! Starting and stopping spored: the state-dir lock, the socket, the gRPC server, signals.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use futures::TryStreamExt;
use spore_api::v1::control_server::ControlServer;
use tokio::net::UnixListener;
use tokio::sync::watch;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::service::InterceptorLayer;
use tonic::transport::Server;

use crate::api::ControlService;
use crate::auth;
use crate::authority::AuthorityStream;
use crate::config::Config;
use crate::daemon::{Daemon, Shared};
use crate::events::EventBus;
use crate::images::Images;
use crate::store::Store;
use crate::zones::Zones;

/// An exclusive lock on the state directory, held for the daemon's life.
pub struct StateLock {
    _file: File,
}

impl StateLock {
    /// Locks `<state_dir>/spored.lock`; a second daemon is refused with the holder's pid.
    pub fn acquire(state_dir: &Path) -> Result<StateLock> {
        let path = state_dir.join("spored.lock");
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        if rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            bail!(
                "state directory {} is in use by another spored (pid {}); stop it first",
                state_dir.display(),
                pid.trim()
            );
        }
        file.set_len(0)?;
        file.rewind()?;
        writeln!(file, "{}", std::process::id())?;
        file.sync_all()?;
        Ok(StateLock { _file: file })
    }
}

/// Binds the control socket: mode 0660, group `spore` when it exists. A stale socket file
/// is replaced; a live one (another daemon serving it) is an error.
fn bind_socket(path: &Path) -> Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the socket directory {}", dir.display()))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            bail!(
                "{} is already served by another process (another spored?)",
                path.display()
            );
        }
        std::fs::remove_file(path)
            .with_context(|| format!("cannot remove the stale socket {}", path.display()))?;
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("cannot listen on {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    if let Some(gid) = auth::group_gid(Path::new("/etc/group"), auth::GROUP) {
        rustix::fs::chown(path, None, Some(rustix::fs::Gid::from_raw(gid)))
            .with_context(|| format!("cannot give {} to group {}", path.display(), auth::GROUP))?;
    }
    Ok(listener)
}

/// Runs spored until SIGTERM or SIGINT.
pub async fn run(config: Config) -> Result<()> {
    let state_dir = config.state_dir.clone();
    std::fs::create_dir_all(&state_dir)
        .with_context(|| format!("cannot create the state directory {}", state_dir.display()))?;
    let _lock = StateLock::acquire(&state_dir)?;
    let store = Store::open(&state_dir.join("state.db"), config.events.retained)?;
    let zones = Zones::load(store, EventBus::new(config.events.client_queue))?;
    let images = Images::open(&config, zones.clone()).context("cannot open the image cache")?;
    let (backend, selection) = crate::backends::select(&config).await;
    match backend {
        Some(_) => tracing::info!(
            "backend {}: {}",
            selection.kind.as_str_name(),
            selection.reason
        ),
        None => tracing::warn!("{}", selection.reason),
    }
    let socket = config.socket.clone();
    let daemon = Daemon::new(Shared::new(config, zones, images, backend, selection));
    daemon.start().await;

    let listener = bind_socket(&socket)?;
    let _socket_guard = RemoveOnDrop(socket.clone());
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<ControlServer<ControlService>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(spore_api::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("cannot build the reflection service")?;
    // v1alpha too: grpcurl and grpcio-reflection releases still in distributions ask for it.
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(spore_api::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .context("cannot build the reflection service (v1alpha)")?;
    let control = ControlServer::new(ControlService::new(daemon, shutdown_rx))
        // Per-field limits sit well below this; crate::limits words a refusal above it.
        .max_decoding_message_size(spore_api::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(spore_api::MAX_MESSAGE_BYTES);
    tracing::info!(
        "spored {} listening on {}",
        env!("CARGO_PKG_VERSION"),
        socket.display()
    );
    notify_ready();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        Server::builder()
            .layer(InterceptorLayer::new(auth::check))
            .layer(crate::limits::OversizeLayer)
            .add_service(health)
            .add_service(reflection)
            .add_service(reflection_v1alpha)
            .add_service(control)
            // Clients name the socket in `:authority` in ways h2 refuses (crate::authority).
            .serve_with_incoming_shutdown(
                UnixListenerStream::new(listener).map_ok(AuthorityStream::new),
                async move {
                    let _ = stop_rx.await;
                },
            ),
    );
    wait_for_signal().await;
    tracing::info!(
        "shutting down: no new calls, in-flight calls get {}s to finish; running zones are left alone",
        SHUTDOWN_GRACE.as_secs()
    );
    // Streams (events, consoles, logs) end; unary calls finish.
    shutdown_tx.send_replace(true);
    let _ = stop_tx.send(());
    match tokio::time::timeout(SHUTDOWN_GRACE, server).await {
        Ok(Ok(result)) => result.context("the gRPC server failed")?,
        Ok(Err(e)) => bail!("the gRPC server task failed: {e}"),
        Err(_) => tracing::warn!(
            "calls still in flight after {}s (or clients that do not close their connections); stopping anyway",
            SHUTDOWN_GRACE.as_secs()
        ),
    }
    tracing::info!("stopped");
    Ok(())
}

/// How long in-flight calls may run after SIGTERM before spored exits anyway. Every state
/// change is already durable when its call returns, so cutting a call short loses nothing
/// acknowledged.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop spored with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Tells systemd (`Type=notify`) that the socket accepts calls; nothing without `NOTIFY_SOCKET`.
fn notify_ready() {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let bytes = path.as_encoded_bytes();
    let addr = match bytes.strip_prefix(b"@") {
        Some(name) => SocketAddr::from_abstract_name(name),
        None => SocketAddr::from_pathname(&path),
    };
    let sent = addr.and_then(|addr| UnixDatagram::unbound()?.send_to_addr(b"READY=1", &addr));
    if let Err(e) = sent {
        tracing::warn!("cannot notify systemd through NOTIFY_SOCKET: {e}");
    }
}
