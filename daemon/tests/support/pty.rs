//! A pseudo-terminal for driving sporectl as a person at a terminal would (tests only): the
//! child gets the slave as stdin, stdout, stderr and controlling terminal, in a session of its
//! own, so resizing the terminal sends it SIGWINCH as a real one does.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Pty {
    master: File,
    child: Child,
    /// Everything read from the terminal so far.
    pub output: String,
}

fn winsize(rows: u16, columns: u16) -> libc::winsize {
    libc::winsize {
        ws_row: rows,
        ws_col: columns,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

impl Pty {
    /// Starts `command` on a new terminal of `rows` x `columns`.
    pub fn spawn(mut command: Command, rows: u16, columns: u16) -> Pty {
        let (mut master, mut slave) = (-1, -1);
        let size = winsize(rows, columns);
        // SAFETY: openpty writes two fds into the given ints; name and termios may be null.
        let rc = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                &size,
            )
        };
        assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
        // SAFETY: openpty returned these fds and nothing else owns them.
        let (master, slave) =
            unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
        let stdio = |fd: &OwnedFd| Stdio::from(fd.try_clone().expect("dup the pty slave"));
        command
            .stdin(stdio(&slave))
            .stdout(stdio(&slave))
            .stderr(stdio(&slave));
        // SAFETY: between fork and exec only async-signal-safe calls (setsid, ioctl).
        unsafe {
            command.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().expect("start the command on the pty");
        drop(slave);
        let master = File::from(master);
        // SAFETY: fcntl on an fd we own.
        unsafe {
            let flags = libc::fcntl(master.as_raw_fd(), libc::F_GETFL);
            libc::fcntl(master.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
        Pty {
            master,
            child,
            output: String::new(),
        }
    }

    /// Types `bytes`.
    pub fn write(&mut self, bytes: &[u8]) {
        self.master.write_all(bytes).expect("write to the pty");
    }

    /// Resizes the terminal; the kernel signals the child's foreground group (SIGWINCH).
    pub fn resize(&self, rows: u16, columns: u16) {
        let size = winsize(rows, columns);
        // SAFETY: TIOCSWINSZ reads a winsize from the pointer.
        let rc = unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &size) };
        assert_eq!(rc, 0, "TIOCSWINSZ: {}", std::io::Error::last_os_error());
    }

    /// Reads what is there now; false once the terminal has no writer left.
    fn read_some(&mut self) -> bool {
        let mut buf = [0u8; 4096];
        loop {
            match self.master.read(&mut buf) {
                Ok(0) => return false,
                Ok(n) => self.output.push_str(&String::from_utf8_lossy(&buf[..n])),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
                // EIO: every slave fd is closed.
                Err(_) => return false,
            }
        }
    }

    /// Reads until the output contains `needle` (panics with the output after `timeout`).
    pub fn expect(&mut self, needle: &str, timeout: Duration) {
        let start = Instant::now();
        while !self.output.contains(needle) {
            assert!(
                start.elapsed() < timeout,
                "{needle:?} did not appear within {timeout:?}; terminal so far: {:?}",
                self.output
            );
            if !self.read_some() {
                assert!(
                    self.output.contains(needle),
                    "the terminal closed without {needle:?}: {:?}",
                    self.output
                );
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the child to exit (reading the terminal meanwhile) and returns its code.
    pub fn wait(&mut self, timeout: Duration) -> Option<i32> {
        let start = Instant::now();
        loop {
            self.read_some();
            if let Some(status) = self.child.try_wait().expect("wait for the pty's child") {
                self.read_some();
                return status.code();
            }
            if start.elapsed() > timeout {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "the command on the pty did not exit within {timeout:?}; terminal: {:?}",
                    self.output
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Pty {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
