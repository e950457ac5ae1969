//! The QEMU process of a zone, found through its pidfile and held by a pidfd.
//!
//! A pidfd names one process for good: signals sent through it can never hit a recycled pid,
//! and it becomes readable when that process exits, whether or not it is our child (after a
//! spored restart it is not).

use std::os::fd::OwnedFd;
use std::path::Path;

use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::process::{Pid, PidfdFlags, Signal, pidfd_open, pidfd_send_signal};
use tokio::io::unix::AsyncFd;

/// A running QEMU that belongs to a zone.
#[derive(Debug)]
pub struct QemuProcess {
    pid: i32,
    pidfd: AsyncFd<OwnedFd>,
}

impl QemuProcess {
    /// Takes hold of process `pid` if it is alive, not a zombie, and its command line carries
    /// `marker` as one argument's prefix (the zone's `-name`): a recycled pid is never ours.
    pub fn adopt(pid: i32, marker: &str) -> Option<QemuProcess> {
        let raw = Pid::from_raw(pid)?;
        // Open first, then check: the pidfd pins the process the check looks at.
        let fd = pidfd_open(raw, PidfdFlags::empty()).ok()?;
        if !is_alive(pid) || !cmdline_has(pid, marker) {
            return None;
        }
        let pidfd = super::sys::async_pidfd(fd).ok()?;
        Some(QemuProcess { pid, pidfd })
    }

    /// Takes hold of our own just-spawned child. Its command line is not checked: right after
    /// spawn the kernel may still be setting it up (it reads as empty).
    pub fn child(pid: i32) -> Option<QemuProcess> {
        let fd = pidfd_open(Pid::from_raw(pid)?, PidfdFlags::empty()).ok()?;
        let pidfd = super::sys::async_pidfd(fd).ok()?;
        Some(QemuProcess { pid, pidfd })
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Resolves once the process has exited.
    pub async fn exited(&self) {
        loop {
            match self.pidfd.readable().await {
                // Readable means exited; the guard is dropped, not cleared, so later waits
                // return at once as well.
                Ok(_guard) => return,
                Err(e) => {
                    tracing::warn!(pid = self.pid, "waiting on the pidfd of QEMU failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    if !is_alive(self.pid) {
                        return;
                    }
                }
            }
        }
    }

    /// True once the process has exited (the pidfd polls readable).
    pub fn has_exited(&self) -> bool {
        let mut fds = [PollFd::new(self.pidfd.get_ref(), PollFlags::IN)];
        let now = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        matches!(poll(&mut fds, Some(&now)), Ok(n) if n > 0)
    }

    /// Sends SIGKILL (no-op once the process is gone).
    pub fn kill(&self) {
        let _ = pidfd_send_signal(self.pidfd.get_ref(), Signal::KILL);
    }
}

/// Reads a pid from QEMU's pidfile.
pub fn read_pidfile(path: &Path) -> std::io::Result<Option<i32>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text.trim().parse().ok().filter(|&p: &i32| p > 0)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Alive and not a zombie (`/proc/PID/stat`'s state field, after the parenthesised name).
fn is_alive(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next());
    !matches!(state, None | Some("Z") | Some("X") | Some("x"))
}

fn cmdline_has(pid: i32, marker: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|bytes| {
        bytes
            .split(|&b| b == 0)
            .any(|arg| arg.starts_with(marker.as_bytes()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[tokio::test]
    async fn adopts_only_a_live_process_with_the_marker() {
        // `sh -c CMD NAME`: NAME is an argument of the shell, which waits on its stdin.
        let mut child = Command::new("sh")
            .args(["-c", "read x", "spore-marker-test"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        assert!(QemuProcess::adopt(pid, "spore-other").is_none());
        // Right after spawn the command line can read as empty: the kernel is still in exec.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let p = loop {
            if let Some(p) = QemuProcess::adopt(pid, "spore-marker") {
                break p;
            }
            assert!(std::time::Instant::now() < deadline, "not adopted");
            std::thread::sleep(std::time::Duration::from_millis(5));
        };
        assert!(!p.has_exited());
        p.kill();
        // Reap it so it stops being a zombie; the pidfd was readable from the exit on.
        child.wait().unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), p.exited())
            .await
            .expect("exit noticed");
        assert!(p.has_exited());
        assert!(QemuProcess::adopt(pid, "spore-marker").is_none());
    }

    #[test]
    fn pidfile_parsing() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("qemu.pid");
        assert_eq!(read_pidfile(&f).unwrap(), None);
        std::fs::write(&f, "4242\n").unwrap();
        assert_eq!(read_pidfile(&f).unwrap(), Some(4242));
        std::fs::write(&f, "garbage").unwrap();
        assert_eq!(read_pidfile(&f).unwrap(), None);
        std::fs::write(&f, "-1").unwrap();
        assert_eq!(read_pidfile(&f).unwrap(), None);
    }
}
