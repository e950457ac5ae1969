//! The interactive console session behind `zone launch --attach` and `zone attach`.
//!
//! Nothing is lost between creating a zone and showing its output: the session follows the
//! zone's events from a sequence number taken *before* the zone could change state, and it
//! attaches to the console with `replay`, so output written before the attach is sent first.
//! If spored refuses the attach because the zone has no console yet (FAILED_PRECONDITION), the
//! session retries on the next state change; a zone that exited before any attach succeeded
//! has its stored log printed instead. A console that breaks while the zone runs (spored
//! restarted) is attached again; with replay, the bytes already printed are skipped, so nothing
//! shows twice. The exit status comes from the console stream's final message, or from the
//! EXITED event when the stream closes without one.

use std::io::Write;
use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use futures::StreamExt;
use spore_api::ControlClient;
use spore_api::v1;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Streaming};

use crate::context::Ctx;
use crate::human;
use crate::term::{self, Input};

/// How long console output may trail the EXITED event before the session ends anyway.
const DRAIN_GRACE: Duration = Duration::from_secs(3);
/// How often a broken event stream is re-opened before giving up.
const EVENT_RECONNECTS: u32 = 5;
/// How often a broken console is re-attached before giving up, and the base delay.
const CONSOLE_RETRIES: u32 = 5;
const CONSOLE_RETRY: Duration = Duration::from_millis(300);
/// Keystrokes kept while the zone has no console yet, bytes.
const TYPE_AHEAD_LIMIT: usize = 64 * 1024;

/// What the caller knows about the zone to attach to.
pub struct Target {
    pub id: String,
    pub name: String,
    /// The first event sequence to follow (the daemon's last sequence + 1 before the zone
    /// could have changed state).
    pub from_sequence: u64,
    /// Send the stored console log before live output.
    pub replay: bool,
    /// Put the local terminal into raw mode (the zone has a terminal and so does stdin).
    pub raw: bool,
    /// Forward standard input to the console (`run` without `-i` does not).
    pub stdin: bool,
}

/// How a session ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The workload ended with this status.
    Exited(v1::ExitStatus),
    /// The user typed Ctrl+]; the zone keeps running.
    Detached,
}

enum Console {
    /// No console stream yet (or spored refused one for now).
    Waiting,
    Attached(Box<Attached>),
    /// The console stream ended.
    Closed,
}

struct Attached {
    stream: Streaming<v1::AttachZoneConsoleResponse>,
    input: mpsc::Sender<v1::AttachZoneConsoleRequest>,
}

/// Runs the session until the workload ends, the zone fails or is destroyed, or the user
/// detaches. A failed or destroyed zone is an error naming the reason.
pub async fn run(ctx: &Ctx, client: &mut ControlClient, target: &Target) -> Result<Outcome> {
    let _raw = if target.raw {
        Some(term::RawMode::enable()?)
    } else {
        None
    };
    Session {
        ctx,
        target,
        exit: None,
        zone_started: false,
        zone_ended: false,
        printed: 0,
        skip: 0,
    }
    .run(client)
    .await
}

struct Session<'a> {
    ctx: &'a Ctx,
    target: &'a Target,
    exit: Option<v1::ExitStatus>,
    /// A STARTING or RUNNING event has arrived: a refused attach is worth retrying.
    zone_started: bool,
    /// The EXITED event has arrived.
    zone_ended: bool,
    /// Console bytes written to stdout so far.
    printed: u64,
    /// Replayed bytes still to drop after a re-attach (they were printed before).
    skip: u64,
}

impl Session<'_> {
    async fn run(&mut self, client: &mut ControlClient) -> Result<Outcome> {
        let mut next_sequence = self.target.from_sequence;
        let mut events = Some(self.watch(client, next_sequence).await?);
        let mut reconnects = 0;
        let mut console = self.open_console(client).await?;
        // Only a terminal can type the detach key; from a pipe, 0x1d is data.
        let mut stdin = self
            .target
            .stdin
            .then(|| term::spawn_stdin(term::stdin_is_tty()));
        // Keystrokes typed before the console exists (e.g. while the image is pulled).
        let mut typed_ahead: Vec<u8> = Vec::new();
        let mut drain_deadline: Option<Instant> = None;
        let mut retry_at: Option<Instant> = None;
        let mut console_failures = 0u32;

        loop {
            if let Console::Closed = console
                && (self.exit.is_some() || events.is_none())
            {
                break;
            }
            if let Console::Attached(attached) = &console
                && !typed_ahead.is_empty()
            {
                let input = std::mem::take(&mut typed_ahead);
                let _ = attached.input.send(input_request(input)).await;
            }
            let attached = matches!(console, Console::Attached(_));
            let waiting = matches!(console, Console::Waiting);
            tokio::select! {
                message = next_console(&mut console), if attached => {
                    match message {
                        Ok(Some(v1::AttachZoneConsoleResponse { kind: Some(kind) })) => match kind {
                            v1::attach_zone_console_response::Kind::Output(bytes) => {
                                console_failures = 0;
                                self.write_output(&bytes)?;
                            }
                            v1::attach_zone_console_response::Kind::Exited(exit) => {
                                self.exit = Some(exit);
                                console = Console::Closed;
                            }
                        },
                        Ok(Some(_)) => {}
                        // The workload is over and its status known from the event.
                        Ok(None) | Err(_) if self.zone_ended => console = Console::Closed,
                        Ok(None) => {
                            // Closed early (e.g. spored restarted): attach again shortly.
                            console = Console::Waiting;
                            retry_at = Some(Instant::now() + CONSOLE_RETRY);
                        }
                        Err(status) if status.code() == Code::FailedPrecondition => {
                            console = Console::Waiting;
                        }
                        Err(status) => {
                            console_failures += 1;
                            if console_failures > CONSOLE_RETRIES {
                                return Err(anyhow!(self.ctx.status_error(status))
                                    .context(format!("lost the console of zone {}", self.target.name)));
                            }
                            console = Console::Waiting;
                            retry_at = Some(Instant::now() + CONSOLE_RETRY * console_failures);
                        }
                    }
                }
                event = next_event(&mut events), if events.is_some() => {
                    match event {
                        Ok(Some(event)) => {
                            next_sequence = event.sequence + 1;
                            reconnects = 0;
                            match self.on_event(&event)? {
                                Some(Step::TryAttach) => {
                                    if let Console::Waiting = console {
                                        console = self.open_console(client).await?;
                                    }
                                }
                                Some(Step::Ended) => {
                                    if let Console::Waiting = console {
                                        console = self.open_console(client).await?;
                                        if let Console::Waiting = console {
                                            if self.target.replay {
                                                self.print_stored_log(client).await?;
                                            }
                                            console = Console::Closed;
                                        }
                                    }
                                    drain_deadline = Some(Instant::now() + DRAIN_GRACE);
                                }
                                None => {}
                            }
                        }
                        Ok(None) | Err(_) if reconnects < EVENT_RECONNECTS => {
                            // Cut off (too slow) or the daemon restarted: resume where we were.
                            reconnects += 1;
                            tokio::time::sleep(CONSOLE_RETRY * reconnects).await;
                            events = self.watch(client, next_sequence).await.ok();
                        }
                        Ok(None) => events = None,
                        Err(status) => {
                            return Err(anyhow!(self.ctx.status_error(status))
                                .context(format!("lost the events of zone {}", self.target.name)));
                        }
                    }
                }
                input = next_input(&mut stdin), if stdin.is_some() => {
                    match input {
                        Some(Input::Data(bytes)) => match &console {
                            // A closed request stream means the console is ending; the
                            // response side says why.
                            Console::Attached(attached) => {
                                let _ = attached.input.send(input_request(bytes)).await;
                            }
                            _ => {
                                let room = TYPE_AHEAD_LIMIT.saturating_sub(typed_ahead.len());
                                typed_ahead.extend_from_slice(&bytes[..bytes.len().min(room)]);
                            }
                        },
                        Some(Input::Detach) => return Ok(Outcome::Detached),
                        Some(Input::Eof) | None => stdin = None,
                    }
                }
                () = sleep_until(retry_at), if waiting && retry_at.is_some() => {
                    retry_at = None;
                    console = self.open_console(client).await?;
                    if let Console::Waiting = console
                        && self.zone_started
                    {
                        retry_at = Some(Instant::now() + CONSOLE_RETRY);
                    }
                }
                () = sleep_until(drain_deadline), if drain_deadline.is_some() => break,
            }
        }
        match self.exit.take() {
            Some(exit) => Ok(Outcome::Exited(exit)),
            None => bail!(
                "the console of zone {} closed before its workload exited (see sporectl zone get {})",
                self.target.name,
                self.target.name
            ),
        }
    }

    async fn watch(&self, client: &mut ControlClient, from: u64) -> Result<Streaming<v1::Event>> {
        self.ctx
            .call(client.watch_events(v1::WatchEventsRequest {
                from_sequence: Some(from),
                zone_id: self.target.id.clone(),
            }))
            .await
    }

    /// Opens the console; `Waiting` when spored says the zone has none yet. A re-attach with
    /// replay skips what was already printed, so nothing shows twice.
    async fn open_console(&mut self, client: &mut ControlClient) -> Result<Console> {
        self.skip = if self.target.replay { self.printed } else { 0 };
        let (tx, rx) = mpsc::channel(16);
        let first = v1::AttachZoneConsoleRequest {
            zone: self.target.id.clone(),
            replay: self.target.replay,
            input: Vec::new(),
        };
        // The channel is empty and its receiver alive: this cannot fail.
        let _ = tx.send(first).await;
        match client.attach_zone_console(ReceiverStream::new(rx)).await {
            Ok(response) => Ok(Console::Attached(Box::new(Attached {
                stream: response.into_inner(),
                input: tx,
            }))),
            Err(status) if status.code() == Code::FailedPrecondition => Ok(Console::Waiting),
            Err(status) if status.code() == Code::NotFound && self.zone_ended => {
                Ok(Console::Waiting)
            }
            Err(status) => Err(anyhow!(self.ctx.status_error(status)).context(format!(
                "cannot attach to the console of zone {}",
                self.target.name
            ))),
        }
    }

    /// When the console could never be attached (the zone ran and ended in between), the
    /// stored log is the output.
    async fn print_stored_log(&mut self, client: &mut ControlClient) -> Result<()> {
        let request = v1::ReadZoneLogsRequest {
            zone: self.target.id.clone(),
            tail_lines: None,
            follow: false,
        };
        let mut stream = match client.read_zone_logs(request).await {
            Ok(response) => response.into_inner(),
            // Removed already (--rm): there is nothing left to show.
            Err(status) if status.code() == Code::NotFound => return Ok(()),
            Err(status) => return Err(self.ctx.status_error(status).into()),
        };
        while let Some(chunk) = stream
            .message()
            .await
            .map_err(|s| self.ctx.status_error(s))?
        {
            self.write_output(&chunk.data)?;
        }
        Ok(())
    }

    fn on_event(&mut self, event: &v1::Event) -> Result<Option<Step>> {
        let Some(v1::event::Kind::ZoneStateChanged(change)) = &event.kind else {
            return Ok(None);
        };
        if change.zone_id != self.target.id {
            return Ok(None);
        }
        let Some(transition) = &change.transition else {
            return Ok(None);
        };
        Ok(match v1::ZoneState::try_from(transition.to) {
            Ok(v1::ZoneState::Starting | v1::ZoneState::Running) => {
                self.zone_started = true;
                Some(Step::TryAttach)
            }
            Ok(v1::ZoneState::Exited) => {
                self.zone_ended = true;
                if self.exit.is_none() {
                    self.exit = change.exit;
                }
                Some(Step::Ended)
            }
            Ok(v1::ZoneState::Failed) => {
                bail!("zone {} failed: {}", self.target.name, transition.reason)
            }
            Ok(v1::ZoneState::Destroying | v1::ZoneState::Destroyed) => {
                if self.zone_ended || self.exit.is_some() {
                    // --rm after the exit: the outcome is already known.
                    Some(Step::Ended)
                } else {
                    bail!(
                        "zone {} was destroyed before its workload exited",
                        self.target.name
                    )
                }
            }
            _ => None,
        })
    }

    fn write_output(&mut self, bytes: &[u8]) -> Result<()> {
        let drop = usize::try_from(self.skip)
            .unwrap_or(usize::MAX)
            .min(bytes.len());
        self.skip -= drop as u64;
        let bytes = &bytes[drop..];
        if bytes.is_empty() {
            return Ok(());
        }
        self.printed += bytes.len() as u64;
        let mut out = std::io::stdout().lock();
        match out.write_all(bytes).and_then(|()| out.flush()) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => crate::exit(0),
            other => Ok(other?),
        }
    }
}

enum Step {
    /// The zone may have a console now.
    TryAttach,
    /// The workload is over: drain the console, then finish.
    Ended,
}

fn input_request(input: Vec<u8>) -> v1::AttachZoneConsoleRequest {
    v1::AttachZoneConsoleRequest {
        input,
        ..Default::default()
    }
}

async fn next_console(
    console: &mut Console,
) -> Result<Option<v1::AttachZoneConsoleResponse>, tonic::Status> {
    match console {
        Console::Attached(attached) => attached.stream.message().await,
        _ => std::future::pending().await,
    }
}

async fn next_event(
    events: &mut Option<Streaming<v1::Event>>,
) -> Result<Option<v1::Event>, tonic::Status> {
    match events {
        Some(stream) => stream.next().await.transpose(),
        None => std::future::pending().await,
    }
}

async fn next_input(stdin: &mut Option<mpsc::Receiver<Input>>) -> Option<Input> {
    match stdin {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The process exit code for a session's outcome. Called after [`run`] returned, so the
/// terminal is no longer raw.
pub fn finish(outcome: Outcome, zone: &str) -> i32 {
    match outcome {
        Outcome::Exited(exit) => human::exit_code(&exit).unwrap_or(crate::EXIT_SPORE_FAILURE),
        Outcome::Detached => {
            eprint!(
                "\ndetached from zone {zone}; it keeps running (reattach: sporectl zone attach {zone})\n"
            );
            0
        }
    }
}
