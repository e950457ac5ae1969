//! ExecInZone: the client's requests go to the guest session (stdin under the guest's credit,
//! so a process that does not read holds up this stream instead of a queue), the session's
//! events come back as responses. A client that goes away cancels the session: the guest
//! kills the process.

use std::sync::Arc;

use spore_api::v1::{self, exec_in_zone_request::Kind as In, exec_in_zone_response::Kind as Out};
use spore_idm::proto;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use super::{Stream_, shutting_down, status};
use crate::daemon::{Daemon, DaemonError, chain};
use crate::idm::exec::{ExecEvent, ExecInput, ExecSession};
use crate::idm::{LinkError, bounded};

/// Responses queued for the client; with the session's window, what one exec holds.
const RESPONSES: usize = 4;

pub async fn exec(
    daemon: &Arc<Daemon>,
    mut inbound: Streaming<v1::ExecInZoneRequest>,
    shutdown: watch::Receiver<bool>,
    resolve: impl FnOnce(&str) -> Result<uuid::Uuid, Status>,
) -> Result<Stream_<v1::ExecInZoneResponse>, Status> {
    let first = inbound
        .message()
        .await?
        .ok_or_else(|| Status::invalid_argument("the first message must be start"))?;
    let Some(In::Start(start)) = first.kind else {
        return Err(Status::invalid_argument(
            "the first message must be start (the command and the zone)",
        ));
    };
    let id = resolve(&start.zone)?;
    crate::validate::validate_exec(&start)
        .map_err(|e| status::from_daemon(DaemonError::Invalid(e)))?;
    let session = daemon
        .exec(
            id,
            proto::ExecStart {
                argv: start.command,
                env: start.env,
                working_dir: start.working_dir,
                user: start.user,
                tty: start.tty,
                size: start.terminal_size.map(|s| proto::TerminalSize {
                    rows: s.rows,
                    columns: s.columns,
                }),
                output_window: 0,
            },
        )
        .await
        .map_err(status::from_daemon)?;
    let (tx, rx) = mpsc::channel(RESPONSES);
    let input = tokio::spawn(forward_input(inbound, session.input()));
    tokio::spawn(forward_output(session, tx, input, shutdown));
    Ok(Box::pin(ReceiverStream::new(rx)))
}

/// The client's stdin, its end, resizes and signals, in order, each waiting for the last.
async fn forward_input(
    mut inbound: Streaming<v1::ExecInZoneRequest>,
    input: ExecInput,
) -> Result<(), Status> {
    loop {
        let message = match inbound.message().await {
            Ok(Some(message)) => message,
            // The client half-closed its requests: it still reads the output.
            Ok(None) => return Ok(()),
            // The client is gone (cancelled, reset): end the session.
            Err(status) => return Err(status),
        };
        let sent = match message.kind {
            Some(In::Stdin(data)) => input.stdin(&data).await,
            Some(In::StdinClosed(true)) => input.close_stdin().await,
            Some(In::StdinClosed(false)) | None => Ok(()),
            Some(In::Resize(size)) => input.resize(size.rows, size.columns).await,
            Some(In::Signal(signal)) if (1..=64).contains(&signal) => input.signal(signal).await,
            Some(In::Signal(signal)) => {
                return Err(Status::invalid_argument(format!(
                    "signal: {signal} is not a signal number (1-64)"
                )));
            }
            Some(In::Start(_)) => {
                return Err(Status::invalid_argument(
                    "start: only the first message may be start",
                ));
            }
        };
        if sent.is_err() {
            // The channel closed; the output side reports it.
            return Ok(());
        }
    }
}

async fn forward_output(
    mut session: ExecSession,
    tx: mpsc::Sender<Result<v1::ExecInZoneResponse, Status>>,
    mut input: tokio::task::JoinHandle<Result<(), Status>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut input_done = false;
    let reply = |kind| Ok(v1::ExecInZoneResponse { kind: Some(kind) });
    loop {
        let event = tokio::select! {
            event = session.next() => event,
            // The client is gone: dropping the session cancels it in the guest.
            _ = tx.closed() => break,
            ended = &mut input, if !input_done => {
                input_done = true;
                match ended {
                    Ok(Ok(())) => continue,
                    Ok(Err(status)) => {
                        let _ = tx.send(Err(status)).await;
                        break;
                    }
                    Err(_) => break,
                }
            }
            _ = shutting_down(&mut shutdown) => {
                let _ = tx
                    .send(Err(Status::unavailable(
                        "spored is shutting down; the command was cancelled",
                    )))
                    .await;
                break;
            }
        };
        let response = match event {
            Ok(Some(ExecEvent::Started { .. })) => continue,
            Ok(Some(ExecEvent::Stdout(data))) => reply(Out::Stdout(data.to_vec())),
            Ok(Some(ExecEvent::Stderr(data))) => reply(Out::Stderr(data.to_vec())),
            Ok(Some(ExecEvent::Error(message))) => reply(Out::Error(bounded(&message))),
            Ok(Some(ExecEvent::Exited(status))) => {
                let status = match status {
                    spore_idm::ExitStatus::Code(code) => v1::exit_status::Status::Code(code),
                    spore_idm::ExitStatus::Signal { signal, .. } => {
                        v1::exit_status::Status::Signal(signal)
                    }
                };
                let _ = tx
                    .send(reply(Out::Exited(v1::ExitStatus {
                        status: Some(status),
                    })))
                    .await;
                break;
            }
            Ok(None) => break,
            Err(e) => Err(link_status(e)),
        };
        let last = response.is_err();
        if tx.send(response).await.is_err() || last {
            break;
        }
    }
    input.abort();
}

fn link_status(e: LinkError) -> Status {
    let message = format!("the command's session ended: {}", chain(&e));
    match e {
        LinkError::Closed => {
            Status::unavailable(format!("{message}; the process did not report its exit"))
        }
        LinkError::Timeout(_) => Status::unavailable(message),
        _ => Status::failed_precondition(message),
    }
}
