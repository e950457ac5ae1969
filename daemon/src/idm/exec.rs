//! Exec sessions on the host side of IDM: a process spore-init started on our request, its
//! output coming back, its input going in, both under credit-based flow control.
//!
//! Output: ExecStart offers the guest [`OUTPUT_WINDOW`] bytes. The guest reads its process's
//! output only while it has credit and spends credit for every byte it sends; the session
//! hands output to its consumer (the API handler, which waits for the client) and returns
//! credit ([`proto::ExecCredit`]) for what the consumer took. So a session holds at most one
//! window of output whatever the client does, and a client that stops reading stops the
//! process (its pipe fills), not the zone's IDM channel: the reader task never waits for a
//! session. A guest that sends past its window breaks the protocol: the session is cancelled
//! and its client told why; the window still bounds what was kept.
//!
//! Input: ExecStarted says how much stdin the guest accepts ahead of its process
//! (`stdin_window`); the guest returns credit as bytes reach the process, and [`ExecSession::
//! stdin`] waits for credit, so a process that does not read its input holds up its client's
//! stream (gRPC flow control) instead of queues.
//!
//! A session dropped before the process exited (its client went away) is cancelled: the
//! guest kills the process group and discards its output.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use spore_idm::proto::{self, exec_output::Stream, idm_packet::Body};
use spore_idm::{ExitStatus, IdmPacket};
use tokio::sync::Notify;

use super::{IdmLink, LinkError, Shared, bounded, lock};

/// Output bytes the guest may send ahead of our consumer, per session: the most a session
/// buffers.
pub const OUTPUT_WINDOW: u32 = 256 * 1024;
/// Credit goes back to the guest in batches of at least this many consumed bytes.
const CREDIT_BATCH: usize = OUTPUT_WINDOW as usize / 4;
/// The largest piece of output handed out, and of stdin sent, at once.
pub const MAX_CHUNK: usize = 64 * 1024;
/// Stdin credit a guest can pile up (it only returns what we sent; this bounds a bad one).
const MAX_STDIN_CREDIT: u64 = 64 * 1024 * 1024;
/// How long the guest may take to answer ExecStart (it forks and execs at once).
pub const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Error messages kept per session (a guest could send any number).
const MAX_ERRORS: usize = 4;

/// What a session reports, in order: Started, output and errors, then Exited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecEvent {
    Started {
        pid: u32,
    },
    Stdout(Bytes),
    Stderr(Bytes),
    /// spore-init could not start the command (an Exited with 126/127 follows).
    Error(String),
    Exited(ExitStatus),
}

/// One exec session, owned by its consumer.
pub struct ExecSession {
    link: IdmLink,
    id: u64,
    channel: Arc<Channel>,
    /// The Exited event was handed out: nothing left to cancel.
    finished: bool,
}

/// The part the reader task delivers into.
pub(super) struct Channel {
    id: u64,
    state: Mutex<State>,
    /// Wakes the consumer of events ([`ExecSession::next`]).
    events: Notify,
    /// Wakes the stdin sender (credit, start, end).
    input: Notify,
}

#[derive(Default)]
struct State {
    started: Option<proto::ExecStarted>,
    started_reported: bool,
    stdout: BytesMut,
    stderr: BytesMut,
    /// Take stderr first next time (the two alternate when both have data).
    stderr_next: bool,
    /// Output received and not yet credited back: buffered plus consumed-but-unreported.
    outstanding: usize,
    /// Consumed output not yet credited.
    unreported: usize,
    errors: VecDeque<String>,
    exit: Option<ExitStatus>,
    closed: bool,
    violation: Option<String>,
    stdin_credit: u64,
}

impl State {
    fn buffered(&self) -> usize {
        self.stdout.len() + self.stderr.len()
    }

    /// The process can take no more input: it ended, or the session did.
    fn input_over(&self) -> bool {
        self.exit.is_some() || self.closed || self.violation.is_some()
    }
}

fn state(channel: &Channel) -> MutexGuard<'_, State> {
    lock(&channel.state)
}

impl IdmLink {
    /// Starts `start` in the guest as a new session, refused when the zone already runs
    /// `limit` sessions. The answer (ExecStarted or an error and ExecExit) comes as events.
    pub async fn exec(
        &self,
        mut start: proto::ExecStart,
        limit: usize,
    ) -> Result<ExecSession, LinkError> {
        let shared = &self.shared;
        let id = shared
            .next_stream
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let channel = Arc::new(Channel {
            id,
            state: Mutex::new(State::default()),
            events: Notify::new(),
            input: Notify::new(),
        });
        {
            let mut streams = lock(&shared.streams);
            let Some(streams) = streams.as_mut() else {
                return Err(LinkError::Closed);
            };
            if streams.len() >= limit {
                return Err(LinkError::TooManyExecs(streams.len()));
            }
            streams.insert(id, channel.clone());
        }
        // From here the session is registered: dropping it unregisters (and cancels) it.
        let session = ExecSession {
            link: self.clone(),
            id,
            channel,
            finished: false,
        };
        start.output_window = OUTPUT_WINDOW;
        if shared
            .tx
            .send(IdmPacket::stream(id, Body::ExecStart(start)))
            .await
            .is_err()
        {
            return Err(LinkError::Closed);
        }
        Ok(session)
    }
}

impl Channel {
    /// A message of this session from the guest. Never waits: called by the reader task.
    pub(super) fn deliver(&self, body: Body, shared: &Shared) {
        let mut st = state(self);
        if st.violation.is_some() {
            return;
        }
        match body {
            Body::ExecStarted(started) => {
                if st.started.is_none() {
                    st.stdin_credit = started.stdin_window.into();
                    st.started = Some(started);
                    self.input.notify_one();
                }
            }
            Body::ExecOutput(output) => {
                let len = output.data.len();
                if st.outstanding + len > OUTPUT_WINDOW as usize {
                    let message = format!(
                        "the guest sent {} bytes of output beyond its {OUTPUT_WINDOW}-byte window (spore-init without exec flow control, or a misbehaving one): the command was cancelled",
                        st.outstanding + len - OUTPUT_WINDOW as usize
                    );
                    tracing::warn!(zone = %shared.zone, stream = self.id, "{message}");
                    st.violation = Some(message);
                    st.stdout = BytesMut::new();
                    st.stderr = BytesMut::new();
                    shared.send_soon(IdmPacket::stream(
                        self.id,
                        Body::ExecCancel(proto::ExecCancel {}),
                    ));
                    self.input.notify_one();
                } else if len > 0 {
                    st.outstanding += len;
                    match output.stream() {
                        Stream::Stdout => st.stdout.extend_from_slice(&output.data),
                        Stream::Stderr => st.stderr.extend_from_slice(&output.data),
                    }
                }
            }
            Body::ExecCredit(credit) => {
                st.stdin_credit = st
                    .stdin_credit
                    .saturating_add(credit.bytes.into())
                    .min(MAX_STDIN_CREDIT);
                self.input.notify_one();
            }
            Body::Error(error) => {
                if st.errors.len() < MAX_ERRORS {
                    st.errors.push_back(bounded(&error.message));
                }
            }
            Body::ExecExit(exit) => {
                if st.exit.is_none() {
                    st.exit = Some(match exit.status {
                        Some(proto::exec_exit::Status::Code(code)) => ExitStatus::Code(code),
                        Some(proto::exec_exit::Status::Signal(signal)) => ExitStatus::Signal {
                            signal,
                            core_dumped: false,
                        },
                        // A protocol violation; report it as docker reports an unknown end.
                        None => ExitStatus::Code(126),
                    });
                    self.input.notify_one();
                }
            }
            _ => {
                tracing::debug!(zone = %shared.zone, stream = self.id, "IDM: unexpected exec message, ignored");
                return;
            }
        }
        drop(st);
        self.events.notify_one();
    }

    /// The IDM channel closed under the session.
    pub(super) fn close(&self) {
        state(self).closed = true;
        self.events.notify_one();
        self.input.notify_one();
    }
}

impl ExecSession {
    /// The next event; `Ok(None)` after Exited. An error ends the session: the IDM channel
    /// closed, the guest broke the protocol, or it never answered the start. Cancel-safe.
    pub async fn next(&mut self) -> Result<Option<ExecEvent>, LinkError> {
        if self.finished {
            return Ok(None);
        }
        let result = self.next_event().await;
        if matches!(result, Ok(Some(ExecEvent::Exited(_))) | Err(_)) {
            // Over: the session no longer counts against the zone's limit.
            self.finished = true;
            self.release();
        }
        result
    }

    /// Takes the session out of the link's table (idempotent).
    fn release(&self) {
        if let Some(streams) = lock(&self.link.shared.streams).as_mut() {
            streams.remove(&self.id);
        }
    }

    async fn next_event(&mut self) -> Result<Option<ExecEvent>, LinkError> {
        loop {
            let (event, credit) = {
                let mut st = state(&self.channel);
                self.take(&mut st)?
            };
            if credit > 0 {
                // Without waiting: an await here would make a cancelled call lose its event.
                self.link.shared.send_soon(IdmPacket::stream(
                    self.id,
                    Body::ExecCredit(proto::ExecCredit {
                        bytes: credit as u32,
                    }),
                ));
            }
            if let Some(event) = event {
                return Ok(Some(event));
            }
            let started = state(&self.channel).started.is_some();
            if started {
                self.channel.events.notified().await;
            } else if tokio::time::timeout(START_TIMEOUT, self.channel.events.notified())
                .await
                .is_err()
                && state(&self.channel).started.is_none()
            {
                return Err(LinkError::Timeout(START_TIMEOUT));
            }
        }
    }

    /// The next event that is ready, and output credit to return.
    fn take(&self, st: &mut State) -> Result<(Option<ExecEvent>, usize), LinkError> {
        if let (Some(started), false) = (&st.started, st.started_reported) {
            let pid = started.pid;
            st.started_reported = true;
            return Ok((Some(ExecEvent::Started { pid }), 0));
        }
        if let Some(violation) = &st.violation {
            return Err(LinkError::Violation(violation.clone()));
        }
        if st.buffered() > 0 {
            let stderr = (st.stderr_next && !st.stderr.is_empty()) || st.stdout.is_empty();
            st.stderr_next = !stderr;
            let buffer = if stderr {
                &mut st.stderr
            } else {
                &mut st.stdout
            };
            let data = buffer.split_to(buffer.len().min(MAX_CHUNK)).freeze();
            if buffer.is_empty() {
                // Give the memory back: a flood must not leave a window-sized buffer behind.
                *buffer = BytesMut::new();
            }
            st.unreported += data.len();
            let mut credit = 0;
            if st.unreported >= CREDIT_BATCH {
                credit = std::mem::take(&mut st.unreported);
                st.outstanding -= credit;
            }
            let event = if stderr {
                ExecEvent::Stderr(data)
            } else {
                ExecEvent::Stdout(data)
            };
            return Ok((Some(event), credit));
        }
        if let Some(error) = st.errors.pop_front() {
            return Ok((Some(ExecEvent::Error(error)), 0));
        }
        if let Some(exit) = st.exit {
            return Ok((Some(ExecEvent::Exited(exit)), 0));
        }
        if st.closed {
            return Err(LinkError::Closed);
        }
        Ok((None, 0))
    }

    /// The input half, for a task of its own (it shares the session's channel).
    pub fn input(&self) -> ExecInput {
        ExecInput {
            link: self.link.clone(),
            id: self.id,
            channel: self.channel.clone(),
        }
    }

    /// Bytes of output the session holds right now (for tests and measurements).
    pub fn buffered(&self) -> usize {
        state(&self.channel).buffered()
    }
}

/// Sends a session's input. Outlives nothing: once the session is dropped (cancelled), what
/// it sends finds no session in the guest and is ignored there.
#[derive(Clone)]
pub struct ExecInput {
    link: IdmLink,
    id: u64,
    channel: Arc<Channel>,
}

impl ExecInput {
    /// Waits until the guest answered the start (or the session is over): input sent before
    /// ExecStarted would find no session in the guest.
    async fn started(&self) -> bool {
        loop {
            {
                let st = state(&self.channel);
                if st.input_over() {
                    return false;
                }
                if st.started.is_some() {
                    return true;
                }
            }
            self.channel.input.notified().await;
        }
    }

    /// Sends standard input, waiting for credit. Input for a process that already ended is
    /// dropped (as a closed pipe would).
    pub async fn stdin(&self, mut data: &[u8]) -> Result<(), LinkError> {
        if !self.started().await {
            return Ok(());
        }
        while !data.is_empty() {
            let n = loop {
                {
                    let mut st = state(&self.channel);
                    if st.input_over() {
                        return Ok(());
                    }
                    let flow = st.started.as_ref().is_some_and(|s| s.stdin_window > 0);
                    let room = if flow {
                        st.stdin_credit.min(MAX_CHUNK as u64) as usize
                    } else {
                        // A guest without input flow control queues 4 MiB itself.
                        MAX_CHUNK
                    };
                    if room > 0 {
                        let n = room.min(data.len());
                        if flow {
                            st.stdin_credit -= n as u64;
                        }
                        break n;
                    }
                }
                self.channel.input.notified().await;
            };
            let (chunk, rest) = data.split_at(n);
            data = rest;
            self.send(Body::ExecStdin(proto::ExecStdin {
                data: chunk.to_vec(),
            }))
            .await?;
        }
        Ok(())
    }

    pub async fn close_stdin(&self) -> Result<(), LinkError> {
        if self.started().await {
            self.send(Body::ExecStdinClosed(proto::ExecStdinClosed {}))
                .await?;
        }
        Ok(())
    }

    pub async fn resize(&self, rows: u32, columns: u32) -> Result<(), LinkError> {
        if self.started().await {
            let size = Some(proto::TerminalSize { rows, columns });
            self.send(Body::ExecResize(proto::ExecResize { size }))
                .await?;
        }
        Ok(())
    }

    /// Delivers `signal` to the process group.
    pub async fn signal(&self, signal: i32) -> Result<(), LinkError> {
        if self.started().await {
            self.send(Body::ExecSignal(proto::ExecSignal { signal }))
                .await?;
        }
        Ok(())
    }

    async fn send(&self, body: Body) -> Result<(), LinkError> {
        self.link
            .shared
            .tx
            .send(IdmPacket::stream(self.id, body))
            .await
            .map_err(|_| LinkError::Closed)
    }
}

impl Drop for ExecSession {
    fn drop(&mut self) {
        self.release();
        let shared = &self.link.shared;
        let over = {
            let st = state(&self.channel);
            st.exit.is_some() || st.closed || st.violation.is_some()
        };
        if !over {
            // The client went away while the process runs: the guest kills it.
            shared.send_soon(IdmPacket::stream(
                self.id,
                Body::ExecCancel(proto::ExecCancel {}),
            ));
        }
    }
}
