//! A zone's QMP monitor: one connection per QEMU, kept by a task that records why the VM shut
//! down (the `SHUTDOWN` event's reason), notices a VM that QEMU stopped for good (run state
//! `internal-error`, `guest-panicked`, `io-error`: QEMU then lives on with a dead guest, so
//! nothing else would ever end the zone), and carries the `quit` command.
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

/// Run states in which the guest can never run again (QEMU's `RunState`): a KVM emulation
/// failure, a panic reported by the guest, a disk error with `werror=stop`.
const DEAD_STATES: [&str; 3] = ["internal-error", "guest-panicked", "io-error"];

/// The monitor of one QEMU process.
#[derive(Debug)]
pub struct Monitor {
    quit: mpsc::Sender<oneshot::Sender<Result<(), String>>>,
    cause: watch::Receiver<Option<String>>,
    dead: watch::Receiver<Option<String>>,
    task: JoinHandle<()>,
}

impl Monitor {
    /// Starts the monitor task; it ends when the process has exited and the connection closed.
    pub fn spawn(path: PathBuf, process: Arc<QemuProcess>) -> Monitor {
        let (quit_tx, quit_rx) = mpsc::channel(4);
        let (cause_tx, cause) = watch::channel(None);
        let (dead_tx, dead) = watch::channel(None);
        let events = Events {
            cause: cause_tx,
            dead: dead_tx,
        };
        let task = tokio::spawn(run(path, process, quit_rx, events));
        Monitor {
            quit: quit_tx,
            cause,
            dead,
            task,
        }
    }

    /// Becomes `Some(run state)` once QEMU has stopped the guest for good (see [`DEAD_STATES`]).
    pub fn dead(&self) -> watch::Receiver<Option<String>> {
        self.dead.clone()
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

/// What the monitor task reports.
struct Events {
    /// The `SHUTDOWN` event's reason.
    cause: watch::Sender<Option<String>>,
    /// A run state from [`DEAD_STATES`].
    dead: watch::Sender<Option<String>>,
}

async fn run(
    path: PathBuf,
    process: Arc<QemuProcess>,
    mut quits: mpsc::Receiver<oneshot::Sender<Result<(), String>>>,
    events: Events,
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
        if let Err(e) = serve(stream, &mut quits, &events).await {
            tracing::debug!("QMP {}: {e}", path.display());
        }
        if process.has_exited() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One QMP session: greeting, capabilities negotiation, the run state as it is now (the VM
/// may have stopped before we connected), then events and our commands.
async fn serve(
    stream: UnixStream,
    quits: &mut mpsc::Receiver<oneshot::Sender<Result<(), String>>>,
    events: &Events,
) -> Result<(), String> {
    const QUERY_STATUS: &[u8] = b"{\"execute\":\"query-status\",\"id\":\"status\"}\n";
    let (read, mut write) = stream.into_split();
    let mut lines = FramedRead::new(read, LinesCodec::new_with_max_length(MAX_LINE));
    let mut pending: Option<oneshot::Sender<Result<(), String>>> = None;
    write
        .write_all(b"{\"execute\":\"qmp_capabilities\",\"id\":\"caps\"}\n")
        .await
        .map_err(|e| format!("write: {e}"))?;
    write
        .write_all(QUERY_STATUS)
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
                    events.cause.send_replace(Some(reason));
                } else if msg["event"] == "STOP" || msg["event"] == "GUEST_PANICKED" {
                    // STOP carries no state: ask which one.
                    write.write_all(QUERY_STATUS).await.map_err(|e| format!("write: {e}"))?;
                } else if msg["id"] == "status" {
                    if let Some(state) = msg["return"]["status"].as_str()
                        && DEAD_STATES.contains(&state)
                    {
                        events.dead.send_replace(Some(state.to_string()));
                    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, BufReader};
    use tokio::net::UnixListener;

    /// A QMP peer in the test: greets, answers `query-status` with `status_after_stop` once it
    /// has sent a STOP event, and `running` before.
    async fn qmp_peer(listener: UnixListener, status_after_stop: &'static str) {
        let (stream, _) = listener.accept().await.unwrap();
        let (read, mut write) = stream.into_split();
        write
            .write_all(b"{\"QMP\": {\"version\": {}, \"capabilities\": []}}\n")
            .await
            .unwrap();
        let mut lines = BufReader::new(read).lines();
        let mut stopped = false;
        while let Ok(Some(line)) = lines.next_line().await {
            let msg: Value = serde_json::from_str(&line).unwrap();
            let reply = match msg["execute"].as_str() {
                Some("query-status") => {
                    let status = if stopped {
                        status_after_stop
                    } else {
                        "running"
                    };
                    format!(
                        "{{\"return\": {{\"status\": \"{status}\", \"running\": {}}}, \"id\": \"status\"}}\n",
                        !stopped
                    )
                }
                _ => format!("{{\"return\": {{}}, \"id\": {}}}\n", msg["id"]),
            };
            write.write_all(reply.as_bytes()).await.unwrap();
            if !stopped {
                stopped = true;
                write
                    .write_all(b"{\"event\": \"STOP\", \"data\": {}, \"timestamp\": {}}\n")
                    .await
                    .unwrap();
            }
        }
    }

    async fn watch_dead(status_after_stop: &'static str) -> Option<String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qmp.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let peer = tokio::spawn(qmp_peer(listener, status_after_stop));
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let process = Arc::new(QemuProcess::child(child.id() as i32).unwrap());
        let monitor = Monitor::spawn(path, process.clone());
        let mut dead = monitor.dead();
        let seen = tokio::time::timeout(Duration::from_secs(2), dead.wait_for(Option::is_some))
            .await
            .ok()
            .map(|s| s.unwrap().clone().unwrap());
        process.kill();
        child.wait().unwrap();
        peer.abort();
        seen
    }

    #[tokio::test]
    async fn a_guest_stopped_for_good_is_reported() {
        assert_eq!(
            watch_dead("internal-error").await.as_deref(),
            Some("internal-error")
        );
        assert_eq!(
            watch_dead("guest-panicked").await.as_deref(),
            Some("guest-panicked")
        );
    }

    #[tokio::test]
    async fn a_pause_is_not_a_death() {
        // `stop` from an operator, or a debugger: the guest can continue.
        assert_eq!(watch_dead("paused").await, None);
    }
}
