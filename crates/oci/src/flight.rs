//! In-flight operations shared by every caller that asks for the same thing.
//!
//! The first caller for a key starts the work as a spawned task (so it finishes even if that
//! caller goes away); later callers join it. Progress is published through a `watch` channel,
//! so every waiter sees it; the result (or the error, shared) goes to all of them.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::error::{OciError, Result};

#[derive(Debug, Clone)]
pub(crate) enum State<P, T> {
    Running(P),
    Done(Result<T, Arc<OciError>>),
}

type Map<K, P, T> = Arc<Mutex<HashMap<K, watch::Receiver<State<P, T>>>>>;

pub(crate) struct Flights<K, P, T> {
    map: Map<K, P, T>,
}

impl<K, P, T> Default for Flights<K, P, T> {
    fn default() -> Self {
        Flights {
            map: Arc::new(Mutex::new(HashMap::new())),
        }
    }
}

/// What a flight's work uses to publish progress.
pub(crate) type Publisher<P, T> = Arc<watch::Sender<State<P, T>>>;

/// Removes the key when the task ends, even by panic, so a later caller starts afresh.
struct Deregister<K: Eq + Hash, P, T> {
    map: Map<K, P, T>,
    key: Option<K>,
}

impl<K: Eq + Hash, P, T> Drop for Deregister<K, P, T> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.map
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&key);
        }
    }
}

impl<K, P, T> Flights<K, P, T>
where
    K: Eq + Hash + Clone + Send + 'static,
    P: Clone + Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
{
    /// Joins the flight for `key`, or starts one with `work`.
    pub fn join<F, Fut>(&self, key: K, initial: P, work: F) -> watch::Receiver<State<P, T>>
    where
        F: FnOnce(Publisher<P, T>) -> Fut,
        Fut: Future<Output = Result<T>> + Send + 'static,
    {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(rx) = map.get(&key) {
            return rx.clone();
        }
        let (tx, rx) = watch::channel(State::Running(initial));
        map.insert(key.clone(), rx.clone());
        drop(map);
        let tx = Arc::new(tx);
        let fut = work(tx.clone());
        let guard = Deregister {
            map: self.map.clone(),
            key: Some(key),
        };
        tokio::spawn(async move {
            let result = fut.await.map_err(Arc::new);
            drop(guard); // deregister before publishing, so nobody joins a finished flight
            tx.send_replace(State::Done(result));
        });
        rx
    }
}

/// Waits for a flight's result, calling `on_progress` with every progress update seen.
pub(crate) async fn wait<P: Clone, T: Clone>(
    mut rx: watch::Receiver<State<P, T>>,
    mut on_progress: impl FnMut(&P),
) -> Result<T> {
    loop {
        let state = rx.borrow_and_update().clone();
        match state {
            State::Done(Ok(t)) => return Ok(t),
            State::Done(Err(e)) => return Err(unshare(e)),
            State::Running(p) => on_progress(&p),
        }
        if rx.changed().await.is_err() {
            // The sender is gone without a result: the task panicked or was cancelled.
            let state = rx.borrow().clone();
            return match state {
                State::Done(Ok(t)) => Ok(t),
                State::Done(Err(e)) => Err(unshare(e)),
                State::Running(_) => Err(OciError::Worker {
                    doing: "running a shared download or pack",
                }),
            };
        }
    }
}

fn unshare(e: Arc<OciError>) -> OciError {
    // The channel keeps a copy of the result, so this is usually shared.
    match Arc::try_unwrap(e) {
        Ok(e) => e,
        Err(shared) => OciError::Shared(shared),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn concurrent_joins_share_one_run_and_see_progress() {
        let flights: Flights<&'static str, u32, u64> = Flights::default();
        let runs = Arc::new(AtomicUsize::new(0));
        let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
        let r = runs.clone();
        let a = flights.join("k", 0, move |tx| async move {
            r.fetch_add(1, Ordering::SeqCst);
            tx.send_replace(State::Running(5));
            go_rx.await.ok();
            Ok(42)
        });
        let r = runs.clone();
        let b = flights.join("k", 0, move |_| async move {
            r.fetch_add(1, Ordering::SeqCst);
            Ok(7)
        });
        let mut seen = Vec::new();
        let wa = tokio::spawn(wait(a, |_| {}));
        tokio::task::yield_now().await;
        go_tx.send(()).unwrap();
        let vb = wait(b, |p| seen.push(*p)).await.unwrap();
        assert_eq!((wa.await.unwrap().unwrap(), vb), (42, 42));
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert!(seen.iter().all(|p| *p == 0 || *p == 5));

        // After it finished, the key is free again.
        let c = flights.join("k", 0, |_| async { Ok(9) });
        assert_eq!(wait(c, |_| {}).await.unwrap(), 9);
    }

    #[tokio::test]
    async fn errors_reach_every_waiter_and_panics_do_not_wedge() {
        let flights: Flights<u8, (), ()> = Flights::default();
        let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
        let a = flights.join(1, (), move |_| async move {
            go_rx.await.ok();
            Err(OciError::ErofsUnavailable)
        });
        let b = flights.join(1, (), |_| async { Ok(()) });
        go_tx.send(()).unwrap();
        let (ea, eb) = tokio::join!(wait(a, |_| {}), wait(b, |_| {}));
        for e in [ea.unwrap_err(), eb.unwrap_err()] {
            let text = format!(
                "{e} / {:?}",
                std::error::Error::source(&e).map(|s| s.to_string())
            );
            assert!(text.contains("mkfs.erofs"), "{text}");
        }
        let p = flights.join(2, (), |_| async { panic!("boom") });
        let e = wait(p, |_| {}).await.unwrap_err();
        assert!(matches!(e, OciError::Worker { .. }), "{e}");
        let again = flights.join(2, (), |_| async { Ok(()) });
        wait(again, |_| {}).await.unwrap();
    }
}
