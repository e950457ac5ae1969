//! The host end of a zone's IDM channel (hvc1): decodes the guest's frames into
//! [`GuestEvent`]s for the zone's driver and sends requests (Shutdown) and ExitAck, without
//! which spore-init does not power off after its Exit.
//!
//! The guest is untrusted: the codec bounds every frame, bad frames are skipped and logged
//! (rate-limited by the decoder's resync), and nothing the guest sends can panic this task.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::{SinkExt, StreamExt};
use spore_idm::proto::{self, idm_packet::Body};
use spore_idm::{IdmCodec, IdmPacket};
use tokio::sync::mpsc;
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

/// Sends requests to one zone's guest.
#[derive(Clone)]
pub struct IdmLink {
    tx: mpsc::Sender<IdmPacket>,
    next_request: Arc<AtomicU64>,
}

impl IdmLink {
    /// Starts reading `stream`; events go to `events` until the channel closes.
    pub fn spawn(
        zone: Uuid,
        stream: Box<dyn spore_runtime::ByteStream>,
        events: mpsc::Sender<GuestEvent>,
    ) -> IdmLink {
        let (tx, mut rx) = mpsc::channel::<IdmPacket>(16);
        let framed = Framed::new(stream, IdmCodec::new());
        let (mut sink, mut stream) = framed.split();
        tokio::spawn(async move {
            while let Some(packet) = rx.recv().await {
                if let Err(e) = sink.send(packet).await {
                    tracing::debug!(%zone, "IDM send failed: {e}");
                    break;
                }
            }
        });
        tokio::spawn(async move {
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
                let event = match packet.body {
                    Some(Body::Started(started)) => GuestEvent::Started(started),
                    Some(Body::Exit(exit)) => match exit.status() {
                        Some(status) => GuestEvent::Exit(status),
                        None => {
                            tracing::warn!(%zone, "IDM: Exit without a status, ignored");
                            continue;
                        }
                    },
                    Some(Body::Error(error)) => GuestEvent::Error {
                        message: bounded(&error.message),
                        fatal: error.fatal,
                    },
                    Some(Body::Pong(_)) | Some(Body::ShutdownAck(_)) => continue,
                    _ => {
                        tracing::debug!(%zone, kind = packet.kind(), "IDM: unexpected message, ignored");
                        continue;
                    }
                };
                if events.send(event).await.is_err() {
                    return;
                }
            }
            let _ = events.send(GuestEvent::Closed).await;
        });
        IdmLink {
            tx,
            next_request: Arc::new(AtomicU64::new(1)),
        }
    }

    /// Tells spore-init its Exit is recorded, so it may power off. Sent for every Exit read,
    /// duplicates included: the guest re-sends until one ack reaches it.
    pub async fn exit_ack(&self) -> bool {
        let ack = IdmPacket::event(Body::ExitAck(proto::ExitAck {}));
        self.tx.send(ack).await.is_ok()
    }

    /// Asks spore-init to stop the workload: SIGTERM now, SIGKILL after `grace`.
    pub async fn shutdown(&self, grace: std::time::Duration) -> bool {
        let id = self.next_request.fetch_add(1, Ordering::Relaxed);
        let body = Body::Shutdown(proto::Shutdown {
            grace_period_ms: grace.as_millis().min(u32::MAX as u128) as u32,
        });
        self.tx.send(IdmPacket::request(id, body)).await.is_ok()
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
mod tests {
    use super::*;

    #[tokio::test]
    async fn decodes_guest_events_and_skips_garbage() {
        let (guest, host) = tokio::io::duplex(1 << 16);
        let (tx, mut rx) = mpsc::channel(8);
        let _link = IdmLink::spawn(Uuid::nil(), Box::new(host), tx);
        let mut guest = Framed::new(guest, IdmCodec::new());
        use tokio::io::AsyncWriteExt;
        guest
            .get_mut()
            .write_all(b"\x05\x00\x00\x00garbage")
            .await
            .unwrap();
        guest
            .send(IdmPacket::event(Body::Started(proto::Started {
                workload_pid: 2,
                ..Default::default()
            })))
            .await
            .unwrap();
        guest
            .send(IdmPacket::event(Body::Exit(proto::Exit {
                status: Some(proto::exit::Status::Signal(9)),
                core_dumped: false,
            })))
            .await
            .unwrap();
        drop(guest);
        assert!(matches!(rx.recv().await, Some(GuestEvent::Started(s)) if s.workload_pid == 2));
        assert_eq!(
            rx.recv().await,
            Some(GuestEvent::Exit(spore_idm::ExitStatus::Signal {
                signal: 9,
                core_dumped: false
            }))
        );
        assert_eq!(rx.recv().await, Some(GuestEvent::Closed));
    }

    #[test]
    fn bounded_cuts_long_guest_text_on_a_char_boundary() {
        let long = "é".repeat(1000);
        let cut = bounded(&long);
        assert!(cut.len() <= 1027);
        assert!(cut.ends_with("..."));
    }
}
