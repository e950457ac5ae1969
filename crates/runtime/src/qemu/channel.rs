//! A guest channel (hvc0 or hvc1) as spored sees it: a Unix socket spored listens on and QEMU
//! connects to (`reconnect=1`). QEMU drops what the guest writes while no one is connected, so
//! the first connection is accepted during `create`, before the guest can print anything.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Mutex;

use crate::qemu::process::QemuProcess;

#[derive(Debug)]
pub struct Channel {
    path: PathBuf,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    listener: Option<UnixListener>,
    /// A connection accepted but not handed out yet (the one made at launch).
    ready: Option<UnixStream>,
}

impl Channel {
    /// A channel whose socket is not bound yet (a re-adopted VM).
    pub fn unbound(path: &Path) -> Channel {
        Channel {
            path: path.to_path_buf(),
            state: Mutex::new(State::default()),
        }
    }

    /// Binds the socket, replacing a stale file a previous spored left behind.
    pub fn bind(path: &Path) -> std::io::Result<Channel> {
        let channel = Channel::unbound(path);
        let listener = bind(path)?;
        channel.state.try_lock().expect("new channel").listener = Some(listener);
        Ok(channel)
    }

    /// Accepts QEMU's connection and keeps it for the first [`Channel::open`].
    pub async fn accept_first(&self, timeout: Duration) -> std::io::Result<()> {
        let mut state = self.state.lock().await;
        let stream = accept(&mut state, &self.path, timeout, None).await?;
        state.ready = Some(stream);
        Ok(())
    }

    /// The connection to the guest: the one accepted at launch, else a new one (QEMU retries
    /// every second while disconnected).
    pub async fn open(
        &self,
        timeout: Duration,
        process: &QemuProcess,
    ) -> std::io::Result<UnixStream> {
        let mut state = self.state.lock().await;
        if let Some(stream) = state.ready.take() {
            return Ok(stream);
        }
        accept(&mut state, &self.path, timeout, Some(process)).await
    }
}

fn bind(path: &Path) -> std::io::Result<UnixListener> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    UnixListener::bind(path)
}

async fn accept(
    state: &mut State,
    path: &Path,
    timeout: Duration,
    process: Option<&QemuProcess>,
) -> std::io::Result<UnixStream> {
    if state.listener.is_none() {
        state.listener = Some(bind(path)?);
    }
    let listener = state.listener.as_ref().expect("bound above");
    let deadline = Instant::now() + timeout;
    loop {
        let wait = deadline.saturating_duration_since(Instant::now());
        if wait.is_zero() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "QEMU did not connect to {} within {} s",
                    path.display(),
                    timeout.as_secs()
                ),
            ));
        }
        // Wake up now and then to notice a QEMU that died instead of connecting.
        match tokio::time::timeout(wait.min(Duration::from_millis(500)), listener.accept()).await {
            Ok(Ok((stream, _))) => return Ok(stream),
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                if process.is_some_and(QemuProcess::has_exited) {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::NotConnected,
                        "QEMU has exited",
                    ));
                }
            }
        }
    }
}
