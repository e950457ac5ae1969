//! WatchEvents: the retained backlog from a sequence, then live events, no gap, no duplicate.

use std::sync::Arc;

use spore_api::v1;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use super::{Stream_, shutting_down, status};
use crate::daemon::Daemon;
use crate::events::zone_of;

/// Events read from the store per page while replaying.
const PAGE: usize = 512;

pub fn watch(
    daemon: &Arc<Daemon>,
    request: v1::WatchEventsRequest,
    mut shutdown: watch::Receiver<bool>,
) -> Stream_<v1::Event> {
    // Subscribe before reading the backlog: an event committed in between shows up in both and
    // is dropped from the live side by its sequence.
    let mut live = daemon.zones.bus().subscribe();
    let store = daemon.zones.store().clone();
    let queue = daemon.config.events.client_queue;
    let (tx, rx) = mpsc::channel(64);
    let wanted = move |e: &v1::Event| {
        request.zone_id.is_empty() || zone_of(e) == Some(request.zone_id.as_str())
    };
    tokio::spawn(async move {
        let mut last = 0u64;
        if let Some(from) = request.from_sequence {
            let mut next = from;
            loop {
                let page = match store.run(move |s| s.events_from(next, PAGE)).await {
                    Ok(page) => page,
                    Err(e) => {
                        let _ = tx.send(Err(status::from_store(e))).await;
                        return;
                    }
                };
                let full = page.len() == PAGE;
                for event in page {
                    last = event.sequence;
                    next = last + 1;
                    if wanted(&event) && tx.send(Ok(event)).await.is_err() {
                        return;
                    }
                }
                if !full {
                    break;
                }
            }
        }
        loop {
            let event = tokio::select! {
                event = live.next() => event,
                _ = shutting_down(&mut shutdown) => {
                    let _ = tx.send(Err(Status::unavailable("spored is shutting down; reconnect with from_sequence to resume"))).await;
                    return;
                }
                _ = tx.closed() => return,
            };
            match event {
                Ok(Some(event)) => {
                    if event.sequence <= last {
                        continue;
                    }
                    last = event.sequence;
                    if wanted(&event) && tx.send(Ok((*event).clone())).await.is_err() {
                        return;
                    }
                }
                Ok(None) => return,
                Err(lagged) => {
                    let _ = tx
                        .send(Err(Status::resource_exhausted(format!(
                            "this watcher fell more than {queue} events behind ({} missed) and was cut off; reconnect with from_sequence={} to resume",
                            lagged.missed,
                            last + 1
                        ))))
                        .await;
                    return;
                }
            }
        }
    });
    Box::pin(ReceiverStream::new(rx))
}
