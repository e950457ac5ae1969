//! Live event fan-out. Events are made durable by the store first (which gives them their
//! sequence); this bus only carries them to watchers that are connected right now.
//!
//! A watcher subscribes before it reads the backlog from the store and drops live events it
//! already replayed, so the hand-over has no gap and no duplicate. A watcher that falls more
//! than `capacity` events behind is told so ([`Lagged`]) and cut off; the daemon never waits
//! for it.

use std::sync::Arc;

use spore_api::v1;
use tokio::sync::broadcast;

/// The sender side, shared by everything that commits events.
#[derive(Clone)]
pub struct EventBus {
    tx: broadcast::Sender<Arc<v1::Event>>,
}

/// A watcher fell too far behind and missed events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lagged {
    pub missed: u64,
}

/// One watcher's live feed.
pub struct Subscription {
    rx: broadcast::Receiver<Arc<v1::Event>>,
}

impl EventBus {
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(1));
        EventBus { tx }
    }

    /// Publishes committed events (no one listening is fine).
    pub fn publish(&self, events: impl IntoIterator<Item = v1::Event>) {
        for event in events {
            let _ = self.tx.send(Arc::new(event));
        }
    }

    pub fn subscribe(&self) -> Subscription {
        Subscription {
            rx: self.tx.subscribe(),
        }
    }

    pub fn watchers(&self) -> usize {
        self.tx.receiver_count()
    }
}

impl Subscription {
    /// The next live event; `Ok(None)` when the bus is gone (daemon shutting down).
    pub async fn next(&mut self) -> Result<Option<Arc<v1::Event>>, Lagged> {
        match self.rx.recv().await {
            Ok(event) => Ok(Some(event)),
            Err(broadcast::error::RecvError::Closed) => Ok(None),
            Err(broadcast::error::RecvError::Lagged(missed)) => Err(Lagged { missed }),
        }
    }
}

/// The zone id an event is about, if any.
pub fn zone_of(event: &v1::Event) -> Option<&str> {
    match &event.kind {
        Some(v1::event::Kind::ZoneStateChanged(change)) => Some(&change.zone_id),
        Some(v1::event::Kind::ZoneResourcesChanged(change)) => Some(&change.zone_id),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(sequence: u64) -> v1::Event {
        v1::Event {
            sequence,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn slow_watcher_is_told_it_lagged_and_others_are_unaffected() {
        let bus = EventBus::new(4);
        let mut slow = bus.subscribe();
        let mut fast = bus.subscribe();
        for i in 1..=3 {
            bus.publish([ev(i)]);
            assert_eq!(fast.next().await.unwrap().unwrap().sequence, i);
        }
        for i in 4..=10 {
            bus.publish([ev(i)]);
            assert_eq!(fast.next().await.unwrap().unwrap().sequence, i);
        }
        assert_eq!(slow.next().await.unwrap_err(), Lagged { missed: 6 });
    }
}
