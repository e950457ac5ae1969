//! Per-zone console hub: spored reads the zone's console (hvc0) for the zone's whole life into
//! a bounded on-disk log and fans it out to attached clients.
//!
//! The log is two files, `console.log` and `console.log.1`: when the current file reaches half
//! the limit it becomes `.1` (replacing the older one), so the pair never holds more than the
//! configured size and always holds at least the last half of it. Every byte has an offset
//! (counted from the hub's creation); readers that replay the log and then follow live output
//! use it to skip what they already sent.
//!
//! Guest output is untrusted: it is only ever copied, in bounded chunks.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use spore_api::v1;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{broadcast, mpsc, watch};

/// Live output chunks buffered per client before it is considered too slow.
const LIVE_CHUNKS: usize = 1024;
/// Bytes read from the console per chunk.
const READ_CHUNK: usize = 16 * 1024;

/// A piece of console output and where it starts in the log.
#[derive(Debug, Clone)]
pub struct Chunk {
    pub offset: u64,
    pub data: Bytes,
}

/// The console of one zone.
pub struct ConsoleHub {
    log: Mutex<ConsoleLog>,
    live: broadcast::Sender<Chunk>,
    input: Mutex<Option<mpsc::Sender<Bytes>>>,
    /// Set once the zone has exited (or failed): attach streams end with this.
    exit: watch::Sender<Option<Ending>>,
}

/// How a zone's console ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Ending {
    Exited(v1::ExitStatus),
    /// The zone failed or was destroyed without an exit status.
    Gone(String),
}

struct ConsoleLog {
    dir: PathBuf,
    max_bytes: u64,
    current: Option<File>,
    current_len: u64,
    /// Offset of the end of the log.
    written: u64,
}

impl ConsoleHub {
    /// A hub logging into `dir` (the zone's directory), keeping at most `max_bytes`.
    pub fn open(dir: &Path, max_bytes: u64) -> std::io::Result<Arc<ConsoleHub>> {
        let current_len = file_len(&dir.join("console.log"));
        let previous_len = file_len(&dir.join("console.log.1"));
        let (live, _) = broadcast::channel(LIVE_CHUNKS);
        let (exit, _) = watch::channel(None);
        Ok(Arc::new(ConsoleHub {
            log: Mutex::new(ConsoleLog {
                dir: dir.to_path_buf(),
                max_bytes: max_bytes.max(2),
                current: None,
                current_len,
                written: current_len + previous_len,
            }),
            live,
            input: Mutex::new(None),
            exit,
        }))
    }

    /// Copies the console stream into the log until it closes, and forwards attached
    /// clients' input into it. Returns when the guest side is gone.
    pub async fn pump(self: Arc<Self>, stream: Box<dyn spore_runtime::ByteStream>) {
        let (mut reader, mut writer) = tokio::io::split(stream);
        let (input_tx, mut input_rx) = mpsc::channel::<Bytes>(64);
        *self.input.lock().unwrap_or_else(|e| e.into_inner()) = Some(input_tx);
        let writer_task = tokio::spawn(async move {
            while let Some(data) = input_rx.recv().await {
                if writer.write_all(&data).await.is_err() {
                    break;
                }
            }
        });
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    // The log write (and its rotation) is file I/O: on the blocking pool, in
                    // order, one chunk at a time (the guest waits while we write).
                    let hub = self.clone();
                    let data = buf[..n].to_vec();
                    if tokio::task::spawn_blocking(move || hub.append(&data))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
        self.input.lock().unwrap_or_else(|e| e.into_inner()).take();
        writer_task.abort();
    }

    /// Appends output to the log and publishes it.
    pub fn append(&self, data: &[u8]) {
        let offset = {
            let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
            let offset = log.written;
            if let Err(e) = log.write(data) {
                tracing::warn!(dir = %log.dir.display(), "console log write failed: {e}");
            }
            offset
        };
        let _ = self.live.send(Chunk {
            offset,
            data: Bytes::copy_from_slice(data),
        });
    }

    /// Sends input to the console; false when the console is not connected.
    pub async fn input(&self, data: Bytes) -> bool {
        let tx = self.input.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match tx {
            Some(tx) => tx.send(data).await.is_ok(),
            None => false,
        }
    }

    /// The stored log and the offset of its end, with a live subscription that starts right
    /// after it (chunks at lower offsets must be skipped with [`skip_seen`]).
    pub fn snapshot_and_follow(&self) -> (Vec<u8>, u64, broadcast::Receiver<Chunk>) {
        let rx = self.live.subscribe();
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        let data = log.read_all();
        (data, log.written, rx)
    }

    /// Live output from now on, and the current end offset.
    pub fn follow(&self) -> (u64, broadcast::Receiver<Chunk>) {
        let rx = self.live.subscribe();
        let end = self.log.lock().unwrap_or_else(|e| e.into_inner()).written;
        (end, rx)
    }

    pub fn read_log(&self) -> Vec<u8> {
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .read_all()
    }

    /// Marks how the zone ended; attach and follow streams finish after it.
    pub fn end(&self, ending: Ending) {
        self.exit.send_replace(Some(ending));
    }

    pub fn ending(&self) -> watch::Receiver<Option<Ending>> {
        self.exit.subscribe()
    }
}

/// The part of `chunk` at or after `from` (None when all of it was already sent).
pub fn skip_seen(chunk: &Chunk, from: u64) -> Option<Bytes> {
    let end = chunk.offset + chunk.data.len() as u64;
    if end <= from {
        return None;
    }
    let skip = from.saturating_sub(chunk.offset) as usize;
    Some(chunk.data.slice(skip..))
}

/// The last `lines` lines of `data` (a trailing partial line counts as a line).
pub fn tail_lines(data: &[u8], lines: u32) -> &[u8] {
    if lines == 0 {
        return &data[data.len()..];
    }
    let body = data.strip_suffix(b"\n").unwrap_or(data);
    let mut seen = 0;
    for (i, b) in body.iter().enumerate().rev() {
        if *b == b'\n' {
            seen += 1;
            if seen == lines {
                return &data[i + 1..];
            }
        }
    }
    data
}

impl ConsoleLog {
    fn write(&mut self, mut data: &[u8]) -> std::io::Result<()> {
        let half = self.max_bytes / 2;
        while !data.is_empty() {
            if self.current_len >= half {
                self.rotate()?;
            }
            let room = (half - self.current_len).max(1) as usize;
            let (now, rest) = data.split_at(room.min(data.len()));
            let file = match &mut self.current {
                Some(f) => f,
                None => self.current.insert(
                    OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(self.dir.join("console.log"))?,
                ),
            };
            file.write_all(now)?;
            self.current_len += now.len() as u64;
            self.written += now.len() as u64;
            data = rest;
        }
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        self.current = None;
        std::fs::rename(self.dir.join("console.log"), self.dir.join("console.log.1"))?;
        self.current_len = 0;
        Ok(())
    }

    fn read_all(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for name in ["console.log.1", "console.log"] {
            if let Ok(mut f) = File::open(self.dir.join(name)) {
                // Bounded by max_bytes: each file is at most half of it.
                let _ = f.seek(SeekFrom::Start(0));
                let _ = f.take(self.max_bytes).read_to_end(&mut out);
            }
        }
        out
    }
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_never_exceeds_its_limit_and_keeps_the_newest_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let hub = ConsoleHub::open(dir.path(), 100).unwrap();
        let mut all = Vec::new();
        for i in 0..50u8 {
            let line = format!("line {i:03}\n");
            hub.append(line.as_bytes());
            all.extend_from_slice(line.as_bytes());
        }
        let log = hub.read_log();
        assert!(log.len() <= 100, "{}", log.len());
        assert!(log.len() >= 50, "{}", log.len());
        assert!(all.ends_with(&log));
        let on_disk =
            file_len(&dir.path().join("console.log")) + file_len(&dir.path().join("console.log.1"));
        assert!(on_disk <= 100);
    }

    #[test]
    fn reopened_hub_continues_the_log() {
        let dir = tempfile::tempdir().unwrap();
        ConsoleHub::open(dir.path(), 1000)
            .unwrap()
            .append(b"before\n");
        let hub = ConsoleHub::open(dir.path(), 1000).unwrap();
        hub.append(b"after\n");
        assert_eq!(hub.read_log(), b"before\nafter\n");
    }

    #[tokio::test]
    async fn snapshot_then_follow_has_no_gap_and_no_duplicate() {
        let dir = tempfile::tempdir().unwrap();
        let hub = ConsoleHub::open(dir.path(), 1 << 20).unwrap();
        hub.append(b"one\n");
        let (data, end, mut rx) = hub.snapshot_and_follow();
        hub.append(b"two\n");
        assert_eq!(data, b"one\n");
        let chunk = rx.recv().await.unwrap();
        assert_eq!(
            skip_seen(&chunk, end).unwrap(),
            Bytes::from_static(b"two\n")
        );
        // A chunk straddling the snapshot end is cut, one wholly before it is dropped.
        let straddle = Chunk {
            offset: end - 2,
            data: Bytes::from_static(b"e\nXY"),
        };
        assert_eq!(
            skip_seen(&straddle, end).unwrap(),
            Bytes::from_static(b"XY")
        );
        let old = Chunk {
            offset: 0,
            data: Bytes::from_static(b"one\n"),
        };
        assert!(skip_seen(&old, end).is_none());
    }

    #[test]
    fn tail_counts_lines_from_the_end() {
        assert_eq!(tail_lines(b"a\nb\nc\n", 2), b"b\nc\n");
        assert_eq!(tail_lines(b"a\nb\nc", 2), b"b\nc");
        assert_eq!(tail_lines(b"a\nb\n", 5), b"a\nb\n");
        assert_eq!(tail_lines(b"a\nb\n", 0), b"");
        assert_eq!(tail_lines(b"", 3), b"");
    }

    #[tokio::test]
    async fn pump_logs_output_and_forwards_input() {
        let dir = tempfile::tempdir().unwrap();
        let hub = ConsoleHub::open(dir.path(), 1 << 20).unwrap();
        let (guest, host) = tokio::io::duplex(1024);
        let pump = tokio::spawn(hub.clone().pump(Box::new(host)));
        let (mut guest_r, mut guest_w) = tokio::io::split(guest);
        guest_w.write_all(b"hello\n").await.unwrap();
        // Input goes through once the pump registered its writer.
        let mut sent = false;
        for _ in 0..100 {
            if hub.input(Bytes::from_static(b"typed")).await {
                sent = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(sent);
        let mut buf = [0u8; 5];
        guest_r.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"typed");
        drop(guest_w);
        drop(guest_r);
        pump.await.unwrap();
        assert_eq!(hub.read_log(), b"hello\n");
        assert!(!hub.input(Bytes::from_static(b"late")).await);
    }
}
