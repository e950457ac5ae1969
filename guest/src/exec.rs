//! Exec sessions (`zone exec`): a process started on the host's request, its stdin fed from
//! IDM, its stdout/stderr (or pseudo-terminal output) streamed back, its exit reported.
//!
//! Everything is non-blocking and driven by the supervisor's poll loop. Both directions are
//! flow-controlled per session (IDM `ExecCredit`): output is read only while the host has
//! granted credit for it (`ExecStart.output_window`) and while init's IDM queue is below its
//! high-water mark, so a slow client slows its own process down, not the channel's other
//! traffic and not init's memory; stdin is acknowledged as it reaches the process, so the host
//! never sends more than [`STDIN_WINDOW`] ahead of it.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use spore_idm::proto::{self, exec_output::Stream, idm_packet::Body};
use spore_idm::{ExitStatus, IdmPacket};

use crate::idm_port::{IdmPort, OUTBOX_HIGH_WATER};
use crate::spawn::{self, Stdio};
use crate::spec::{self, ProcessSpec, SpecError, UserDb};
use crate::sys::{self, pid_t};

/// Concurrent sessions per zone.
pub const MAX_SESSIONS: usize = 64;
/// Stdin bytes queued for a process that does not read them (a host that ignores the window).
pub const MAX_STDIN_QUEUE: usize = 4 * 1024 * 1024;
/// Stdin the host may send ahead of what reached the process (`ExecStarted.stdin_window`).
pub const STDIN_WINDOW: u32 = 256 * 1024;
/// Stdin credit is returned in batches of at least this much (or when the queue is drained).
const STDIN_CREDIT_BATCH: u64 = 16 * 1024;
/// Output credit the host can pile up (it only grants what it consumed; this bounds a bad one).
const MAX_OUTPUT_CREDIT: u64 = 64 * 1024 * 1024;
/// After the process exits, how long to wait for its output pipes to close (a background
/// child may hold them open forever).
const OUTPUT_LINGER: Duration = Duration::from_secs(1);
const READ_CHUNK: usize = 32 * 1024;

#[derive(Debug)]
struct Output {
    /// `None` once the stream reached EOF.
    file: Option<File>,
    stream: Stream,
    /// The writers are gone but data is left that there is no credit for: not polled until
    /// credit comes (poll would report the hang-up at once, every time).
    hung_up: bool,
}

#[derive(Debug)]
struct Session {
    pid: pid_t,
    stdin: Option<File>,
    stdin_queue: Vec<u8>,
    stdin_close: bool,
    /// Stdin bytes delivered (or discarded) and not yet acknowledged to the host.
    stdin_unacked: u64,
    outputs: Vec<Output>,
    pty: Option<File>,
    /// Output bytes the host still accepts; `None`: no output flow control (an older host).
    out_credit: Option<u64>,
    exit: Option<ExitStatus>,
    /// Since when the exited process's output pipes have been readable without reaching EOF
    /// (a background child holding them); `None` while there is no credit to read them.
    linger_from: Option<Instant>,
    /// The host's client is gone (ExecCancel): output is discarded.
    cancelled: bool,
}

/// What a poll entry belongs to.
#[derive(Debug, Clone, Copy)]
pub enum Slot {
    Stdin(u64),
    Output(u64, usize),
}

#[derive(Debug, Default)]
pub struct Sessions {
    sessions: BTreeMap<u64, Session>,
}

fn error(stream_id: u64, message: String) -> IdmPacket {
    IdmPacket::stream(
        stream_id,
        Body::Error(proto::Error {
            message,
            fatal: false,
        }),
    )
}

fn exited(stream_id: u64, status: ExitStatus) -> IdmPacket {
    IdmPacket::stream(stream_id, Body::ExecExit(status.into()))
}

/// Answers an ExecStart that cannot run at all with Error + ExecExit 126.
pub fn refuse(stream_id: u64, message: &str, idm: &mut IdmPort) {
    idm.send(&error(stream_id, message.to_string()));
    idm.send(&exited(stream_id, ExitStatus::Code(126)));
}

fn nonblocking(fd: OwnedFd) -> std::io::Result<File> {
    sys::set_nonblocking(fd.as_fd())?;
    Ok(File::from(fd))
}

impl Sessions {
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Handles ExecStart: answers with ExecStarted, or Error + ExecExit.
    pub fn start(
        &mut self,
        stream_id: u64,
        start: proto::ExecStart,
        base: &ProcessSpec,
        users: &UserDb,
        rlimits: &[spore_idm::launch::Rlimit],
        idm: &mut IdmPort,
    ) {
        if stream_id == 0 {
            idm.send(&IdmPacket::request(
                0,
                Body::Error(proto::Error {
                    message: "exec_start needs a nonzero stream_id".into(),
                    fatal: false,
                }),
            ));
            return;
        }
        if self.sessions.contains_key(&stream_id) {
            idm.send(&error(
                stream_id,
                format!("exec stream {stream_id} is already running"),
            ));
            return;
        }
        if self.sessions.len() >= MAX_SESSIONS {
            idm.send(&error(
                stream_id,
                format!("too many exec sessions (limit {MAX_SESSIONS})"),
            ));
            idm.send(&exited(stream_id, ExitStatus::Code(126)));
            return;
        }
        let spec = match spec::resolve_exec(
            base,
            &start.argv,
            &start.env,
            &start.working_dir,
            &start.user,
            start.tty,
            users,
        ) {
            Ok(spec) => spec,
            Err(e) => {
                let code = if e == SpecError::NoCommand { 127 } else { 126 };
                idm.send(&error(stream_id, e.to_string()));
                idm.send(&exited(stream_id, ExitStatus::Code(code)));
                return;
            }
        };
        match self.spawn(&spec, start.size.as_ref(), rlimits) {
            Ok(mut session) => {
                session.out_credit =
                    (start.output_window > 0).then_some(start.output_window.into());
                idm.send(&IdmPacket::stream(
                    stream_id,
                    Body::ExecStarted(proto::ExecStarted {
                        pid: session.pid as u32,
                        stdin_window: STDIN_WINDOW,
                        output_flow_control: true,
                    }),
                ));
                self.sessions.insert(stream_id, session);
            }
            Err(e) => {
                idm.send(&error(stream_id, e.message));
                idm.send(&exited(stream_id, ExitStatus::Code(e.exit_code)));
            }
        }
    }

    fn spawn(
        &self,
        spec: &ProcessSpec,
        size: Option<&proto::TerminalSize>,
        rlimits: &[spore_idm::launch::Rlimit],
    ) -> Result<Session, spawn::SpawnError> {
        let fail = |what: &str, e: std::io::Error| spawn::SpawnError {
            exit_code: 126,
            message: format!("cannot {what}: {e}"),
        };
        if spec.tty {
            let (master, slave) = sys::open_pty().map_err(|e| fail("open a pseudo-terminal", e))?;
            if let Some(size) = size {
                let _ = sys::set_window_size(master.as_fd(), clamp(size.rows), clamp(size.columns));
            }
            let pid = spawn::spawn(spec, rlimits, &Stdio::Pty(slave))?;
            let master = nonblocking(master).map_err(|e| fail("configure the terminal", e))?;
            let input = master
                .try_clone()
                .map_err(|e| fail("duplicate the terminal", e))?;
            let output = master
                .try_clone()
                .map_err(|e| fail("duplicate the terminal", e))?;
            return Ok(Session::new(
                pid,
                input,
                vec![Output {
                    file: Some(output),
                    stream: Stream::Stdout,
                    hung_up: false,
                }],
                Some(master),
            ));
        }
        let (in_r, in_w) = sys::pipe().map_err(|e| fail("create a pipe", e))?;
        let (out_r, out_w) = sys::pipe().map_err(|e| fail("create a pipe", e))?;
        let (err_r, err_w) = sys::pipe().map_err(|e| fail("create a pipe", e))?;
        let fds: [RawFd; 3] = [in_r.as_raw_fd(), out_w.as_raw_fd(), err_w.as_raw_fd()];
        let pid = spawn::spawn(spec, rlimits, &Stdio::Fds(fds))?;
        // The child has its copies; closing ours lets EOF arrive when it is done.
        drop((in_r, out_w, err_w));
        let wrap = |fd| nonblocking(fd).map_err(|e| fail("configure a pipe", e));
        Ok(Session::new(
            pid,
            wrap(in_w)?,
            vec![
                Output {
                    file: Some(wrap(out_r)?),
                    stream: Stream::Stdout,
                    hung_up: false,
                },
                Output {
                    file: Some(wrap(err_r)?),
                    stream: Stream::Stderr,
                    hung_up: false,
                },
            ],
            None,
        ))
    }

    /// ExecStdin / ExecStdinClosed / ExecResize / ExecCredit / ExecSignal / ExecCancel for a
    /// running session.
    pub fn input(&mut self, stream_id: u64, body: Body, idm: &mut IdmPort) {
        let Some(s) = self.sessions.get_mut(&stream_id) else {
            idm.send(&error(stream_id, format!("no exec session {stream_id}")));
            return;
        };
        match body {
            Body::ExecStdin(data) => {
                if s.stdin.is_none() || s.stdin_close {
                    // Nowhere to go: acknowledged anyway, so the host's sender is not stuck.
                    s.stdin_unacked += data.data.len() as u64;
                    s.ack_stdin(stream_id, idm, true);
                    return;
                }
                if s.stdin_queue.len() + data.data.len() > MAX_STDIN_QUEUE {
                    idm.send(&error(
                        stream_id,
                        format!("stdin queue over {MAX_STDIN_QUEUE} bytes; input dropped"),
                    ));
                    return;
                }
                s.stdin_queue.extend_from_slice(&data.data);
                s.write_stdin(stream_id, idm);
            }
            Body::ExecStdinClosed(_) => {
                s.stdin_close = true;
                s.write_stdin(stream_id, idm);
            }
            Body::ExecResize(resize) => {
                if let (Some(pty), Some(size)) = (&s.pty, resize.size) {
                    let _ =
                        sys::set_window_size(pty.as_fd(), clamp(size.rows), clamp(size.columns));
                }
            }
            Body::ExecCredit(credit) => {
                if let Some(c) = s.out_credit.as_mut() {
                    *c = c.saturating_add(credit.bytes.into()).min(MAX_OUTPUT_CREDIT);
                }
            }
            Body::ExecSignal(signal) => {
                if !(1..=64).contains(&signal.signal) {
                    idm.send(&error(
                        stream_id,
                        format!("signal {} is not a signal number", signal.signal),
                    ));
                } else if s.exit.is_none() {
                    s.signal(signal.signal);
                }
            }
            Body::ExecCancel(_) => s.cancel(),
            _ => {}
        }
    }

    /// ExecCancel with stream id 0: the host has no client for any earlier session.
    pub fn cancel_all(&mut self) {
        for s in self.sessions.values_mut() {
            s.cancel();
        }
    }

    /// Records a reaped child. `false` if it is not an exec session's process.
    pub fn reaped(&mut self, pid: pid_t, status: ExitStatus) -> bool {
        match self
            .sessions
            .values_mut()
            .find(|s| s.pid == pid && s.exit.is_none())
        {
            Some(s) => {
                s.exit = Some(status);
                true
            }
            None => false,
        }
    }

    /// Poll entries for the sessions' fds; `idm_queued` decides whether output may be read.
    pub fn poll_fds(&self, idm_queued: usize, fds: &mut Vec<sys::PollFd>, slots: &mut Vec<Slot>) {
        for (&id, s) in &self.sessions {
            if let Some(stdin) = &s.stdin
                && !s.stdin_queue.is_empty()
            {
                fds.push(sys::pollfd(stdin.as_raw_fd(), sys::POLLOUT));
                slots.push(Slot::Stdin(id));
            }
            let reading = idm_queued < OUTBOX_HIGH_WATER && s.out_credit != Some(0);
            for (i, out) in s.outputs.iter().enumerate() {
                let Some(file) = &out.file else { continue };
                // Not reading, the fd is still watched for its hang-up (no events asked): the
                // end of an output with nothing left in it needs no credit.
                let events = match (reading, out.hung_up) {
                    (true, _) => sys::POLLIN,
                    (false, false) => 0,
                    (false, true) => continue,
                };
                fds.push(sys::pollfd(file.as_raw_fd(), events));
                slots.push(Slot::Output(id, i));
            }
        }
    }

    /// Handles a ready fd (`revents` as poll reported them).
    pub fn ready(&mut self, slot: Slot, revents: i16, idm: &mut IdmPort) {
        match slot {
            Slot::Stdin(id) => {
                if let Some(s) = self.sessions.get_mut(&id) {
                    s.write_stdin(id, idm);
                }
            }
            Slot::Output(id, i) => {
                let Some(s) = self.sessions.get_mut(&id) else {
                    return;
                };
                if revents & sys::POLLIN != 0 {
                    s.read_output(id, i, idm);
                } else if revents & (sys::POLLHUP | sys::POLLERR) != 0
                    && let Some(out) = s.outputs.get_mut(i)
                    && let Some(file) = &out.file
                {
                    // Hung up while not being read: the end, unless data is left for later.
                    match sys::bytes_available(file.as_fd()) {
                        Ok(0) | Err(_) => out.file = None,
                        Ok(_) => out.hung_up = true,
                    }
                }
            }
        }
    }

    /// Ends sessions whose process exited and whose output is drained (or lingered too
    /// long while it could be read). Returns the time until the next linger deadline, if any.
    pub fn finish(&mut self, idm: &mut IdmPort) -> Option<Duration> {
        let now = Instant::now();
        let mut next: Option<Duration> = None;
        let mut done = Vec::new();
        for (&id, s) in self.sessions.iter_mut() {
            if s.exit.is_none() {
                continue;
            }
            if s.cancelled || s.outputs.iter().all(|o| o.file.is_none()) {
                done.push(id);
                continue;
            }
            // Output held back for want of credit is not lingering: it goes out as the host
            // takes it. Only a pipe that stays open with nothing to read times out.
            if s.out_credit == Some(0) {
                s.linger_from = None;
                continue;
            }
            let deadline = *s.linger_from.get_or_insert(now) + OUTPUT_LINGER;
            if now >= deadline {
                done.push(id);
            } else {
                let left = deadline - now;
                next = Some(next.map_or(left, |n| n.min(left)));
            }
        }
        for id in done {
            if let Some(mut s) = self.sessions.remove(&id) {
                // Whatever is still readable (and the host has room for) goes out before the exit.
                for i in 0..s.outputs.len() {
                    s.read_output(id, i, idm);
                }
                if let Some(status) = s.exit {
                    idm.send(&exited(id, status));
                }
            }
        }
        next
    }
}

fn clamp(v: u32) -> u16 {
    v.min(u16::MAX as u32) as u16
}

impl Session {
    fn new(pid: pid_t, stdin: File, outputs: Vec<Output>, pty: Option<File>) -> Session {
        Session {
            pid,
            stdin: Some(stdin),
            stdin_queue: Vec::new(),
            stdin_close: false,
            stdin_unacked: 0,
            outputs,
            pty,
            out_credit: None,
            exit: None,
            linger_from: None,
            cancelled: false,
        }
    }

    fn write_stdin(&mut self, id: u64, idm: &mut IdmPort) {
        self.deliver_stdin();
        let drained = self.stdin_queue.is_empty();
        self.ack_stdin(id, idm, drained);
    }

    fn deliver_stdin(&mut self) {
        let Some(stdin) = self.stdin.as_mut() else {
            return;
        };
        while !self.stdin_queue.is_empty() {
            match stdin.write(&self.stdin_queue) {
                Ok(0) => break,
                Ok(n) => {
                    self.stdin_queue.drain(..n);
                    self.stdin_unacked += n as u64;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    // The process closed its stdin (EPIPE): nothing more to deliver.
                    self.stdin_unacked += self.stdin_queue.len() as u64;
                    self.stdin_queue.clear();
                    self.stdin = None;
                    return;
                }
            }
        }
        if self.stdin_close && self.stdin_queue.is_empty() {
            if self.pty.is_some() {
                // A terminal has no half-close: send EOF (^D) like a user would.
                let _ = stdin.write(&[4]);
            }
            self.stdin = None;
        }
    }

    /// Returns stdin credit to the host: in batches, or all of it when `all` (queue drained).
    fn ack_stdin(&mut self, id: u64, idm: &mut IdmPort, all: bool) {
        if self.stdin_unacked == 0 || (!all && self.stdin_unacked < STDIN_CREDIT_BATCH) {
            return;
        }
        let bytes = self.stdin_unacked.min(u32::MAX.into()) as u32;
        self.stdin_unacked -= u64::from(bytes);
        idm.send(&IdmPacket::stream(
            id,
            Body::ExecCredit(proto::ExecCredit { bytes }),
        ));
    }

    /// Signals the process's group (it leads its own session), or the process if that fails.
    fn signal(&self, signal: i32) {
        if sys::kill(-self.pid, signal).is_err() {
            let _ = sys::kill(self.pid, signal);
        }
    }

    fn cancel(&mut self) {
        if self.exit.is_none() {
            self.signal(libc::SIGKILL);
        }
        self.cancelled = true;
        self.stdin = None;
        self.stdin_queue.clear();
        for out in &mut self.outputs {
            out.file = None;
        }
    }

    fn read_output(&mut self, id: u64, index: usize, idm: &mut IdmPort) {
        let Some(out) = self.outputs.get_mut(index) else {
            return;
        };
        let Some(file) = out.file.as_mut() else {
            return;
        };
        let mut buf = vec![0u8; READ_CHUNK];
        let eof = loop {
            let room = match self.out_credit {
                Some(0) => break false,
                Some(credit) => credit.min(READ_CHUNK as u64) as usize,
                None => READ_CHUNK,
            };
            match file.read(&mut buf[..room]) {
                Ok(0) => break true,
                Ok(n) => {
                    if let Some(credit) = self.out_credit.as_mut() {
                        *credit -= n as u64;
                    }
                    idm.send(&IdmPacket::stream(
                        id,
                        Body::ExecOutput(proto::ExecOutput {
                            stream: out.stream.into(),
                            data: buf[..n].to_vec(),
                        }),
                    ));
                    if idm.queued() >= OUTBOX_HIGH_WATER {
                        break false;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break false,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                // A pty master reads EIO once the last slave fd closes: that is its EOF.
                Err(_) => break true,
            }
        };
        if eof {
            out.file = None;
        }
    }
}
