//! Progress of a pull or import, shaped like the control API's `PullProgress` (one snapshot
//! per event: the overall phase, every layer's phase and bytes, a message) but independent of it.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::digest::Digest;

/// Where a pull, or one layer of it, is.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Resolving,
    Downloading,
    Verifying,
    Packing,
    Done,
}

/// One layer's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerProgress {
    pub digest: Digest,
    pub phase: Phase,
    /// Bytes downloaded (downloading, verifying) or read while unpacking (packing).
    pub current_bytes: u64,
    /// The layer blob's size.
    pub total_bytes: u64,
}

/// A snapshot of the whole operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    pub phase: Phase,
    pub layers: Vec<LayerProgress>,
    /// Human-readable detail ("resolved to sha256:...", "cache hit").
    pub message: String,
}

/// Receives progress snapshots. Called from the pulling task; keep it quick (e.g. push into a
/// channel).
pub trait ProgressSink: Send + Sync {
    fn report(&self, progress: &Progress);
}

/// Ignores progress.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl ProgressSink for NoProgress {
    fn report(&self, _: &Progress) {}
}

impl<F: Fn(&Progress) + Send + Sync> ProgressSink for F {
    fn report(&self, progress: &Progress) {
        self(progress)
    }
}

impl ProgressSink for tokio::sync::mpsc::UnboundedSender<Progress> {
    fn report(&self, progress: &Progress) {
        let _ = self.send(progress.clone());
    }
}

/// Forwards snapshots to a sink: phase changes and messages at once, byte counts at most every
/// 100 ms, identical snapshots never.
pub(crate) struct Reporter<'a> {
    sink: &'a dyn ProgressSink,
    state: Mutex<(Option<Progress>, Instant)>,
}

const BYTES_INTERVAL: Duration = Duration::from_millis(100);

impl<'a> Reporter<'a> {
    pub fn new(sink: &'a dyn ProgressSink) -> Reporter<'a> {
        Reporter {
            sink,
            state: Mutex::new((None, Instant::now())),
        }
    }

    pub fn report(&self, p: Progress) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (last, at) = &mut *state;
        if let Some(last) = last.as_ref() {
            if *last == p {
                return;
            }
            let same_shape = last.phase == p.phase
                && last.message == p.message
                && last.layers.len() == p.layers.len()
                && last
                    .layers
                    .iter()
                    .zip(&p.layers)
                    .all(|(a, b)| a.phase == b.phase && a.digest == b.digest);
            if same_shape && at.elapsed() < BYTES_INTERVAL {
                return;
            }
        }
        self.sink.report(&p);
        *last = Some(p);
        *at = Instant::now();
    }

    pub fn message(&self, phase: Phase, layers: Vec<LayerProgress>, message: impl Into<String>) {
        self.report(Progress {
            phase,
            layers,
            message: message.into(),
        })
    }
}
