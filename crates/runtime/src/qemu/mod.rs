//! The QEMU backend: each zone is a `qemu-system-x86_64 -M microvm` process running the guest
//! bundle, detached from spored (own session, pidfile, QMP socket), so zones survive a spored
//! restart and are re-adopted from their zone directories.
//!
//! Per zone, under `<zones root>/<zone id>/`: `console.sock` and `idm.sock` (spored listens,
//! QEMU connects), `qmp.sock` (QEMU listens), `qemu.pid`, `qemu.log` (QEMU's stderr).

mod accel;
mod args;
mod channel;
mod process;
mod qmp;
mod sys;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::watch;
use uuid::Uuid;

pub use accel::{Accel, AccelChoice, AccelDecision, KvmProbe};
pub use args::ZoneFiles;

use crate::boot_files::BootFiles;
use crate::probe::BackendKind;
use crate::{
    Backend, BoxError, ByteStream, LaunchSpec, Resources, Result, RuntimeError, StopReason, VmInfo,
    VmLimits, VmStop,
};
use args::MachineOptions;
use channel::Channel;
use process::QemuProcess;
use qmp::Monitor;

/// The smallest zone the guest bundle boots in under microvm (the Debian kernel and the
/// uncompressed initrd).
pub const MIN_MEMORY_MIB: u64 = 64;
/// microvm's vCPU limit is QEMU's x86 limit; more than the host has only slows the zone.
const MAX_VCPUS: u32 = 64;

/// How the backend runs QEMU.
#[derive(Debug, Clone)]
pub struct QemuConfig {
    /// `qemu-system-x86_64`, or a path to it.
    pub binary: String,
    /// `<state>/zones`: one directory per zone id (re-adoption scans it).
    pub zones_root: PathBuf,
    /// Where kernels extracted from bzImages are kept (`<sha256>.elf`), and the KVM probe's
    /// cached verdict.
    pub kernel_cache: PathBuf,
    /// The guest bundle's kernel: the KVM probe boots it.
    pub guest_kernel: Option<PathBuf>,
    pub accel: AccelChoice,
    /// TCG translation cache bound in MiB (`None`: QEMU's default of 1 GiB).
    pub tcg_tb_size_mib: Option<u32>,
    /// How long QEMU may take to connect its console and IDM sockets.
    pub connect_timeout: Duration,
    /// How long `destroy` waits after QMP `quit` before SIGKILL.
    pub stop_timeout: Duration,
    /// How long the KVM probe's boot of the guest kernel may take.
    pub kvm_probe_timeout: Duration,
}

impl QemuConfig {
    /// Defaults, with the kernel cache beside the zones root (`<state>/kernels`).
    pub fn new(zones_root: impl Into<PathBuf>) -> QemuConfig {
        let zones_root: PathBuf = zones_root.into();
        QemuConfig {
            binary: "qemu-system-x86_64".into(),
            kernel_cache: crate::boot_files::default_cache_dir(&zones_root),
            zones_root,
            guest_kernel: None,
            accel: AccelChoice::Auto,
            tcg_tb_size_mib: Some(64),
            connect_timeout: Duration::from_secs(30),
            stop_timeout: Duration::from_secs(5),
            kvm_probe_timeout: Duration::from_secs(15),
        }
    }
}

/// One zone's QEMU as the backend holds it.
#[derive(Debug)]
struct Vm {
    process: Arc<QemuProcess>,
    files: ZoneFiles,
    console: Channel,
    idm: Channel,
    monitor: tokio::sync::Mutex<Monitor>,
    /// Becomes `Some(run state)` when QEMU stopped the guest for good.
    dead: watch::Receiver<Option<String>>,
    /// QEMU's exit status when it is our child (a re-adopted QEMU is init's child).
    exit_status: Option<watch::Receiver<Option<std::process::ExitStatus>>>,
}

/// The QEMU backend.
#[derive(Debug)]
pub struct QemuBackend {
    config: QemuConfig,
    accel: AccelDecision,
    machine: MachineOptions,
    host_memory_mib: u64,
    boot_files: Arc<BootFiles>,
    vms: Mutex<HashMap<Uuid, Arc<Vm>>>,
}

impl QemuBackend {
    /// Checks that QEMU runs and picks the accelerator (blocking: the KVM probe boots the guest
    /// kernel, once per kernel and QEMU version).
    pub fn new(config: QemuConfig) -> Result<QemuBackend> {
        let probe = crate::HostProbe {
            qemu_binary: config.binary.clone(),
            ..crate::HostProbe::default()
        }
        .probe_qemu();
        if !probe.usable {
            return Err(RuntimeError::Unavailable {
                kind: BackendKind::Qemu,
                detail: probe.detail,
            });
        }
        std::fs::create_dir_all(&config.zones_root).map_err(|e| {
            RuntimeError::io(format!("cannot create {}", config.zones_root.display()), e)
        })?;
        let probe = KvmProbe {
            qemu: config.binary.clone(),
            qemu_version: probe.detail,
            kernel: config.guest_kernel.clone(),
            dir: config.kernel_cache.clone(),
            timeout: config.kvm_probe_timeout,
        };
        let accel =
            accel::decide(config.accel, &probe).map_err(|detail| RuntimeError::Unavailable {
                kind: BackendKind::Qemu,
                detail,
            })?;
        tracing::info!(
            accel = accel.accel.as_str(),
            "QEMU backend: {}",
            accel.reason
        );
        let machine = MachineOptions {
            accel: accel.accel,
            tcg_tb_size_mib: config.tcg_tb_size_mib,
            tsc_khz: host_tsc_khz(),
        };
        Ok(QemuBackend {
            accel,
            machine,
            host_memory_mib: host_memory_mib().unwrap_or(u64::MAX),
            boot_files: Arc::new(BootFiles::new(config.kernel_cache.clone())),
            config,
            vms: Mutex::new(HashMap::new()),
        })
    }

    /// The accelerator in use and why.
    pub fn accel(&self) -> &AccelDecision {
        &self.accel
    }

    fn zone_dir(&self, zone: Uuid) -> PathBuf {
        self.config.zones_root.join(zone.to_string())
    }

    fn check(&self, spec: &LaunchSpec) -> Result<()> {
        let invalid = |detail: String| RuntimeError::InvalidSpec {
            zone: spec.zone_id,
            detail,
        };
        if spec.memory_mib < MIN_MEMORY_MIB {
            return Err(invalid(format!(
                "{} MiB of memory is below the {MIN_MEMORY_MIB} MiB a zone needs",
                spec.memory_mib
            )));
        }
        if spec.memory_mib > self.host_memory_mib {
            return Err(invalid(format!(
                "{} MiB of memory is more than this host has ({} MiB)",
                spec.memory_mib, self.host_memory_mib
            )));
        }
        if spec.vcpus == 0 || spec.vcpus > MAX_VCPUS {
            return Err(invalid(format!(
                "{} vCPUs: a QEMU zone has 1 to {MAX_VCPUS}",
                spec.vcpus
            )));
        }
        if spec.nic.is_some() {
            return Err(invalid(
                "the QEMU backend has no zone networking yet (it arrives with sporenet): create the zone with networking off".into(),
            ));
        }
        spec.check_files()?;
        ZoneFiles::new(&spec.zone_dir)
            .check_socket_paths()
            .map_err(invalid)
    }

    /// The zone's VM: known already, or re-adopted from its zone directory.
    fn vm(&self, zone: Uuid) -> Result<Arc<Vm>> {
        if let Some(vm) = crate::sync::lock(&self.vms).get(&zone) {
            return Ok(vm.clone());
        }
        let files = ZoneFiles::new(&self.zone_dir(zone));
        let pid = process::read_pidfile(&files.pidfile)
            .map_err(|e| RuntimeError::io(format!("cannot read {}", files.pidfile.display()), e))?
            .ok_or(RuntimeError::NoSuchZone(zone))?;
        let process =
            QemuProcess::adopt(pid, &marker(zone)).ok_or(RuntimeError::NoSuchZone(zone))?;
        let vm = Arc::new(Vm::new(Arc::new(process), files, None, None, None));
        tracing::info!(zone = %zone, pid, "re-adopted a running QEMU");
        Ok(crate::sync::lock(&self.vms)
            .entry(zone)
            .or_insert(vm)
            .clone())
    }

    /// The kernel file QEMU boots. Under TCG, an ELF extracted from a bzImage: the guest would
    /// spend ~3 s decompressing itself. Under KVM the bzImage as given: decompression takes a
    /// fraction of a second there, and QEMU keeps a private copy of an ELF's segments (about
    /// 36 MiB more anonymous memory per zone, measured with the Debian kernel).
    async fn kernel_to_boot(&self, spec: &LaunchSpec) -> Result<PathBuf> {
        if self.machine.accel == Accel::Kvm {
            return Ok(spec.kernel.clone());
        }
        let files = self.boot_files.clone();
        let source = spec.kernel.clone();
        let start = |source: BoxError| RuntimeError::Start {
            zone: spec.zone_id,
            step: "preparing the kernel".into(),
            source,
        };
        tokio::task::spawn_blocking(move || files.kernel_elf(&source))
            .await
            .map_err(|e| start(e.into()))?
            .map_err(|e| start(e.into()))
    }

    /// Starts QEMU and waits for both guest channels to connect.
    async fn launch(&self, spec: &LaunchSpec, files: &ZoneFiles) -> Result<Vm> {
        let launch_err = |detail: String| RuntimeError::Launch {
            zone: spec.zone_id,
            detail,
        };
        let console = Channel::bind(&files.console).map_err(|e| {
            RuntimeError::io(format!("cannot listen on {}", files.console.display()), e)
        })?;
        let idm = Channel::bind(&files.idm).map_err(|e| {
            RuntimeError::io(format!("cannot listen on {}", files.idm.display()), e)
        })?;
        let log = std::fs::File::create(&files.log)
            .map_err(|e| RuntimeError::io(format!("cannot create {}", files.log.display()), e))?;
        let log_err = log
            .try_clone()
            .map_err(|e| RuntimeError::io("cannot duplicate the QEMU log handle", e))?;
        let mut command = std::process::Command::new(&self.config.binary);
        command
            .args(args::build(spec, files, &self.machine))
            .stdin(std::process::Stdio::null())
            .stdout(log)
            .stderr(log_err);
        sys::new_session(&mut command);
        let mut command = tokio::process::Command::from(command);
        // QEMU must outlive spored: never kill it when the handle drops.
        command.kill_on_drop(false);
        let mut child = command
            .spawn()
            .map_err(|e| launch_err(format!("cannot run {}: {e}", self.config.binary)))?;
        let pid = child.id().map(|p| p as i32);
        let Some(process) = pid.and_then(QemuProcess::child) else {
            let _ = child.kill().await;
            return Err(launch_err(format!(
                "QEMU exited at once: {}",
                log_tail(&files.log)
            )));
        };
        let process = Arc::new(process);
        let timeout = self.config.connect_timeout;
        let connected = async {
            console.accept_first(timeout).await?;
            idm.accept_first(timeout).await
        };
        tokio::select! {
            result = connected => {
                if let Err(e) = result {
                    process.kill();
                    let _ = child.wait().await;
                    return Err(launch_err(format!("{e}; QEMU log: {}", log_tail(&files.log))));
                }
            }
            status = child.wait() => {
                return Err(launch_err(format!(
                    "QEMU exited ({}) before connecting its consoles: {}",
                    status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string()),
                    log_tail(&files.log)
                )));
            }
        }
        // Reap our child and keep its status for the stop reason.
        let (status_tx, status_rx) = watch::channel(None);
        tokio::spawn(async move {
            if let Ok(status) = child.wait().await {
                status_tx.send_replace(Some(status));
            }
        });
        Ok(Vm::new(
            process,
            files.clone(),
            Some(console),
            Some(idm),
            Some(status_rx),
        ))
    }
}

impl Vm {
    fn new(
        process: Arc<QemuProcess>,
        files: ZoneFiles,
        console: Option<Channel>,
        idm: Option<Channel>,
        exit_status: Option<watch::Receiver<Option<std::process::ExitStatus>>>,
    ) -> Vm {
        let monitor = Monitor::spawn(files.qmp.clone(), process.clone());
        Vm {
            dead: monitor.dead(),
            console: console.unwrap_or_else(|| Channel::unbound(&files.console)),
            idm: idm.unwrap_or_else(|| Channel::unbound(&files.idm)),
            monitor: tokio::sync::Mutex::new(monitor),
            process,
            files,
            exit_status,
        }
    }

    fn info(&self, zone: Uuid) -> VmInfo {
        VmInfo {
            zone_id: zone,
            handle: format!("qemu pid {}", self.process.pid()),
            running: !self.process.has_exited(),
        }
    }

    /// Why QEMU ended, once it has.
    async fn stop_reason(&self) -> VmStop {
        let cause = self
            .monitor
            .lock()
            .await
            .shutdown_cause(Duration::from_secs(1))
            .await;
        let status = self.exit_status.as_ref().and_then(|s| *s.borrow());
        stop_reason(cause.as_deref(), status, &self.files.log)
    }
}

/// Maps QEMU's SHUTDOWN reason (and exit status) to why the zone's VM stopped.
fn stop_reason(
    cause: Option<&str>,
    status: Option<std::process::ExitStatus>,
    log: &Path,
) -> VmStop {
    use std::os::unix::process::ExitStatusExt;
    match cause {
        Some("guest-shutdown") => VmStop {
            reason: StopReason::Poweroff,
            detail: "the guest powered off".into(),
        },
        Some(reason @ ("guest-reset" | "guest-panic")) => VmStop {
            reason: StopReason::Crash,
            detail: format!(
                "the guest kernel stopped ({reason}; a kernel panic reboots, which ends the VM): see the zone's console log"
            ),
        },
        Some(reason) => VmStop {
            reason: StopReason::Killed,
            detail: format!("QEMU was stopped from the host ({reason})"),
        },
        None => {
            let how = match status {
                Some(s) if s.signal().is_some() => {
                    format!("was killed by signal {}", s.signal().unwrap_or(0))
                }
                Some(s) => format!("exited ({s})"),
                None => "ended".to_string(),
            };
            VmStop {
                reason: if status.and_then(|s| s.signal()).is_some() {
                    StopReason::Killed
                } else {
                    StopReason::Crash
                },
                detail: format!("QEMU {how} without a guest shutdown: {}", log_tail(log)),
            }
        }
    }
}

#[async_trait]
impl Backend for QemuBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Qemu
    }

    fn limits(&self) -> VmLimits {
        VmLimits {
            min_memory_mib: MIN_MEMORY_MIB,
            max_vcpus: MAX_VCPUS,
        }
    }

    async fn create(&self, spec: &LaunchSpec) -> Result<VmInfo> {
        self.check(spec)?;
        if self.vm(spec.zone_id).is_ok() {
            return Err(RuntimeError::Launch {
                zone: spec.zone_id,
                detail: "the zone already has a running QEMU".into(),
            });
        }
        let files = ZoneFiles::new(&spec.zone_dir);
        let started = Instant::now();
        let kernel = self.kernel_to_boot(spec).await?;
        let spec = &LaunchSpec {
            kernel,
            ..spec.clone()
        };
        match self.launch(spec, &files).await {
            Ok(vm) => {
                let vm = Arc::new(vm);
                tracing::info!(
                    zone = %spec.zone_id,
                    pid = vm.process.pid(),
                    ms = started.elapsed().as_millis() as u64,
                    "QEMU started"
                );
                let info = vm.info(spec.zone_id);
                crate::sync::lock(&self.vms).insert(spec.zone_id, vm);
                Ok(info)
            }
            Err(e) => {
                remove_files(&files);
                Err(e)
            }
        }
    }

    async fn destroy(&self, zone_id: Uuid) -> Result<()> {
        let files = ZoneFiles::new(&self.zone_dir(zone_id));
        let vm = match self.vm(zone_id) {
            Ok(vm) => Some(vm),
            Err(RuntimeError::NoSuchZone(_)) => None,
            Err(e) => return Err(e),
        };
        if let Some(vm) = &vm {
            let timeout = self.config.stop_timeout;
            if !vm.process.has_exited() {
                let quit = vm.monitor.lock().await.quit(timeout).await;
                let exited = match quit {
                    Ok(()) => tokio::time::timeout(timeout, vm.process.exited())
                        .await
                        .is_ok(),
                    Err(e) => {
                        tracing::warn!(zone = %zone_id, "QMP quit failed ({e}); killing QEMU");
                        false
                    }
                };
                if !exited {
                    vm.process.kill();
                    if tokio::time::timeout(timeout, vm.process.exited())
                        .await
                        .is_err()
                    {
                        return Err(RuntimeError::Destroy {
                            zone: zone_id,
                            detail: format!(
                                "QEMU pid {} survived SIGKILL for {} s",
                                vm.process.pid(),
                                timeout.as_secs()
                            ),
                        });
                    }
                }
            }
        }
        crate::sync::lock(&self.vms).remove(&zone_id);
        remove_files(&files);
        Ok(())
    }

    async fn list(&self) -> Result<Vec<VmInfo>> {
        let root = &self.config.zones_root;
        let entries = match std::fs::read_dir(root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(RuntimeError::io(
                    format!("cannot list {}", root.display()),
                    e,
                ));
            }
        };
        let mut found = Vec::new();
        for entry in entries.flatten() {
            let Some(zone) = entry
                .file_name()
                .to_str()
                .and_then(|n| Uuid::parse_str(n).ok())
            else {
                continue;
            };
            match self.vm(zone) {
                Ok(vm) => found.push(vm.info(zone)),
                Err(RuntimeError::NoSuchZone(_)) => {}
                Err(e) => tracing::warn!(zone = %zone, "{e}"),
            }
        }
        found.sort_by_key(|d| d.zone_id);
        Ok(found)
    }

    async fn open_console(&self, zone_id: Uuid) -> Result<Box<dyn ByteStream>> {
        let vm = self.vm(zone_id)?;
        let stream = vm
            .console
            .open(self.config.connect_timeout, &vm.process)
            .await
            .map_err(|e| RuntimeError::io(format!("console of zone {zone_id}"), e))?;
        Ok(Box::new(stream))
    }

    async fn open_idm(&self, zone_id: Uuid) -> Result<Box<dyn ByteStream>> {
        let vm = self.vm(zone_id)?;
        let stream = vm
            .idm
            .open(self.config.connect_timeout, &vm.process)
            .await
            .map_err(|e| RuntimeError::io(format!("IDM channel of zone {zone_id}"), e))?;
        Ok(Box::new(stream))
    }

    async fn wait_stopped(&self, zone_id: Uuid) -> Result<VmStop> {
        let vm = self.vm(zone_id)?;
        let mut dead = vm.dead.clone();
        let dead = async move {
            let state = dead.wait_for(Option::is_some).await.map(|s| s.clone());
            match state {
                Ok(Some(state)) => state,
                // The monitor ended: only QEMU's exit is left to wait for.
                _ => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = vm.process.exited() => {}
            state = dead => {
                // QEMU keeps running (and, after a KVM emulation failure, spinning) with a
                // guest that can never continue: end it, so the zone fails now, not never.
                tracing::warn!(zone = %zone_id, pid = vm.process.pid(), "QEMU stopped the guest ({state}); killing it");
                vm.process.kill();
                vm.process.exited().await;
                return Ok(VmStop {
                    reason: StopReason::Crash,
                    detail: format!(
                        "QEMU stopped the guest for good ({state}): {}",
                        log_error(&vm.files.log)
                    ),
                });
            }
        }
        Ok(vm.stop_reason().await)
    }

    async fn update_resources(&self, _zone_id: Uuid, _resources: Resources) -> Result<()> {
        Err(RuntimeError::Unsupported {
            kind: BackendKind::Qemu,
            what: "change a running zone's resources",
            detail:
                "the microvm machine has neither a memory balloon nor CPU hotplug in this backend"
                    .into(),
        })
    }
}

/// The `-name` prefix that marks a QEMU process as this zone's.
fn marker(zone: Uuid) -> String {
    format!("spore-{zone}")
}

fn remove_files(files: &ZoneFiles) {
    for path in files.all() {
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!("cannot remove {}: {e}", path.display()),
        }
    }
}

/// The last lines of QEMU's log, for error messages.
fn log_tail(log: &Path) -> String {
    match std::fs::read(log) {
        Ok(bytes) if !bytes.is_empty() => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
            let tail = lines[lines.len().saturating_sub(5)..].join(" | ");
            format!("{} says: {tail}", log.display())
        }
        Ok(_) => format!("{} is empty", log.display()),
        Err(e) => format!("cannot read {}: {e}", log.display()),
    }
}

/// QEMU's first error line in its log (after a KVM internal error it prints a register dump,
/// so the last lines say little), else the log's tail.
fn log_error(log: &Path) -> String {
    let first = std::fs::read(log).ok().and_then(|bytes| {
        String::from_utf8_lossy(&bytes)
            .lines()
            .find(|l| l.contains("error") || l.contains("failure"))
            .map(|l| format!("{} says: {}", log.display(), l.trim()))
    });
    first.unwrap_or_else(|| log_tail(log))
}

fn host_memory_mib() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kib / 1024)
}

/// The host's TSC rate from the kernel's calibration, if it says (`tsc: Refined TSC ...` is not
/// readable without root-only dmesg on all hosts, so this reads cpuinfo's MHz for a constant
/// TSC, which is what TCG guests see).
fn host_tsc_khz() -> Option<u64> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    if !cpuinfo.contains(" constant_tsc") {
        return None;
    }
    let mhz: f64 = cpuinfo
        .lines()
        .find(|l| l.starts_with("cpu MHz"))?
        .split(':')
        .nth(1)?
        .trim()
        .parse()
        .ok()?;
    Some((mhz * 1000.0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn stop_reasons() {
        let log = Path::new("/nonexistent/qemu.log");
        assert_eq!(
            stop_reason(Some("guest-shutdown"), None, log).reason,
            StopReason::Poweroff
        );
        assert_eq!(
            stop_reason(Some("guest-reset"), None, log).reason,
            StopReason::Crash
        );
        assert_eq!(
            stop_reason(Some("host-qmp-quit"), None, log).reason,
            StopReason::Killed
        );
        let killed = stop_reason(None, Some(std::process::ExitStatus::from_raw(9)), log);
        assert_eq!(killed.reason, StopReason::Killed);
        assert!(killed.detail.contains("signal 9"), "{}", killed.detail);
        let odd = stop_reason(None, Some(std::process::ExitStatus::from_raw(1 << 8)), log);
        assert_eq!(odd.reason, StopReason::Crash);
        assert!(odd.detail.contains("cannot read"), "{}", odd.detail);
    }
}
