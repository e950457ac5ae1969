//! A zone's driver: one task per zone that moves it through its states.
//!
//! Launch: Preparing (image) -> Creating (config block, backend VM) -> Starting -> Running
//! (the guest said Started) -> Exited (the guest's Exit) or Failed. Once the Exit is committed
//! the guest gets an ExitAck; it powers off only after one, so an Exit sent while no daemon
//! was reading is re-sent and recorded by the next one. Adopt: a re-started daemon
//! picks up a running VM. Destroy: Stopping (SIGTERM through IDM, bounded wait) -> Destroying
//! -> Destroyed. A destroy request can arrive at any time; the backend's `create` is never
//! cancelled half-way, it is finished and then torn down.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use spore_api::v1::{self, ZoneState};
use spore_idm::ExitStatus;
use tokio::sync::{Semaphore, mpsc, watch};
use uuid::Uuid;

use crate::console::{ConsoleHub, Ending};
use crate::idm::{GuestEvent, IdmLink};
use crate::launch;
use crate::shared::{Shared, chain};

/// What a new driver starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Launch,
    Adopt,
    Destroy,
}

/// The daemon's handle on a driver.
pub struct DriverHandle {
    destroy: watch::Sender<bool>,
    done: watch::Receiver<bool>,
}

impl DriverHandle {
    pub fn request_destroy(&self) {
        self.destroy.send_replace(true);
    }

    pub fn done(&self) -> watch::Receiver<bool> {
        self.done.clone()
    }
}

enum Next {
    /// The zone has ended (exited or failed) and stays until destroyed.
    Rest,
    Destroy,
}

/// How long a guest gets after its workload's Exit (and our ack) to power off before the VM
/// is torn down.
const POWEROFF_GRACE: Duration = Duration::from_secs(10);

/// A receiver that resolves once a driver finished.
pub type Done = watch::Receiver<bool>;

/// The drivers of all zones (at most one per zone) and the permits that bound how many zones
/// launch at once.
pub struct Drivers {
    handles: Mutex<HashMap<Uuid, DriverHandle>>,
    launches: Semaphore,
}

impl Drivers {
    pub fn new(max_parallel_launches: usize) -> Drivers {
        Drivers {
            handles: Mutex::new(HashMap::new()),
            launches: Semaphore::new(max_parallel_launches),
        }
    }

    fn handles(&self) -> MutexGuard<'_, HashMap<Uuid, DriverHandle>> {
        self.handles.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts zone `id`'s driver in `mode` unless it has one.
    pub fn spawn(self: &Arc<Self>, shared: &Arc<Shared>, id: Uuid, mode: Mode) {
        self.handles()
            .entry(id)
            .or_insert_with(|| self.start(shared.clone(), id, mode));
    }

    /// Asks zone `id`'s driver to destroy it, starting one if it has none; the receiver
    /// resolves once that driver has finished.
    pub fn destroy(self: &Arc<Self>, shared: &Arc<Shared>, id: Uuid) -> Done {
        let mut handles = self.handles();
        match handles.get(&id) {
            Some(handle) => {
                handle.request_destroy();
                handle.done()
            }
            None => {
                let handle = self.start(shared.clone(), id, Mode::Destroy);
                let done = handle.done();
                handles.insert(id, handle);
                done
            }
        }
    }

    fn start(self: &Arc<Self>, shared: Arc<Shared>, id: Uuid, mode: Mode) -> DriverHandle {
        let (destroy_tx, destroy_rx) = watch::channel(mode == Mode::Destroy);
        let (done_tx, done_rx) = watch::channel(false);
        let drivers = self.clone();
        tokio::spawn(async move {
            let mut destroy = destroy_rx;
            let mut next = match mode {
                Mode::Launch => launch(&shared, &drivers.launches, id, &mut destroy).await,
                Mode::Adopt => supervise(&shared, id, &mut destroy).await,
                Mode::Destroy => Next::Destroy,
            };
            loop {
                if let Next::Destroy = next {
                    destroy_zone(&shared, id).await;
                }
                // A destroy requested while we were finishing must not be lost: check it under
                // the lock that destroy() takes to find this driver.
                let mut handles = drivers.handles();
                if matches!(next, Next::Rest) && *destroy.borrow() {
                    drop(handles);
                    next = Next::Destroy;
                    continue;
                }
                handles.remove(&id);
                break;
            }
            done_tx.send_replace(true);
        });
        DriverHandle {
            destroy: destroy_tx,
            done: done_rx,
        }
    }
}

async fn requested(destroy: &mut watch::Receiver<bool>) {
    // Resolves once destroy is true; never when the handle is gone without asking.
    if destroy.wait_for(|d| *d).await.is_err() {
        std::future::pending::<()>().await;
    }
}

async fn launch(
    daemon: &Arc<Shared>,
    launches: &Semaphore,
    id: Uuid,
    destroy: &mut watch::Receiver<bool>,
) -> Next {
    // Bounds concurrent prepares and creates, not running zones: released before supervising.
    let permit = tokio::select! {
        permit = launches.acquire() => permit.ok(),
        _ = requested(destroy) => return Next::Destroy,
    };
    let Some(record) = daemon.zones.get(id) else {
        return Next::Rest;
    };
    // Resolved once at CreateZone: a reference (cached or pulled now) or a cached image's id.
    let reference = match daemon.images.zone_target(&record).await {
        Ok(target) => target,
        Err(e) => {
            let image = record.spec().image;
            return failed(daemon, id, &format!("image {image}: {}", chain(&e))).await;
        }
    };
    if let Err(e) = daemon
        .zones
        .transition(
            id,
            ZoneState::Preparing,
            format!("preparing image {reference}"),
            |_| {},
        )
        .await
    {
        tracing::error!(zone = %id, "{e}");
        return Next::Rest;
    }
    let format = daemon.images.default_format();
    let image = tokio::select! {
        image = daemon.images.ensure_target(&reference, format, spore_oci::NoProgress) => image,
        _ = requested(destroy) => return Next::Destroy,
    };
    let image = match image {
        Ok(image) => image,
        Err(e) => {
            return failed(daemon, id, &format!("image {reference}: {}", chain(&e))).await;
        }
    };
    let digest = image.image.manifest_digest.to_string();
    let record = match daemon
        .zones
        .transition(
            id,
            ZoneState::Creating,
            format!("image {reference} ready ({digest})"),
            |r| {
                r.image_key = image.key();
                r.root_image = image.image.path.display().to_string();
                r.status_mut().image_digest = digest.clone();
            },
        )
        .await
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(zone = %id, "{e}");
            return Next::Rest;
        }
    };
    let dir = launch::zone_dir(&daemon.config, id);
    let spec = match launch::prepare(&daemon.config, &record, &image, &dir).await {
        Ok(spec) => spec,
        Err(e) => return failed(daemon, id, &chain(&e)).await,
    };
    let Some(backend) = daemon.backend.clone() else {
        return failed(daemon, id, &daemon.selection.reason).await;
    };
    // Open the console log before the VM can print anything.
    if let Err(e) = daemon.console(id) {
        return failed(daemon, id, &format!("cannot open the console log: {e}")).await;
    }
    let domain = match backend.create(&spec).await {
        Ok(domain) => domain,
        Err(e) => return failed(daemon, id, &create_failure(daemon, &e)).await,
    };
    if let Err(e) = daemon
        .zones
        .transition(
            id,
            ZoneState::Starting,
            format!("VM started ({})", domain.handle),
            |r| {
                r.status_mut().domain = domain.handle.clone();
            },
        )
        .await
    {
        tracing::error!(zone = %id, "{e}");
    }
    drop(permit);
    supervise(daemon, id, destroy).await
}

/// Why a zone's VM could not be created, with what to do when it is the guest bundle that is
/// missing (the backend checks the files; the daemon knows where the bundle belongs).
fn create_failure(daemon: &Shared, e: &spore_runtime::RuntimeError) -> String {
    let reason = chain(e);
    let config = &daemon.config;
    match e {
        spore_runtime::RuntimeError::File { what, path, .. }
            if *path == config.guest_kernel() || *path == config.guest_initrd() =>
        {
            format!(
                "{reason}: install the guest bundle (kernel/build-bundle.sh {}) or set guest.{what} in spored.toml",
                config.state_dir.join("guest").display()
            )
        }
        _ => reason,
    }
}

/// Follows a zone whose VM runs: console, IDM, VM stop, destroy requests.
async fn supervise(daemon: &Arc<Shared>, id: Uuid, destroy: &mut watch::Receiver<bool>) -> Next {
    let Some(backend) = daemon.backend.clone() else {
        return failed(daemon, id, &daemon.selection.reason).await;
    };
    let hub = match daemon.console(id) {
        Ok(hub) => hub,
        Err(e) => return failed(daemon, id, &format!("cannot open the console log: {e}")).await,
    };
    match backend.open_console(id).await {
        Ok(stream) => {
            tokio::spawn(hub.clone().pump(stream));
        }
        Err(e) => tracing::warn!(zone = %id, "console unavailable: {}", chain(&e)),
    }
    let (events_tx, events_rx) = mpsc::channel(16);
    let idm = match backend.open_idm(id).await {
        Ok(stream) => Some(IdmLink::spawn(id, stream, events_tx)),
        Err(e) => {
            tracing::warn!(zone = %id, "IDM channel unavailable: {}", chain(&e));
            None
        }
    };
    // Exec and metrics reach the guest through the link while the zone is supervised.
    let _guest = idm.as_ref().map(|link| daemon.register_guest(link));
    let mut events = Some(events_rx);
    let mut fatal: Option<String> = None;
    let mut guest_errors = 0u64;
    let stopped = backend.wait_stopped(id);
    tokio::pin!(stopped);
    let start_timeout = Duration::from_secs(daemon.config.zones.start_timeout_secs);
    let start_deadline = daemon
        .zones
        .get(id)
        .and_then(|r| start_deadline(&r, start_timeout));
    let mut awaiting_start = start_deadline.is_some();
    let start_timer = tokio::time::sleep_until(
        start_deadline.unwrap_or_else(|| tokio::time::Instant::now() + start_timeout),
    );
    tokio::pin!(start_timer);
    loop {
        tokio::select! {
            // A destroy request first (a chatty guest cannot starve it), then what the guest
            // said (it said it before its VM stopped), then the VM's stop.
            biased;
            _ = requested(destroy) => {
                stop_workload(daemon, id, idm.as_ref(), &mut events, &mut stopped).await;
                return Next::Destroy;
            }
            _ = &mut start_timer, if awaiting_start => {
                awaiting_start = false;
                if daemon.zones.get(id).is_some_and(|r| r.state() == ZoneState::Starting) {
                    // A guest stuck in its boot (a hung kernel, an init that never runs the
                    // workload) would otherwise keep the zone STARTING and its VM running
                    // forever: fail it, and ended() destroys the VM.
                    let reason = format!(
                        "the guest did not start within {} s (zones.start_timeout_secs); see the zone's console log",
                        start_timeout.as_secs()
                    );
                    daemon.fail(id, &reason).await;
                    return ended(daemon, id, &hub).await;
                }
            }
            event = recv(&mut events) => match event {
                Some(GuestEvent::Started(info)) => started(daemon, id, &info).await,
                Some(GuestEvent::Exit(status)) => {
                    exited(daemon, id, idm.as_ref(), status).await;
                    await_poweroff(daemon, id, idm.as_ref(), &mut events, &mut stopped).await;
                    return ended(daemon, id, &hub).await;
                }
                Some(GuestEvent::Error { message, fatal: is_fatal }) => {
                    guest_errors += 1;
                    // The guest controls how many it sends: log the first few, then a sample.
                    if guest_errors <= 20 || guest_errors.is_multiple_of(1000) {
                        tracing::warn!(zone = %id, count = guest_errors, "guest reports: {message}");
                    }
                    if is_fatal {
                        fatal = Some(message);
                    }
                }
                Some(GuestEvent::Closed) | None => events = None,
            },
            stop = &mut stopped => {
                // The guest sends Exit and powers off at once: what is still in the IDM
                // channel decides whether this was an exit or a failure.
                if let Some(status) = drain_exit(daemon, id, &mut events, &mut fatal).await {
                    exited(daemon, id, idm.as_ref(), status).await;
                    return ended(daemon, id, &hub).await;
                }
                let reason = match (fatal.take(), stop) {
                    (Some(message), _) => format!("spore-init failed: {message}"),
                    (None, Ok(stop)) => format!("the VM stopped before the workload reported an exit ({})", stop.detail),
                    (None, Err(e)) => format!("lost track of the VM: {}", chain(&e)),
                };
                daemon.fail(id, &reason).await;
                return ended(daemon, id, &hub).await;
            }
        }
    }
}

/// Asks the guest to end the workload (SIGTERM, then SIGKILL after the grace period) and
/// waits a bounded time for its Exit, so a destroyed zone still records how it ended.
async fn stop_workload(
    daemon: &Arc<Shared>,
    id: Uuid,
    idm: Option<&IdmLink>,
    events: &mut Option<mpsc::Receiver<GuestEvent>>,
    stopped: &mut (impl std::future::Future + Unpin),
) {
    let state = daemon.zones.get(id).map(|r| r.state());
    let (Some(idm), Some(ZoneState::Starting | ZoneState::Running)) = (idm, state) else {
        return;
    };
    let grace = Duration::from_secs(daemon.config.zones.stop_timeout_secs);
    if let Err(e) = daemon
        .zones
        .transition(
            id,
            ZoneState::Stopping,
            "destroy requested: stopping the workload",
            |_| {},
        )
        .await
    {
        tracing::error!(zone = %id, "{e}");
    }
    if !idm.shutdown(grace).await {
        return;
    }
    let deadline = tokio::time::sleep(grace + Duration::from_secs(2));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            // The deadline holds however much the guest sends; its messages precede its stop.
            biased;
            _ = &mut deadline => return,
            event = recv(events) => match event {
                Some(GuestEvent::Exit(status)) => {
                    exited(daemon, id, Some(idm), status).await;
                    return;
                }
                Some(GuestEvent::Closed) | None => *events = None,
                Some(_) => {}
            },
            _ = &mut *stopped => {
                let mut fatal = None;
                if let Some(status) = drain_exit(daemon, id, events, &mut fatal).await {
                    exited(daemon, id, Some(idm), status).await;
                }
                return;
            }
        }
    }
}

/// Gives the guest [`POWEROFF_GRACE`] to power off after its Exit, acknowledging the copies
/// it re-sent before our first ack reached it (or that a re-adopting daemon finds queued).
async fn await_poweroff(
    daemon: &Arc<Shared>,
    id: Uuid,
    idm: Option<&IdmLink>,
    events: &mut Option<mpsc::Receiver<GuestEvent>>,
    stopped: &mut (impl std::future::Future + Unpin),
) {
    let deadline = tokio::time::sleep(POWEROFF_GRACE);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            biased;
            _ = &mut deadline => return,
            _ = &mut *stopped => return,
            event = recv(events) => match event {
                Some(GuestEvent::Exit(status)) => exited(daemon, id, idm, status).await,
                Some(GuestEvent::Closed) | None => *events = None,
                Some(_) => {}
            },
        }
    }
}

/// How long the IDM channel may take to deliver what the guest sent before its VM stopped.
const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// Reads the guest's remaining messages after its VM stopped, returning its Exit if it sent one.
async fn drain_exit(
    daemon: &Arc<Shared>,
    id: Uuid,
    events: &mut Option<mpsc::Receiver<GuestEvent>>,
    fatal: &mut Option<String>,
) -> Option<ExitStatus> {
    let deadline = tokio::time::Instant::now() + DRAIN_GRACE;
    loop {
        let rx = events.as_mut()?;
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(GuestEvent::Exit(status))) => return Some(status),
            Ok(Some(GuestEvent::Error {
                message,
                fatal: true,
            })) => *fatal = Some(message),
            Ok(Some(GuestEvent::Started(info))) => started(daemon, id, &info).await,
            Ok(Some(GuestEvent::Error { .. })) => {}
            Ok(Some(GuestEvent::Closed) | None) | Err(_) => return None,
        }
    }
}

/// The guest started the workload: Starting -> Running.
async fn started(daemon: &Arc<Shared>, id: Uuid, info: &spore_idm::proto::Started) {
    let guest_ms = info.workload_exec_ns.saturating_sub(info.init_start_ns) / 1_000_000;
    let reason = format!(
        "workload started (pid {} in the guest, {guest_ms} ms after init)",
        info.workload_pid
    );
    if daemon
        .zones
        .get(id)
        .is_some_and(|r| r.state() == ZoneState::Starting)
        && let Err(e) = daemon
            .zones
            .transition(id, ZoneState::Running, reason, |r| {
                let ms = |ns: u64| ns / 1_000_000;
                r.status_mut().guest_boot = Some(v1::GuestBootTimes {
                    init_start_ms: ms(info.init_start_ns),
                    modules_loaded_ms: ms(info.modules_loaded_ns),
                    rootfs_ready_ms: ms(info.rootfs_ready_ns),
                    workload_exec_ms: ms(info.workload_exec_ns),
                });
            })
            .await
    {
        tracing::error!(zone = %id, "{e}");
    }
}

/// When a STARTING zone's guest must have started its workload: `timeout` after the zone
/// became STARTING (its VM started), also for a zone a restarted daemon re-adopts.
fn start_deadline(
    record: &crate::store::ZoneRecord,
    timeout: Duration,
) -> Option<tokio::time::Instant> {
    if record.state() != ZoneState::Starting {
        return None;
    }
    let since = record
        .status()
        .history
        .iter()
        .rev()
        .find(|t| t.to == ZoneState::Starting as i32)
        .and_then(|t| t.time)
        .and_then(|ts| std::time::SystemTime::try_from(ts).ok());
    let elapsed = since
        .and_then(|s| s.elapsed().ok())
        .unwrap_or(Duration::ZERO);
    Some(tokio::time::Instant::now() + timeout.saturating_sub(elapsed))
}

async fn recv(events: &mut Option<mpsc::Receiver<GuestEvent>>) -> Option<GuestEvent> {
    match events {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Records the workload's exit (Running/Stopping -> Exited) and acknowledges it to the guest
/// once committed. An Exit for a zone already Exited (re-sent, or read again by a re-adopting
/// daemon) is only acknowledged: the first status stands.
async fn exited(daemon: &Arc<Shared>, id: Uuid, idm: Option<&IdmLink>, status: ExitStatus) {
    let recorded = daemon
        .zones
        .get(id)
        .is_some_and(|r| r.state() == ZoneState::Exited);
    if !recorded && !record_exit(daemon, id, status).await {
        return;
    }
    if let Some(idm) = idm {
        idm.exit_ack().await;
    }
}

/// The Exited transition; false when it could not be committed (the guest then gets no ack).
async fn record_exit(daemon: &Arc<Shared>, id: Uuid, status: ExitStatus) -> bool {
    let (exit, reason) = match status {
        ExitStatus::Code(code) => (
            v1::exit_status::Status::Code(code),
            format!("workload exited with code {code}"),
        ),
        ExitStatus::Signal { signal, .. } => (
            v1::exit_status::Status::Signal(signal),
            format!("workload was killed by signal {signal}"),
        ),
    };
    match daemon
        .zones
        .transition(id, ZoneState::Exited, reason, |r| {
            r.status_mut().exit = Some(v1::ExitStatus { status: Some(exit) });
        })
        .await
    {
        Ok(_) => true,
        Err(e) => {
            tracing::error!(zone = %id, "{e}");
            false
        }
    }
}

/// After the workload ended or the zone failed: release the VM, end the console streams,
/// and remove the zone if it asked for that.
async fn ended(daemon: &Arc<Shared>, id: Uuid, hub: &Arc<ConsoleHub>) -> Next {
    daemon.release_vm(id).await;
    let Some(record) = daemon.zones.get(id) else {
        return Next::Rest;
    };
    let status = record.status();
    hub.end(match status.exit {
        Some(exit) if record.state() == ZoneState::Exited => Ending::Exited(exit),
        _ => Ending::Gone(status.reason.clone()),
    });
    if record.spec().auto_remove {
        Next::Destroy
    } else {
        Next::Rest
    }
}

async fn failed(daemon: &Arc<Shared>, id: Uuid, reason: &str) -> Next {
    tracing::warn!(zone = %id, "zone failed: {reason}");
    daemon.fail(id, reason).await;
    daemon.release_vm(id).await;
    let auto_remove = daemon.zones.get(id).is_some_and(|r| r.spec().auto_remove);
    if auto_remove {
        Next::Destroy
    } else {
        Next::Rest
    }
}

/// Tears a zone down completely: VM, files, console, reservation, record.
async fn destroy_zone(daemon: &Arc<Shared>, id: Uuid) {
    let Some(record) = daemon.zones.get(id) else {
        return;
    };
    if record.state() != ZoneState::Destroying
        && let Err(e) = daemon
            .zones
            .transition(id, ZoneState::Destroying, "destroy requested", |_| {})
            .await
    {
        tracing::error!(zone = %id, "{e}");
        return;
    }
    if let Some(backend) = &daemon.backend
        && let Err(e) = backend.destroy(id).await
    {
        let reason = format!("destroying the VM failed: {}", chain(&e));
        tracing::error!(zone = %id, "{reason}");
        if let Err(e) = daemon
            .zones
            .transition(id, ZoneState::Failed, reason, |_| {})
            .await
        {
            tracing::error!(zone = %id, "{e}");
        }
        return;
    }
    if let Some(hub) = daemon.forget_console(id) {
        hub.end(Ending::Gone("the zone was destroyed".into()));
    }
    let dir = launch::zone_dir(&daemon.config, id);
    let removed = tokio::task::spawn_blocking({
        let dir = dir.clone();
        move || std::fs::remove_dir_all(dir)
    })
    .await
    .unwrap_or_else(|e| Err(std::io::Error::other(e)));
    if let Err(e) = removed
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::error!(zone = %id, "cannot remove {}: {e}", dir.display());
    }
    if let Err(e) = daemon
        .zones
        .transition(id, ZoneState::Destroyed, "destroyed", |_| {})
        .await
    {
        tracing::error!(zone = %id, "{e}");
    }
}
