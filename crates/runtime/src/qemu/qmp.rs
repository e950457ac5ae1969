//! A zone's QMP monitor: one connection per QEMU, kept by a task that records why the VM shut
//! down (the `SHUTDOWN` event's reason) and carries the `quit` command.
//!
//! QEMU serves one QMP client at a time, so everything goes through this task.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::codec::{FramedRead, LinesCodec};

use crate::qemu::process::QemuProcess;

/// The longest accepted QMP line; QEMU's replies to our commands are far shorter.
const MAX_LINE: usize = 64 * 1024;

/// The monitor of one QEMU process.
#[derive(Debug)]
pub struct Monitor {
    quit: mpsc::Sender<oneshot::Sender<Result<(), String>>>,
    cause: watch::Receiver<Option<String>>,
    task: JoinHandle<()>,
}

impl Monitor {
    /// Starts the monitor task; it ends when the process has exited and the connection closed.
    pub fn spawn(path: PathBuf, process: Arc<QemuProcess>) -> Monitor {
        let (quit_tx, quit_rx) = mpsc::channel(4);
        let (cause_tx, cause) = watch::channel(None);
        let task = tokio::spawn(run(path, process, quit_rx, cause_tx));
        Monitor {
            quit: quit_tx,
            cause,
            task,
        }
    }

    /// Asks QEMU to quit; resolves when QEMU acknowledged it.
    pub async fn quit(&self, timeout: Duration) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        self.quit
            .send(tx)
            .await
            .map_err(|_| "the QMP monitor has ended".to_string())?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err("the QMP connection closed before QEMU answered".into()),
            Err(_) => Err(format!(
                "QEMU did not answer quit within {} ms",
                timeout.as_millis()
            )),
        }
    }

    /// The reason of QEMU's `SHUTDOWN` event (`guest-shutdown`, `guest-reset`, `host-qmp-quit`,
    /// ...), once the monitor has read the events QEMU sent before exiting (at most `grace`).
    pub async fn shutdown_cause(&mut self, grace: Duration) -> Option<String> {
        let _ = tokio::time::timeout(grace, &mut self.task).await;
        self.cause.borrow().clone()
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn run(
    path: PathBuf,
    process: Arc<QemuProcess>,
    mut quits: mpsc::Receiver<oneshot::Sender<Result<(), String>>>,
    cause: watch::Sender<Option<String>>,
) {
    loop {
        let stream = match UnixStream::connect(&path).await {
            Ok(s) => s,
            Err(e) => {
                if process.has_exited() {
                    return;
                }
                tracing::debug!("QMP {} not ready: {e}", path.display());
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if let Err(e) = serve(stream, &mut quits, &cause).await {
            tracing::debug!("QMP {}: {e}", path.display());
        }
        if process.has_exited() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One QMP session: greeting, capabilities negotiation, then events and our commands.
async fn serve(
    stream: UnixStream,
    quits: &mut mpsc::Receiver<oneshot::Sender<Result<(), String>>>,
    cause: &watch::Sender<Option<String>>,
) -> Result<(), String> {
    let (read, mut write) = stream.into_split();
    let mut lines = FramedRead::new(read, LinesCodec::new_with_max_length(MAX_LINE));
    let mut pending: Option<oneshot::Sender<Result<(), String>>> = None;
    write
        .write_all(b"{\"execute\":\"qmp_capabilities\",\"id\":\"caps\"}\n")
        .await
        .map_err(|e| format!("write: {e}"))?;
    loop {
        tokio::select! {
            // FramedRead keeps partial lines across select! iterations (cancel-safe).
            read = lines.next() => {
                let line = match read {
                    None => return Ok(()),
                    Some(Ok(line)) => line,
                    Some(Err(e)) => return Err(format!("read: {e}")),
                };
                let Ok(msg) = serde_json::from_str::<Value>(&line) else {
                    return Err(format!("QMP sent something that is not JSON: {}", line.trim()));
                };
                if msg["event"] == "SHUTDOWN" {
                    let reason = msg["data"]["reason"].as_str().unwrap_or("unknown").to_string();
                    cause.send_replace(Some(reason));
                } else if msg["id"] == "quit" {
                    let result = match msg.get("error") {
                        Some(err) => Err(err["desc"].as_str().unwrap_or("QMP error").to_string()),
                        None => Ok(()),
                    };
                    if let Some(reply) = pending.take() {
                        let _ = reply.send(result);
                    }
                }
            }
            Some(reply) = quits.recv() => {
                write
                    .write_all(b"{\"execute\":\"quit\",\"id\":\"quit\"}\n")
                    .await
                    .map_err(|e| format!("write: {e}"))?;
                pending = Some(reply);
            }
        }
    }
}
