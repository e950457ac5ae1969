//! AttachZoneConsole and ReadZoneLogs, both served from the zone's console hub.

use std::sync::Arc;

use bytes::Bytes;
use spore_api::v1;
use tokio::sync::{broadcast, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};
use uuid::Uuid;

use super::{Stream_, shutting_down};
use crate::console::{Chunk, ConsoleHub, Ending, skip_seen, tail_lines};
use crate::daemon::Daemon;

/// Bytes per message when replaying a stored log.
const REPLAY_CHUNK: usize = 64 * 1024;

fn hub(daemon: &Daemon, id: Uuid) -> Result<Arc<ConsoleHub>, Status> {
    daemon
        .console(id)
        .map_err(|e| Status::internal(format!("cannot open the console log of zone {id}: {e}")))
}

/// The stored log (read on the blocking pool: up to the log's limit of file reads) and a live
/// subscription starting right after it.
async fn snapshot(
    hub: &Arc<ConsoleHub>,
) -> Result<(Vec<u8>, u64, broadcast::Receiver<Chunk>), Status> {
    let hub = hub.clone();
    tokio::task::spawn_blocking(move || hub.snapshot_and_follow())
        .await
        .map_err(|e| Status::internal(format!("reading the console log panicked: {e}")))
}

pub async fn attach(
    daemon: &Arc<Daemon>,
    id: Uuid,
    first: v1::AttachZoneConsoleRequest,
    mut inbound: Streaming<v1::AttachZoneConsoleRequest>,
    shutdown: watch::Receiver<bool>,
) -> Result<Stream_<v1::AttachZoneConsoleResponse>, Status> {
    let hub = hub(daemon, id)?;
    let (backlog, end, live) = if first.replay {
        snapshot(&hub).await?
    } else {
        let (end, live) = hub.follow();
        (Vec::new(), end, live)
    };
    let input_hub = hub.clone();
    let first_input = first.input;
    tokio::spawn(async move {
        if !first_input.is_empty() {
            input_hub.input(Bytes::from(first_input)).await;
        }
        while let Ok(Some(message)) = inbound.message().await {
            if !message.input.is_empty() {
                input_hub.input(Bytes::from(message.input)).await;
            }
        }
    });
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        let output = |data: Bytes| {
            Ok(v1::AttachZoneConsoleResponse {
                kind: Some(v1::attach_zone_console_response::Kind::Output(
                    data.to_vec(),
                )),
            })
        };
        let ending = stream_console(&hub, backlog, end, live, shutdown, |data| {
            let tx = tx.clone();
            async move { tx.send(output(data)).await.is_ok() }
        })
        .await;
        let last = match ending {
            Some(Ending::Exited(exit)) => Ok(v1::AttachZoneConsoleResponse {
                kind: Some(v1::attach_zone_console_response::Kind::Exited(exit)),
            }),
            Some(Ending::Gone(reason)) => Err(Status::failed_precondition(format!(
                "zone {id} ended without an exit status: {reason}"
            ))),
            None => return,
        };
        let _ = tx.send(last).await;
    });
    Ok(Box::pin(ReceiverStream::new(rx)))
}

pub async fn logs(
    daemon: &Arc<Daemon>,
    id: Uuid,
    request: v1::ReadZoneLogsRequest,
    shutdown: watch::Receiver<bool>,
) -> Result<Stream_<v1::ReadZoneLogsResponse>, Status> {
    let hub = hub(daemon, id)?;
    let (mut backlog, end, live) = snapshot(&hub).await?;
    if let Some(lines) = request.tail_lines {
        backlog = tail_lines(&backlog, lines).to_vec();
    }
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        let send = |data: Bytes| {
            let tx = tx.clone();
            async move {
                tx.send(Ok(v1::ReadZoneLogsResponse {
                    data: data.to_vec(),
                }))
                .await
                .is_ok()
            }
        };
        if request.follow {
            stream_console(&hub, backlog, end, live, shutdown, send).await;
        } else {
            for piece in backlog.chunks(REPLAY_CHUNK) {
                if !send(Bytes::copy_from_slice(piece)).await {
                    return;
                }
            }
        }
    });
    Ok(Box::pin(ReceiverStream::new(rx)))
}

/// Sends the backlog, then live output until the zone ends (returning how), the client
/// goes away or the daemon shuts down (returning None).
async fn stream_console<F, Fut>(
    hub: &ConsoleHub,
    backlog: Vec<u8>,
    mut pos: u64,
    mut live: broadcast::Receiver<Chunk>,
    mut shutdown: watch::Receiver<bool>,
    send: F,
) -> Option<Ending>
where
    F: Fn(Bytes) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for piece in backlog.chunks(REPLAY_CHUNK) {
        if !send(Bytes::copy_from_slice(piece)).await {
            return None;
        }
    }
    let mut ending = hub.ending();
    loop {
        tokio::select! {
            chunk = live.recv() => match chunk {
                Ok(chunk) => {
                    if let Some(data) = skip_seen(&chunk, pos) {
                        pos = chunk.offset + chunk.data.len() as u64;
                        if !send(data).await {
                            return None;
                        }
                    }
                }
                // A slow client misses output; the log still has it.
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            },
            end = async { ending.wait_for(|e| e.is_some()).await.map(|e| e.clone()).ok().flatten() } => {
                // Output that arrived just before the end is still in the channel.
                while let Ok(chunk) = live.try_recv() {
                    if let Some(data) = skip_seen(&chunk, pos) {
                        pos = chunk.offset + chunk.data.len() as u64;
                        if !send(data).await {
                            return None;
                        }
                    }
                }
                return end;
            }
            _ = shutting_down(&mut shutdown) => return None,
        }
    }
}
