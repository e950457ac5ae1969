//! Exec sessions (`zone exec`): a process started on the host's request, its stdin fed from
//! IDM, its stdout/stderr (or pseudo-terminal output) streamed back, its exit reported.
//!
//! Everything is non-blocking and driven by the supervisor's poll loop. Output is only read
//! while the IDM queue is below its high-water mark, so a slow host slows the process down
//! instead of growing init's memory.

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
/// Stdin bytes queued for a process that does not read them.
pub const MAX_STDIN_QUEUE: usize = 4 * 1024 * 1024;
/// After the process exits, how long to wait for its output pipes to close (a background
/// child may hold them open forever).
const OUTPUT_LINGER: Duration = Duration::from_secs(1);
const READ_CHUNK: usize = 32 * 1024;

#[derive(Debug)]
struct Output {
    /// `None` once the stream reached EOF.
    file: Option<File>,
    stream: Stream,
}

#[derive(Debug)]
struct Session {
    pid: pid_t,
    stdin: Option<File>,
    stdin_queue: Vec<u8>,
    stdin_close: bool,
    outputs: Vec<Output>,
    pty: Option<File>,
    exit: Option<(ExitStatus, Instant)>,
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
            Ok(session) => {
                idm.send(&IdmPacket::stream(
                    stream_id,
                    Body::ExecStarted(proto::ExecStarted {
                        pid: session.pid as u32,
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
            return Ok(Session {
                pid,
                stdin: Some(input),
                stdin_queue: Vec::new(),
                stdin_close: false,
                outputs: vec![Output {
                    file: Some(output),
                    stream: Stream::Stdout,
                }],
                pty: Some(master),
                exit: None,
            });
        }
        let (in_r, in_w) = sys::pipe().map_err(|e| fail("create a pipe", e))?;
        let (out_r, out_w) = sys::pipe().map_err(|e| fail("create a pipe", e))?;
        let (err_r, err_w) = sys::pipe().map_err(|e| fail("create a pipe", e))?;
        let fds: [RawFd; 3] = [in_r.as_raw_fd(), out_w.as_raw_fd(), err_w.as_raw_fd()];
        let pid = spawn::spawn(spec, rlimits, &Stdio::Fds(fds))?;
        // The child has its copies; closing ours lets EOF arrive when it is done.
        drop((in_r, out_w, err_w));
        let wrap = |fd| nonblocking(fd).map_err(|e| fail("configure a pipe", e));
        Ok(Session {
            pid,
            stdin: Some(wrap(in_w)?),
            stdin_queue: Vec::new(),
            stdin_close: false,
            outputs: vec![
                Output {
                    file: Some(wrap(out_r)?),
                    stream: Stream::Stdout,
                },
                Output {
                    file: Some(wrap(err_r)?),
                    stream: Stream::Stderr,
                },
            ],
            pty: None,
            exit: None,
        })
    }

    /// ExecStdin / ExecStdinClosed / ExecResize for a running session.
    pub fn input(&mut self, stream_id: u64, body: Body, idm: &mut IdmPort) {
        let Some(s) = self.sessions.get_mut(&stream_id) else {
            idm.send(&error(stream_id, format!("no exec session {stream_id}")));
            return;
        };
        match body {
            Body::ExecStdin(data) => {
                if s.stdin.is_none() || s.stdin_close {
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
                s.write_stdin();
            }
            Body::ExecStdinClosed(_) => {
                s.stdin_close = true;
                s.write_stdin();
            }
            Body::ExecResize(resize) => {
                if let (Some(pty), Some(size)) = (&s.pty, resize.size) {
                    let _ =
                        sys::set_window_size(pty.as_fd(), clamp(size.rows), clamp(size.columns));
                }
            }
            _ => {}
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
                s.exit = Some((status, Instant::now()));
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
            if idm_queued < OUTBOX_HIGH_WATER {
                for (i, out) in s.outputs.iter().enumerate() {
                    if let Some(file) = &out.file {
                        fds.push(sys::pollfd(file.as_raw_fd(), sys::POLLIN));
                        slots.push(Slot::Output(id, i));
                    }
                }
            }
        }
    }

    /// Handles a ready fd.
    pub fn ready(&mut self, slot: Slot, idm: &mut IdmPort) {
        match slot {
            Slot::Stdin(id) => {
                if let Some(s) = self.sessions.get_mut(&id) {
                    s.write_stdin();
                }
            }
            Slot::Output(id, i) => {
                if let Some(s) = self.sessions.get_mut(&id) {
                    s.read_output(id, i, idm);
                }
            }
        }
    }

    /// Ends sessions whose process exited and whose output is drained (or lingered too
    /// long). Returns the time until the next linger deadline, if any.
    pub fn finish(&mut self, idm: &mut IdmPort) -> Option<Duration> {
        let now = Instant::now();
        let mut next: Option<Duration> = None;
        let done: Vec<u64> = self
            .sessions
            .iter()
            .filter_map(|(&id, s)| {
                let (_, at) = s.exit?;
                let deadline = at + OUTPUT_LINGER;
                if s.outputs.iter().all(|o| o.file.is_none()) || now >= deadline {
                    Some(id)
                } else {
                    let left = deadline - now;
                    next = Some(next.map_or(left, |n| n.min(left)));
                    None
                }
            })
            .collect();
        for id in done {
            if let Some(mut s) = self.sessions.remove(&id) {
                // Whatever is still readable goes out before the exit.
                for i in 0..s.outputs.len() {
                    s.read_output(id, i, idm);
                }
                if let Some((status, _)) = s.exit {
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
    fn write_stdin(&mut self) {
        let Some(stdin) = self.stdin.as_mut() else {
            return;
        };
        while !self.stdin_queue.is_empty() {
            match stdin.write(&self.stdin_queue) {
                Ok(0) => break,
                Ok(n) => {
                    self.stdin_queue.drain(..n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    // The process closed its stdin (EPIPE): nothing more to deliver.
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

    fn read_output(&mut self, id: u64, index: usize, idm: &mut IdmPort) {
        let Some(out) = self.outputs.get_mut(index) else {
            return;
        };
        let Some(file) = out.file.as_mut() else {
            return;
        };
        let mut buf = vec![0u8; READ_CHUNK];
        let eof = loop {
            match file.read(&mut buf) {
                Ok(0) => break true,
                Ok(n) => {
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
