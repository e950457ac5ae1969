//! The boot sequence, from the kernel handing over to the workload running, and the way out:
//! report, kill what is left, sync, unmount, power off.
//!
//! Failure rules (the host relies on them):
//! - the zone could not be set up (disks, mounts, network, IDM): IDM `Error{fatal}`, no Exit;
//! - the workload could not be started (no command, unknown user, program missing or not
//!   executable): console message, IDM `Error`, then `Exit{code 126|127}` as docker reports;
//! - otherwise `Started`, and `Exit{code|signal}` when the workload ends.
//!
//! After an Exit, init powers off only once the host has acknowledged it (`ExitAck`) or asked
//! for a shutdown; until then it re-sends the Exit every second (see `Supervisor::report_exit`).

use std::fs::File;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use spore_idm::proto::{self, idm_packet::Body};
use spore_idm::{ExitStatus, IdmPacket, LaunchConfig};

use crate::console::{self, alert, info};
use crate::idm_port::{self, IdmPort};
use crate::netlink::Netlink;
use crate::spawn::{self, SpawnError, Stdio};
use crate::spec::{self, SpecError, UserDb};
use crate::supervisor::Supervisor;
use crate::{disks, etc, modules, mounts, net, sys};

const CONSOLE_TIMEOUT: Duration = Duration::from_secs(3);
const IDM_TIMEOUT: Duration = Duration::from_secs(5);
const DISK_TIMEOUT: Duration = Duration::from_secs(10);
const NIC_TIMEOUT: Duration = Duration::from_secs(10);
/// Time given to deliver the last IDM messages and console output before power-off (after the
/// host acknowledged the Exit, which has no time limit).
const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest /etc/passwd or /etc/group read from the image.
const MAX_USER_DB: u64 = 4 * 1024 * 1024;

#[derive(Debug, Default)]
struct Times {
    init_start: u64,
    modules_start: u64,
    modules_loaded: u64,
    rootfs_ready: u64,
}

pub struct Boot {
    times: Times,
    idm: Option<IdmPort>,
    console: Option<File>,
}

impl Boot {
    pub fn new(init_start: u64) -> Self {
        Self {
            times: Times {
                init_start,
                ..Times::default()
            },
            idm: None,
            console: None,
        }
    }

    /// Boots, runs the workload, powers off. Never returns.
    pub fn run_to_power_off(mut self) -> ! {
        if let Err(e) = self.run() {
            alert!("error: {e:#}");
            if let Some(idm) = self.idm.as_mut() {
                idm.send(&IdmPacket::event(Body::Error(proto::Error {
                    message: format!("{e:#}"),
                    fatal: true,
                })));
            }
            let _ = sys::kill(-1, libc::SIGKILL);
        }
        self.power_off()
    }

    fn power_off(mut self) -> ! {
        let deadline = Instant::now() + FLUSH_TIMEOUT;
        if let Some(idm) = self.idm.as_mut() {
            idm.drain(FLUSH_TIMEOUT);
        }
        if let Some(console) = &self.console {
            sys::drain_tty(console.as_fd(), deadline);
        }
        mounts::unmount_all();
        sys::sync();
        let err = sys::power_off();
        alert!("power off failed: {err}; halting here");
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }

    /// In verbose mode, says how far into init a boot step finished: the Started times only
    /// cover the big phases, this shows where the rest goes.
    fn mark(&self, step: &str) {
        info!(
            "+{} us: {step}",
            sys::boottime_ns().saturating_sub(self.times.init_start) / 1000
        );
    }

    fn run(&mut self) -> Result<()> {
        mounts::early().context("cannot mount /dev, /proc and /sys")?;
        console::use_kmsg();
        ensure_std_fds();
        // Blocked from here on, so no SIGCHLD or SIGTERM is lost before the main loop.
        let signals = sys::SignalFd::new().context("cannot create the signalfd")?;
        sys::ignore_job_control_signals();

        self.times.modules_start = sys::boottime_ns();
        let loaded = modules::load_all();
        self.times.modules_loaded = sys::boottime_ns();

        match idm_port::open_console_device(spawn::CONSOLE, CONSOLE_TIMEOUT) {
            Ok(file) => {
                // Blocking writes for init's own messages; the workload gets its own fd.
                let _ = sys::set_blocking(file.as_fd());
                if let Ok(copy) = file.try_clone() {
                    console::use_console(copy);
                }
                self.console = Some(file);
            }
            Err(e) => alert!("no console: {e:#}"),
        }
        self.idm = Some(IdmPort::open(IDM_TIMEOUT)?);
        let consoles_open = sys::boottime_ns();

        let (cfg, root_device) = disks::find(DISK_TIMEOUT)?;
        console::set_verbose(cfg.verbose);
        // Verbosity is only known now: report the earlier steps late.
        info!(
            "+{} us: consoles open",
            consoles_open.saturating_sub(self.times.init_start) / 1000
        );
        self.mark("launch config read");
        info!(
            "{loaded} modules loaded in {} us",
            (self.times.modules_loaded - self.times.modules_start) / 1000
        );
        mounts::root(&root_device, cfg.root.format, cfg.overlay_size_mib)?;
        self.mark("root image and overlay mounted");
        mounts::switch_root()?;
        self.mark("switched root");
        mounts::container_mounts()?;
        self.times.rootfs_ready = sys::boottime_ns();
        self.mark("container mounts");

        etc::apply(&cfg)?;
        self.mark("hostname and /etc files");
        network(&cfg)?;
        self.mark("network");

        let users = read_users();
        let spec = match spec::resolve_workload(&cfg, &users) {
            Ok(spec) => spec,
            Err(e) => {
                let exit_code = if e == SpecError::NoCommand { 127 } else { 126 };
                let e = SpawnError {
                    exit_code,
                    message: e.to_string(),
                };
                return self.not_started(e, signals, None, users, cfg.rlimits.clone());
            }
        };
        if let Err(e) = spawn::ensure_working_dir(&spec.cwd) {
            let e = SpawnError {
                exit_code: 126,
                message: format!("cannot create working directory {:?}: {e}", spec.cwd),
            };
            return self.not_started(e, signals, Some(spec), users, cfg.rlimits.clone());
        }
        if let Some(console) = &self.console {
            // With a tty the workload gets an interactive terminal; without one the console
            // is a plain byte pipe (no echo, no CR/LF rewriting), like docker's log stream.
            let mode = if spec.tty {
                sys::make_sane(console.as_fd())
            } else {
                sys::make_raw(console.as_fd())
            };
            if let Err(e) = mode {
                alert!("cannot set the console mode: {e}");
            }
            if spec.tty {
                sys::own_terminal(console.as_fd())
                    .context("cannot make hvc0 init's controlling terminal")?;
            }
        }
        info!(
            "starting {:?} as uid {} in {}",
            spec.argv, spec.user.uid, spec.cwd
        );
        let pid = match spawn::spawn(&spec, &cfg.rlimits, &Stdio::Console) {
            Ok(pid) => pid,
            Err(e) => return self.not_started(e, signals, Some(spec), users, cfg.rlimits.clone()),
        };
        let exec_ns = sys::boottime_ns();
        let Some(mut idm) = self.idm.take() else {
            anyhow::bail!("IDM port vanished");
        };
        idm.send(&IdmPacket::event(Body::Started(proto::Started {
            init_start_ns: self.times.init_start,
            modules_start_ns: self.times.modules_start,
            modules_loaded_ns: self.times.modules_loaded,
            rootfs_ready_ns: self.times.rootfs_ready,
            workload_exec_ns: exec_ns,
            workload_pid: pid as u32,
            kernel_release: sys::kernel_release(),
        })));
        info!(
            "workload pid {pid} started {} us after init (modules {} us)",
            (exec_ns - self.times.init_start) / 1000,
            (self.times.modules_loaded - self.times.modules_start) / 1000
        );

        let mut supervisor = Supervisor::new(idm, signals, pid, spec, users, cfg.rlimits.clone());
        let status = supervisor.run();
        match status {
            Ok(status) => supervisor.report_exit(status, FLUSH_TIMEOUT),
            Err(_) => supervisor.wind_down(FLUSH_TIMEOUT),
        }
        self.idm = Some(supervisor.idm);
        status.map(|_| ())
    }

    /// The workload could not be started: say why, report docker's exit code (and wait for
    /// the host to acknowledge it, as after a workload that ran).
    fn not_started(
        &mut self,
        e: SpawnError,
        signals: sys::SignalFd,
        base: Option<spec::ProcessSpec>,
        users: UserDb,
        rlimits: Vec<spore_idm::launch::Rlimit>,
    ) -> Result<()> {
        alert!("{}", e.message);
        let Some(mut idm) = self.idm.take() else {
            return Ok(());
        };
        idm.send(&IdmPacket::event(Body::Error(proto::Error {
            message: e.message.clone(),
            fatal: false,
        })));
        let mut supervisor = Supervisor::not_started(idm, signals, base, users, rlimits);
        supervisor.report_exit(ExitStatus::Code(e.exit_code), FLUSH_TIMEOUT);
        self.idm = Some(supervisor.idm);
        Ok(())
    }
}

/// Makes sure fds 0-2 are open (the kernel leaves them closed when /dev/console was missing),
/// so no later open lands on them by accident.
fn ensure_std_fds() {
    use std::os::fd::IntoRawFd;
    loop {
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")
        {
            Ok(f) => {
                let fd = f.into_raw_fd();
                if fd > 2 {
                    sys::child::close(fd);
                    return;
                }
            }
            Err(_) => return,
        }
    }
}

fn network(cfg: &LaunchConfig) -> Result<()> {
    let mut nl = Netlink::open().context("cannot open a netlink socket")?;
    if let Err(e) = net::loopback_up(&mut nl) {
        alert!("{e:#}");
    }
    if let Some(net_cfg) = &cfg.network {
        net::configure(&mut nl, net_cfg, NIC_TIMEOUT).context("network setup failed")?;
    }
    Ok(())
}

fn read_bounded(path: &str) -> String {
    use std::io::Read;
    let mut text = String::new();
    if let Ok(f) = File::open(path) {
        let mut bytes = Vec::new();
        let _ = f.take(MAX_USER_DB).read_to_end(&mut bytes);
        text = String::from_utf8_lossy(&bytes).into_owned();
    }
    text
}

fn read_users() -> UserDb {
    UserDb::parse(&read_bounded("/etc/passwd"), &read_bounded("/etc/group"))
}
