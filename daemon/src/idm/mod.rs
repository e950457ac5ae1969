//! The host end of a zone's IDM channel (hvc1). One reader task demultiplexes what the guest
//! sends: events (Started, Exit, Error) go to the zone's driver, answers to requests
//! (metrics) to the caller waiting for them, exec traffic to its session ([`exec`]). One writer
//! task sends requests, exec traffic and the ExitAck, without which spore-init does not power
//! off after its Exit.
//!
//! The reader never waits for an exec client: a session's output goes into a buffer bounded by
//! its flow-control window, so a slow or flooding exec cannot hold back the zone's Exit, its
//! other sessions or a metrics answer (see [`exec`]).
//!
//! The guest is untrusted: the codec bounds every frame, bad frames are skipped and logged
//! (rate-limited by the decoder's resync), what it says is bounded before it is kept, and
//! nothing it sends can panic this task or grow the daemon's memory without bound.

pub mod exec;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use spore_idm::proto::{self, idm_packet::Body};
use spore_idm::{IdmCodec, IdmPacket};
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::Framed;
use uuid::Uuid;

/// What the guest told us.
#[derive(Debug, Clone, PartialEq)]
pub enum GuestEvent {
    /// spore-init started the workload.
    Started(proto::Started),
    /// The workload ended.
    Exit(spore_idm::ExitStatus),
    /// spore-init reports a failure; fatal ones end the zone.
    Error { message: String, fatal: bool },
    /// The channel closed (the VM stopped or the backend went away).
    Closed,
}

/// Why a request to the guest or an exec session failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("the IDM channel to the guest is closed (the zone stopped)")]
    Closed,
    #[error("the guest did not answer within {} s", .0.as_secs())]
    Timeout(Duration),
    #[error("the guest answered: {0}")]
    Guest(String),
    #[error("the guest answered a {asked} request with {got}")]
    Unexpected {
        asked: &'static str,
        got: &'static str,
    },
    #[error("{0} requests are already waiting for this zone's guest; try again")]
    Busy(usize),
    #[error("the zone already runs {0} exec sessions (zones.max_execs_per_zone)")]
    TooManyExecs(usize),
    /// The guest broke the exec protocol (sent past its window); the session was cancelled.
    #[error("{0}")]
    Violation(String),
}

/// How long a request (metrics) may wait for the guest's answer: a guest under TCG on a busy
/// host walks /proc slowly, but an answer that takes longer than this is not coming.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Requests waiting for answers per zone (each caller waits at most [`REQUEST_TIMEOUT`]).
const MAX_PENDING: usize = 256;
/// Packets queued for the writer.
const OUTBOX: usize = 64;

/// Sends requests to one zone's guest. Clones share the channel.
#[derive(Clone)]
pub struct IdmLink {
    shared: Arc<Shared>,
}

struct Shared {
    zone: Uuid,
    tx: mpsc::Sender<IdmPacket>,
    next_request: AtomicU64,
    next_stream: AtomicU64,
    pending: Mutex<HashMap<u64, oneshot::Sender<Body>>>,
    /// Exec sessions by stream id; `None` once the channel closed (no new session then).
    streams: Mutex<Option<HashMap<u64, Arc<exec::Channel>>>>,
    closed: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded maps stay consistent even if a holder panicked.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl IdmLink {
    /// Starts reading `stream`; events go to `events` until the channel closes.
    pub fn spawn(
        zone: Uuid,
        stream: Box<dyn spore_runtime::ByteStream>,
        events: mpsc::Sender<GuestEvent>,
    ) -> IdmLink {
        let (tx, mut rx) = mpsc::channel::<IdmPacket>(OUTBOX);
        let framed = Framed::new(stream, IdmCodec::new());
        let (mut sink, mut stream) = framed.split();
        // Stream ids start at a random point: sessions a previous daemon left behind in the
        // guest (cancelled, but maybe still ending) cannot collide with ours.
        let first_stream = (Uuid::new_v4().as_u64_pair().0 >> 2) | 1;
        let shared = Arc::new(Shared {
            zone,
            tx,
            next_request: AtomicU64::new(1),
            next_stream: AtomicU64::new(first_stream),
            pending: Mutex::new(HashMap::new()),
            streams: Mutex::new(Some(HashMap::new())),
            closed: AtomicBool::new(false),
        });
        tokio::spawn(async move {
            while let Some(packet) = rx.recv().await {
                if let Err(e) = sink.send(packet).await {
                    tracing::debug!(%zone, "IDM send failed: {e}");
                    break;
                }
            }
        });
        let reader = Arc::downgrade(&shared);
        tokio::spawn(async move {
            let mut unknown_streams = 0u64;
            while let Some(item) = stream.next().await {
                let packet = match item {
                    Ok(Ok(packet)) => packet,
                    Ok(Err(e)) => {
                        tracing::warn!(%zone, "IDM: {e}");
                        continue;
                    }
                    Err(e) => {
                        tracing::debug!(%zone, "IDM read failed: {e}");
                        break;
                    }
                };
                let Some(shared) = reader.upgrade() else {
                    // Nobody holds the link: only the driver's events are still of interest.
                    if let Some(event) = event(zone, packet)
                        && events.send(event).await.is_err()
                    {
                        return;
                    }
                    continue;
                };
                let (stream_id, request_id) = (packet.stream_id, packet.request_id);
                if stream_id != 0 {
                    let Some(body) = packet.body else { continue };
                    let channel = lock(&shared.streams)
                        .as_ref()
                        .and_then(|s| s.get(&stream_id).cloned());
                    match channel {
                        Some(channel) => channel.deliver(body, &shared),
                        None => {
                            // Late traffic of a session that ended or was cancelled.
                            unknown_streams += 1;
                            if unknown_streams <= 5 {
                                tracing::debug!(%zone, stream_id, "IDM: message for no exec session, ignored");
                            }
                        }
                    }
                    continue;
                }
                if request_id != 0 {
                    let waiter = lock(&shared.pending).remove(&request_id);
                    if let (Some(waiter), Some(body)) = (waiter, packet.body) {
                        let _ = waiter.send(body);
                    }
                    // Otherwise an answer nobody waits for (ShutdownAck, a late answer).
                    continue;
                }
                drop(shared);
                if let Some(event) = event(zone, packet)
                    && events.send(event).await.is_err()
                {
                    return;
                }
            }
            if let Some(shared) = reader.upgrade() {
                shared.close();
            }
            let _ = events.send(GuestEvent::Closed).await;
        });
        IdmLink { shared }
    }

    pub fn zone(&self) -> Uuid {
        self.shared.zone
    }

    /// Tells spore-init its Exit is recorded, so it may power off. Sent for every Exit read,
    /// duplicates included: the guest re-sends until one ack reaches it.
    pub async fn exit_ack(&self) -> bool {
        let ack = IdmPacket::event(Body::ExitAck(proto::ExitAck {}));
        self.shared.tx.send(ack).await.is_ok()
    }

    /// Asks spore-init to stop the workload: SIGTERM now, SIGKILL after `grace`.
    pub async fn shutdown(&self, grace: Duration) -> bool {
        let id = self.shared.next_request.fetch_add(1, Ordering::Relaxed);
        let body = Body::Shutdown(proto::Shutdown {
            grace_period_ms: grace.as_millis().min(u32::MAX as u128) as u32,
        });
        self.shared
            .tx
            .send(IdmPacket::request(id, body))
            .await
            .is_ok()
    }

    /// Cancels every exec session the guest runs (ExecCancel on stream 0): sent when a daemon
    /// takes over a running zone, whose earlier sessions' clients went away with the old one.
    pub fn cancel_all_execs(&self) {
        self.shared
            .send_soon(IdmPacket::event(Body::ExecCancel(proto::ExecCancel {})));
    }

    /// The guest's memory, CPU and (optionally) process table.
    pub async fn metrics(&self, processes: bool) -> Result<proto::MetricsResponse, LinkError> {
        let body = Body::MetricsRequest(proto::MetricsRequest { processes });
        match self.request(body, REQUEST_TIMEOUT).await? {
            Body::MetricsResponse(metrics) => Ok(metrics),
            Body::Error(e) => Err(LinkError::Guest(bounded(&e.message))),
            other => Err(LinkError::Unexpected {
                asked: "metrics",
                got: IdmPacket::event(other).kind(),
            }),
        }
    }

    /// Sends a request and waits up to `timeout` for the answer with its id.
    async fn request(&self, body: Body, timeout: Duration) -> Result<Body, LinkError> {
        let shared = &self.shared;
        let id = shared.next_request.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut pending = lock(&shared.pending);
            if shared.closed.load(Ordering::Acquire) {
                return Err(LinkError::Closed);
            }
            if pending.len() >= MAX_PENDING {
                return Err(LinkError::Busy(pending.len()));
            }
            pending.insert(id, tx);
        }
        // Removes the entry however this call ends (answered, timed out, cancelled).
        struct Forget<'a>(&'a Shared, u64);
        impl Drop for Forget<'_> {
            fn drop(&mut self) {
                lock(&self.0.pending).remove(&self.1);
            }
        }
        let _forget = Forget(shared, id);
        if shared.tx.send(IdmPacket::request(id, body)).await.is_err() {
            return Err(LinkError::Closed);
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(_)) => Err(LinkError::Closed),
            Err(_) => Err(LinkError::Timeout(timeout)),
        }
    }
}

impl Shared {
    /// Queues a packet without waiting: from places that cannot (the reader, a Drop). A full
    /// queue hands it to a task.
    fn send_soon(&self, packet: IdmPacket) {
        match self.tx.try_send(packet) {
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
            Err(mpsc::error::TrySendError::Full(packet)) => {
                let tx = self.tx.clone();
                if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                    runtime.spawn(async move {
                        let _ = tx.send(packet).await;
                    });
                }
            }
        }
    }

    /// The channel closed: waiting requests fail, sessions end, no new ones start.
    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        lock(&self.pending).clear();
        let streams = lock(&self.streams).take().unwrap_or_default();
        for channel in streams.values() {
            channel.close();
        }
    }
}

/// The driver's view of a packet without ids, or None for one it need not see.
fn event(zone: Uuid, packet: IdmPacket) -> Option<GuestEvent> {
    Some(match packet.body {
        Some(Body::Started(started)) => GuestEvent::Started(started),
        Some(Body::Exit(exit)) => match exit.status() {
            Some(status) => GuestEvent::Exit(status),
            None => {
                tracing::warn!(%zone, "IDM: Exit without a status, ignored");
                return None;
            }
        },
        Some(Body::Error(error)) => GuestEvent::Error {
            message: bounded(&error.message),
            fatal: error.fatal,
        },
        _ => {
            tracing::debug!(%zone, kind = packet.kind(), "IDM: unexpected message, ignored");
            return None;
        }
    })
}

/// The running zones' IDM links, for the API (exec, metrics). The driver registers a zone's
/// link while it supervises the zone.
#[derive(Default)]
pub struct GuestLinks {
    links: Mutex<HashMap<Uuid, IdmLink>>,
}

/// Keeps a link registered; unregisters it when dropped.
pub struct Registration<'a> {
    links: &'a GuestLinks,
    link: IdmLink,
}

impl GuestLinks {
    /// Makes `link` the zone's link until the returned guard is dropped. `adopted`: the zone's
    /// guest was already running under an earlier daemon, whose exec sessions lost their
    /// clients with it: they are cancelled.
    pub fn register(&self, link: &IdmLink, adopted: bool) -> Registration<'_> {
        if adopted {
            link.cancel_all_execs();
        }
        lock(&self.links).insert(link.zone(), link.clone());
        Registration {
            links: self,
            link: link.clone(),
        }
    }

    pub fn get(&self, zone: Uuid) -> Option<IdmLink> {
        lock(&self.links).get(&zone).cloned()
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        let mut links = lock(&self.links.links);
        if links
            .get(&self.link.zone())
            .is_some_and(|l| Arc::ptr_eq(&l.shared, &self.link.shared))
        {
            links.remove(&self.link.zone());
        }
    }
}

/// Guest text kept in status reasons and logs: at most 1 KiB, on a char boundary.
pub fn bounded(text: &str) -> String {
    const MAX: usize = 1024;
    if text.len() <= MAX {
        return text.to_string();
    }
    let mut end = MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

#[cfg(test)]
mod tests;
