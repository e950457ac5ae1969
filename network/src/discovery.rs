//! Follows spored through its public API only: a snapshot (`GetHostStatus`, `ListZones`), then
//! `WatchEvents(from_sequence)`, resuming after the last event seen when the stream or spored
//! goes away (events are durable and carry a global sequence: docs/api.md). A zone is attached
//! at STARTING (its VM exists; the workload needs the network at RUNNING) and detached when it
//! exits, fails or is destroyed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use spore_api::v1;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;

/// What the service should do.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Serve exactly these zones (after a (re)connect that could not resume without a gap).
    Sync {
        state_dir: PathBuf,
        zones: Vec<v1::Zone>,
    },
    Attach {
        state_dir: PathBuf,
        zone: Box<v1::Zone>,
    },
    Detach {
        zone_id: String,
    },
}

/// States in which a zone has a VM whose network sporenet serves.
pub fn is_live(state: v1::ZoneState) -> bool {
    matches!(
        state,
        v1::ZoneState::Starting | v1::ZoneState::Running | v1::ZoneState::Stopping
    )
}

/// States after which the zone's network goes away.
fn is_end(state: v1::ZoneState) -> bool {
    matches!(
        state,
        v1::ZoneState::Exited
            | v1::ZoneState::Failed
            | v1::ZoneState::Destroying
            | v1::ZoneState::Destroyed
    )
}

#[derive(Debug, thiserror::Error)]
enum FollowError {
    #[error(transparent)]
    Connect(#[from] spore_api::ConnectError),
    #[error("spored refused {call}")]
    Call {
        call: &'static str,
        #[source]
        source: tonic::Status,
    },
    #[error("the service stopped listening")]
    Closed,
}

fn call(call: &'static str) -> impl FnOnce(tonic::Status) -> FollowError {
    move |source| FollowError::Call { call, source }
}

const RETRY_MIN: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Follows spored at `socket` forever, sending changes to `tx`. `state_dir` overrides the state
/// directory spored reports. `connected` fires after the first attempt, whatever its outcome
/// (the service tells systemd it is ready then).
pub async fn follow(
    socket: PathBuf,
    state_dir: Option<PathBuf>,
    tx: mpsc::Sender<Change>,
    mut connected: Option<tokio::sync::oneshot::Sender<()>>,
) {
    let mut next: Option<u64> = None;
    let mut backoff = RETRY_MIN;
    let mut last_error = String::new();
    loop {
        let result = session(
            &socket,
            state_dir.as_deref(),
            &tx,
            &mut next,
            &mut connected,
        )
        .await;
        if let Some(c) = connected.take() {
            let _ = c.send(());
        }
        match result {
            Err(FollowError::Closed) => return,
            Err(e) => {
                let msg = crate::error_chain(&e);
                if msg != last_error {
                    tracing::warn!("following spored: {msg}; retrying");
                    last_error = msg;
                }
            }
            Ok(()) => {
                backoff = RETRY_MIN;
                last_error.clear();
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(RETRY_MAX);
    }
}

/// One connection: resume (or snapshot), then follow until the stream ends.
async fn session(
    socket: &Path,
    state_dir: Option<&Path>,
    tx: &mpsc::Sender<Change>,
    next: &mut Option<u64>,
    connected: &mut Option<tokio::sync::oneshot::Sender<()>>,
) -> Result<(), FollowError> {
    let mut client = spore_api::connect(socket).await?;
    let host = client
        .get_host_status(v1::GetHostStatusRequest {})
        .await
        .map_err(call("GetHostStatus"))?
        .into_inner();
    let state_dir = state_dir
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(&host.state_dir));
    let newest = host.last_event_sequence;
    // Resume only when spored still has every event after the last one seen.
    let mut resync = match *next {
        None => true,
        Some(n) => n > newest + 1,
    };
    let from = if resync {
        newest + 1
    } else {
        next.unwrap_or(1)
    };
    let mut stream = client
        .watch_events(v1::WatchEventsRequest {
            from_sequence: Some(from),
            zone_id: String::new(),
        })
        .await
        .map_err(call("WatchEvents"))?
        .into_inner();
    if resync {
        snapshot(&mut client, &state_dir, tx).await?;
    }
    if let Some(c) = connected.take() {
        let _ = c.send(());
    }
    tracing::info!("following spored at {} from event {from}", socket.display());
    let mut expected = from;
    while let Some(event) = stream.next().await {
        let event = event.map_err(call("WatchEvents"))?;
        if event.sequence > expected && !resync {
            // Events in between are no longer retained: re-read the state.
            tracing::info!(
                "spored no longer has events {expected}..{}: re-reading its zones",
                event.sequence
            );
            snapshot(&mut client, &state_dir, tx).await?;
        }
        resync = false;
        expected = event.sequence + 1;
        *next = Some(expected);
        let Some(v1::event::Kind::ZoneStateChanged(change)) = event.kind else {
            continue;
        };
        let to = change
            .transition
            .as_ref()
            .map_or(v1::ZoneState::Unspecified, |t| t.to());
        if to == v1::ZoneState::Starting {
            match client
                .get_zone(v1::GetZoneRequest {
                    zone: change.zone_id.clone(),
                })
                .await
            {
                Ok(r) => {
                    if let Some(zone) = r.into_inner().zone
                        && zone.status.as_ref().is_some_and(|s| is_live(s.state()))
                    {
                        send(
                            tx,
                            Change::Attach {
                                state_dir: state_dir.clone(),
                                zone: Box::new(zone),
                            },
                        )
                        .await?;
                    }
                }
                // Gone already: its end events follow.
                Err(s) if s.code() == tonic::Code::NotFound => {}
                Err(s) => return Err(call("GetZone")(s)),
            }
        } else if is_end(to) {
            send(
                tx,
                Change::Detach {
                    zone_id: change.zone_id,
                },
            )
            .await?;
        }
    }
    Ok(())
}

async fn snapshot(
    client: &mut spore_api::ControlClient,
    state_dir: &Path,
    tx: &mpsc::Sender<Change>,
) -> Result<(), FollowError> {
    // Paged: a reply holds what fits under the message limit, so read until no token is left.
    let mut zones = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_zones(v1::ListZonesRequest {
                states: vec![
                    v1::ZoneState::Starting as i32,
                    v1::ZoneState::Running as i32,
                    v1::ZoneState::Stopping as i32,
                ],
                page_token,
                ..Default::default()
            })
            .await
            .map_err(call("ListZones"))?
            .into_inner();
        zones.extend(page.zones);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    send(
        tx,
        Change::Sync {
            state_dir: state_dir.to_path_buf(),
            zones,
        },
    )
    .await
}

async fn send(tx: &mpsc::Sender<Change>, change: Change) -> Result<(), FollowError> {
    tx.send(change).await.map_err(|_| FollowError::Closed)
}

/// Where QEMU listens for a zone's network (`-netdev stream,server=on` in its zone directory).
pub fn qemu_link(state_dir: &Path, zone_id: &str) -> crate::link::LinkSpec {
    crate::link::LinkSpec::QemuStream {
        path: state_dir.join("zones").join(zone_id).join("net.sock"),
    }
}
