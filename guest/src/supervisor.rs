//! PID 1's main loop once the workload runs: reap every child (orphans included), forward
//! termination signals to the workload, answer IDM requests, drive exec sessions, enforce the
//! shutdown grace period. One poll(2) over a signalfd, the IDM port and the sessions' fds.
//!
//! After the workload ended the same loop reports its Exit and waits for the host's ExitAck,
//! sending the Exit again every second: a host that was not reading (spored restarting) must
//! still learn the status, so the zone does not power off before it has.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use spore_idm::launch::Rlimit;
use spore_idm::proto::{self, idm_packet::Body};
use spore_idm::{ExitStatus, IdmError, IdmPacket};

use crate::console::{alert, info};
use crate::exec::{self, Sessions, Slot};
use crate::idm_port::IdmPort;
use crate::metrics;
use crate::spec::{ProcessSpec, UserDb};
use crate::sys::{self, pid_t};

/// The signals PID 1 passes on to the workload.
const FORWARDED: [libc::c_int; 4] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGQUIT];

/// How often an Exit the host has not acknowledged is sent again.
const EXIT_RESEND: Duration = Duration::from_secs(1);
/// How often a port without a host is tried again.
const IDM_RETRY: Duration = Duration::from_millis(100);
/// After this long without an ExitAck the console says what init is waiting for.
const EXIT_ACK_NOTICE: Duration = Duration::from_secs(5);

pub struct Supervisor {
    pub idm: IdmPort,
    signals: sys::SignalFd,
    /// None when the workload could not be started.
    workload: Option<pid_t>,
    status: Option<ExitStatus>,
    kill_at: Option<Instant>,
    sessions: Sessions,
    /// What exec sessions inherit; None when the workload's spec could not be resolved.
    base: Option<ProcessSpec>,
    users: UserDb,
    rlimits: Vec<Rlimit>,
    orphans_reaped: u64,
    garbage_reports: u64,
    exit_sent: bool,
    exit_acked: bool,
    /// The host asked for a shutdown: it is destroying the zone and needs no ExitAck wait.
    shutdown_requested: bool,
}

enum Entry {
    Signals,
    Idm,
    Session(Slot),
}

impl Supervisor {
    pub fn new(
        idm: IdmPort,
        signals: sys::SignalFd,
        workload: pid_t,
        base: ProcessSpec,
        users: UserDb,
        rlimits: Vec<Rlimit>,
    ) -> Self {
        Self::with(idm, signals, Some(workload), Some(base), users, rlimits)
    }

    /// For a workload that could not be started: there is nothing to supervise, but init still
    /// reports its Exit (126/127) and serves IDM until the host acknowledges it.
    pub fn not_started(
        idm: IdmPort,
        signals: sys::SignalFd,
        base: Option<ProcessSpec>,
        users: UserDb,
        rlimits: Vec<Rlimit>,
    ) -> Self {
        Self::with(idm, signals, None, base, users, rlimits)
    }

    fn with(
        idm: IdmPort,
        signals: sys::SignalFd,
        workload: Option<pid_t>,
        base: Option<ProcessSpec>,
        users: UserDb,
        rlimits: Vec<Rlimit>,
    ) -> Self {
        Self {
            idm,
            signals,
            workload,
            status: None,
            kill_at: None,
            sessions: Sessions::default(),
            base,
            users,
            rlimits,
            orphans_reaped: 0,
            garbage_reports: 0,
            exit_sent: false,
            exit_acked: false,
            shutdown_requested: false,
        }
    }

    /// Runs until the workload has exited; returns how it ended.
    pub fn run(&mut self) -> Result<ExitStatus> {
        loop {
            if let Some(status) = self.status {
                info!(
                    "workload exited: {status:?} ({} orphans reaped)",
                    self.orphans_reaped
                );
                return Ok(status);
            }
            self.turn(None)?;
        }
    }

    /// The way out once the workload ended: sends its Exit, kills everything else, then keeps
    /// serving IDM until the host acknowledges the Exit, re-sending it every second. There is no
    /// time limit: the host may be restarting, and powering off first would lose the status.
    /// A Shutdown (the host is destroying the zone) ends the wait without an ack.
    pub fn report_exit(&mut self, status: ExitStatus, flush: Duration) {
        let exit = IdmPacket::event(Body::Exit(status.into()));
        self.idm.send(&exit);
        self.exit_sent = true;
        self.wind_down(flush);
        self.await_exit_ack(&exit);
        // Exec sessions started while waiting, and the last answers to the host.
        self.wind_down(flush);
    }

    fn await_exit_ack(&mut self, exit: &IdmPacket) {
        let since = Instant::now();
        let mut resend_at = since + EXIT_RESEND;
        let mut noticed = false;
        let mut errors = 0u32;
        while !self.exit_acked && !self.shutdown_requested {
            let now = Instant::now();
            if now >= resend_at {
                // While earlier bytes are still queued the host is not reading: one copy
                // waiting is enough, the queue must not grow with the wait.
                if self.idm.queued() == 0 {
                    self.idm.send(exit);
                }
                resend_at = now + EXIT_RESEND;
            }
            if !noticed && now.duration_since(since) >= EXIT_ACK_NOTICE {
                noticed = true;
                alert!(
                    "waiting for the host to acknowledge the exit status before powering off (sent again every second)"
                );
            }
            let wait = resend_at.saturating_duration_since(now);
            if let Err(e) = self.turn(Some(wait)) {
                // A broken IDM port cannot be waited out faster than the resend period.
                errors += 1;
                if errors <= 5 {
                    alert!("{e:#}");
                }
                std::thread::sleep(wait);
            }
        }
        if !self.exit_acked {
            info!("shutdown requested: powering off without the host's exit acknowledgement");
        } else if noticed {
            alert!("the host acknowledged the exit status");
        }
    }

    /// After the workload is gone: everything else is killed; keeps reaping, finishing exec
    /// sessions and flushing IDM until all is done or `timeout` passes.
    pub fn wind_down(&mut self, timeout: Duration) {
        let _ = sys::kill(-1, libc::SIGKILL);
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let no_children = self.reap();
            if no_children && self.sessions.is_empty() && self.idm.queued() == 0 {
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if let Err(e) = self.turn(Some(left.min(Duration::from_millis(20)))) {
                alert!("{e:#}");
                return;
            }
        }
    }

    /// One poll round and the handling of what it reports.
    fn turn(&mut self, max_wait: Option<Duration>) -> Result<()> {
        let mut fds = vec![sys::pollfd(self.signals.raw(), sys::POLLIN)];
        let mut entries = vec![Entry::Signals];
        let idm_gone = self.idm.host_gone();
        if !idm_gone {
            let idm_events = if self.idm.queued() > 0 {
                sys::POLLIN | sys::POLLOUT
            } else {
                sys::POLLIN
            };
            fds.push(sys::pollfd(self.idm.raw_fd(), idm_events));
            entries.push(Entry::Idm);
        }
        let mut slots = Vec::new();
        self.sessions
            .poll_fds(self.idm.queued(), &mut fds, &mut slots);
        entries.extend(slots.into_iter().map(Entry::Session));

        let now = Instant::now();
        let mut wait = max_wait;
        let mut shorten = |d: Duration| wait = Some(wait.map_or(d, |w| w.min(d)));
        if let Some(at) = self.kill_at {
            shorten(at.saturating_duration_since(now));
        }
        if let Some(linger) = self.sessions.finish(&mut self.idm) {
            shorten(linger);
        }
        if idm_gone {
            // No host on the serial port: look again shortly (see idm_port).
            shorten(IDM_RETRY);
        }
        let timeout_ms = wait.map_or(-1, |w| w.as_millis().min(60_000) as i32);
        sys::poll(&mut fds, timeout_ms).context("poll failed in the main loop")?;

        for (fd, entry) in fds.iter().zip(entries) {
            if fd.revents == 0 {
                continue;
            }
            match entry {
                Entry::Signals => self.signals_ready()?,
                Entry::Idm => {
                    if fd.revents & sys::POLLOUT != 0 {
                        self.idm.flush_some().context("IDM write failed")?;
                    }
                    if fd.revents & (sys::POLLIN | sys::POLLERR | sys::POLLHUP) != 0 {
                        self.idm.read_some().context("IDM read failed")?;
                        self.packets();
                    }
                }
                Entry::Session(slot) => self.sessions.ready(slot, fd.revents, &mut self.idm),
            }
        }
        if idm_gone {
            self.idm.read_some().context("IDM read failed")?;
            if !self.idm.host_gone() {
                self.idm.flush_some().context("IDM write failed")?;
                self.packets();
            }
        }
        if let Some(at) = self.kill_at
            && Instant::now() >= at
        {
            self.kill_at = None;
            if let (None, Some(workload)) = (self.status, self.workload) {
                alert!("grace period over: killing the workload");
                let _ = sys::kill(workload, libc::SIGKILL);
            }
        }
        Ok(())
    }

    fn signals_ready(&mut self) -> Result<()> {
        while let Some(sig) = self.signals.next().context("cannot read the signalfd")? {
            if sig == libc::SIGCHLD {
                let _ = self.reap();
            } else if FORWARDED.contains(&sig) {
                if let (None, Some(workload)) = (self.status, self.workload) {
                    info!("forwarding signal {sig} to the workload");
                    let _ = sys::kill(workload, sig);
                }
            } else {
                info!("ignoring signal {sig}");
            }
        }
        Ok(())
    }

    /// Collects every child that has ended. `true` when init has no children left.
    fn reap(&mut self) -> bool {
        loop {
            match sys::reap_one() {
                Ok(sys::Wait::Reaped(r)) => {
                    let status = sys::decode_wait_status(r.status);
                    if Some(r.pid) == self.workload && self.status.is_none() {
                        self.status = Some(status);
                    } else if !self.sessions.reaped(r.pid, status) {
                        self.orphans_reaped += 1;
                    }
                }
                Ok(sys::Wait::Running) => return false,
                Ok(sys::Wait::NoChildren) => return true,
                Err(e) => {
                    alert!("waitpid failed: {e}");
                    return false;
                }
            }
        }
    }

    fn packets(&mut self) {
        while let Some(item) = self.idm.next_packet() {
            match item {
                Ok(packet) => self.handle(packet),
                Err(e @ IdmError::Skipped { .. }) => {
                    // Report the first few; a babbling host must not flood the console.
                    self.garbage_reports += 1;
                    if self.garbage_reports <= 5 {
                        alert!("IDM: {e}");
                    }
                }
                Err(e) => alert!("IDM: {e}"),
            }
        }
    }

    fn reply(&mut self, request_id: u64, body: Body) {
        self.idm.send(&IdmPacket::request(request_id, body));
    }

    fn handle(&mut self, packet: IdmPacket) {
        let (request_id, stream_id) = (packet.request_id, packet.stream_id);
        let kind = packet.kind();
        let Some(body) = packet.body else {
            self.reply(
                request_id,
                Body::Error(proto::Error {
                    message: "IDM packet without a body this guest understands (is the host newer than the guest bundle?)".into(),
                    fatal: false,
                }),
            );
            return;
        };
        match body {
            Body::Ping(ping) => self.reply(
                request_id,
                Body::Pong(proto::Pong {
                    nonce: ping.nonce,
                    guest_time_ns: sys::boottime_ns(),
                }),
            ),
            Body::MetricsRequest(req) => {
                let mut response = metrics::collect(req.processes);
                // Keep the answer inside one frame whatever the process count.
                while prost_len(&response) > spore_idm::MAX_FRAME_LEN - 64
                    && !response.processes.is_empty()
                {
                    let keep = response.processes.len() / 2;
                    response.processes.truncate(keep);
                    response.processes_truncated = true;
                }
                self.reply(request_id, Body::MetricsResponse(response));
            }
            Body::Shutdown(shutdown) => {
                self.shutdown_requested = true;
                let running = self.workload.filter(|_| self.status.is_none());
                let signalled = running.is_some();
                if let Some(workload) = running {
                    if shutdown.grace_period_ms == 0 {
                        let _ = sys::kill(workload, libc::SIGKILL);
                    } else {
                        let _ = sys::kill(workload, libc::SIGTERM);
                        let grace = Duration::from_millis(shutdown.grace_period_ms.into());
                        self.kill_at = Some(Instant::now() + grace);
                    }
                }
                info!("shutdown requested (grace {} ms)", shutdown.grace_period_ms);
                self.reply(
                    request_id,
                    Body::ShutdownAck(proto::ShutdownAck { signalled }),
                );
            }
            Body::ExitAck(_) if self.exit_sent => self.exit_acked = true,
            Body::ExecStart(start) => match &self.base {
                Some(base) => self.sessions.start(
                    stream_id,
                    start,
                    base,
                    &self.users,
                    &self.rlimits,
                    &mut self.idm,
                ),
                None => exec::refuse(
                    stream_id,
                    "the workload's process spec could not be resolved, so exec has nothing to inherit",
                    &mut self.idm,
                ),
            },
            Body::ExecCancel(_) if stream_id == 0 => self.sessions.cancel_all(),
            body @ (Body::ExecStdin(_)
            | Body::ExecStdinClosed(_)
            | Body::ExecResize(_)
            | Body::ExecCredit(_)
            | Body::ExecSignal(_)
            | Body::ExecCancel(_)) => {
                self.sessions.input(stream_id, body, &mut self.idm);
            }
            _ => {
                let message = format!("unexpected IDM {kind} packet from the host");
                let error = Body::Error(proto::Error {
                    message,
                    fatal: false,
                });
                let packet = if stream_id != 0 {
                    IdmPacket::stream(stream_id, error)
                } else {
                    IdmPacket::request(request_id, error)
                };
                self.idm.send(&packet);
            }
        }
    }
}

fn prost_len(m: &proto::MetricsResponse) -> usize {
    prost::Message::encoded_len(m)
}
