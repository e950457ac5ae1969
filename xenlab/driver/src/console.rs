//! A zone's console, collected by a reader task with the arrival time of every chunk; each
//! line is also printed as `GUEST| ...`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use spore_runtime::ByteStream;
use tokio::io::AsyncReadExt;

#[derive(Clone, Default)]
pub struct Console {
    text: Arc<Mutex<String>>,
    first: Arc<Mutex<Option<Instant>>>,
    /// (arrival, length of `text` after the chunk)
    chunks: Arc<Mutex<Vec<(Instant, usize)>>>,
}

impl Console {
    pub fn spawn(mut stream: Box<dyn ByteStream>) -> Console {
        let c = Console::default();
        let out = c.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stream.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                let now = Instant::now();
                out.first.lock().unwrap().get_or_insert(now);
                let s = String::from_utf8_lossy(&buf[..n]).into_owned();
                for line in s.lines() {
                    println!("GUEST| {line}");
                }
                let mut text = out.text.lock().unwrap();
                text.push_str(&s);
                out.chunks.lock().unwrap().push((now, text.len()));
            }
        });
        c
    }

    pub fn contains(&self, s: &str) -> bool {
        self.text.lock().unwrap().contains(s)
    }

    pub fn text(&self) -> String {
        self.text.lock().unwrap().clone()
    }

    /// When the first byte arrived.
    pub fn first(&self) -> Option<Instant> {
        *self.first.lock().unwrap()
    }

    /// When `s` arrived (its last byte), if it has.
    pub fn time_of(&self, s: &str) -> Option<Instant> {
        let end = self.text.lock().unwrap().find(s)? + s.len();
        let chunks = self.chunks.lock().unwrap();
        chunks.iter().find(|(_, len)| *len >= end).map(|(t, _)| *t)
    }

    pub async fn wait_for(&self, s: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while !self.contains(s) {
            ensure!(
                Instant::now() < deadline,
                "console never showed {s:?} in {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }
}
