//! The IDM port, non-blocking, with an outgoing queue so a slow host never stalls PID 1 (it
//! must keep reaping and forwarding signals whatever the host does).
//!
//! Xen: the second PV console, /dev/hvc1 (a terminal, put in raw mode; the console ring has
//! flow control). QEMU: a virtio serial port, /dev/vport0p1, not a console: QEMU drops what a
//! virtconsole writes while the host's socket is full, but throttles a serial port, so the guest
//! just sees its writes wait (EAGAIN) until spored reads. A serial port reads end-of-file while
//! no host is connected (spored restarting); the port is then only retried, not polled, since
//! poll would report it at once, forever.

use std::fs::{File, OpenOptions};
use std::io::{self, ErrorKind, Read, Write};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use spore_idm::{FrameDecoder, IdmPacket, encode_frame};

use crate::console::alert;
use crate::sys;

/// Where the IDM channel may be: Xen's second console, QEMU's virtio serial port 1.
pub const IDM_DEVICES: [&str; 2] = ["/dev/hvc1", "/dev/vport0p1"];

/// Above this much queued output, exec sessions stop reading their processes' output.
pub const OUTBOX_HIGH_WATER: usize = 256 * 1024;

#[derive(Debug)]
pub struct IdmPort {
    file: File,
    decoder: FrameDecoder,
    outbox: Vec<u8>,
    sent: usize,
    read_buf: Vec<u8>,
    /// The last read saw end-of-file: no host is connected (a virtio serial port).
    host_gone: bool,
}

/// Opens a console device, retrying while it does not exist yet: the hvc nodes appear at
/// driver registration but a port only opens once the host side has announced it.
///
/// EINVAL is retried too: virtio_console creates the hvc device (and so the /dev node) before
/// it adds the port to its list of consoles, and an open in between fails in the driver's
/// open hook with EINVAL ("hvc_open: request_irq failed with rc -22"). Seen on a busy TCG
/// host: init then ran without a console, so the workload found hvc0 in its default cooked
/// mode and a tty workload could not get it as its terminal.
pub fn open_console_device(path: &str, timeout: Duration) -> Result<File> {
    open_first(&[path], timeout).map(|(file, _)| file)
}

/// Opens the first of `paths` that opens, retrying all of them while none exists yet.
fn open_first<'a>(paths: &[&'a str], timeout: Duration) -> Result<(File, &'a str)> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut last = None;
        for &path in paths {
            match OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC | libc::O_NONBLOCK)
                .open(path)
            {
                Ok(file) => return Ok((file, path)),
                Err(e) => last = Some((path, e)),
            }
        }
        let Some((path, e)) = last else {
            anyhow::bail!("no device to open");
        };
        let retry = matches!(
            e.raw_os_error(),
            Some(libc::ENOENT | libc::ENODEV | libc::ENXIO | libc::EIO | libc::EINVAL)
        );
        if !retry || Instant::now() >= deadline {
            return Err(e).with_context(|| {
                format!(
                    "cannot open {} (waited {} ms; {path} last)",
                    paths.join(" or "),
                    timeout.as_millis()
                )
            });
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

impl IdmPort {
    pub fn open(timeout: Duration) -> Result<Self> {
        let (file, path) = open_first(&IDM_DEVICES, timeout)
            .context("the IDM channel (second console or serial port) is missing")?;
        if std::io::IsTerminal::is_terminal(&file) {
            sys::make_raw(file.as_fd())
                .with_context(|| format!("cannot put {path} in raw mode"))?;
        }
        Ok(Self {
            file,
            decoder: FrameDecoder::new(),
            outbox: Vec::new(),
            sent: 0,
            read_buf: vec![0; 64 * 1024],
            host_gone: false,
        })
    }

    pub fn raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// No host is connected (the last read saw end-of-file): poll would report the port
    /// readable at once, so it is retried on a timer instead.
    pub fn host_gone(&self) -> bool {
        self.host_gone
    }

    /// Queues a packet and writes what the port takes now.
    pub fn send(&mut self, packet: &IdmPacket) {
        if let Err(e) = encode_frame(packet, &mut self.outbox) {
            alert!("dropping IDM {} packet: {e}", packet.kind());
            return;
        }
        if let Err(e) = self.flush_some() {
            alert!("IDM write failed: {e}");
        }
    }

    pub fn queued(&self) -> usize {
        self.outbox.len() - self.sent
    }

    /// Writes queued bytes until the port would block.
    pub fn flush_some(&mut self) -> io::Result<()> {
        while self.sent < self.outbox.len() {
            match self.file.write(&self.outbox[self.sent..]) {
                Ok(0) => break,
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.sent == self.outbox.len() {
            self.outbox.clear();
            self.sent = 0;
        } else if self.sent > 1 << 20 {
            self.outbox.drain(..self.sent);
            self.sent = 0;
        }
        Ok(())
    }

    /// Reads what is available into the decoder.
    pub fn read_some(&mut self) -> io::Result<()> {
        // Bounded: at most a few chunks per wakeup so other events get their turn.
        for _ in 0..16 {
            match self.file.read(&mut self.read_buf) {
                Ok(0) => {
                    self.host_gone = true;
                    return Ok(());
                }
                Ok(n) => {
                    self.host_gone = false;
                    self.decoder.push(&self.read_buf[..n]);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    self.host_gone = false;
                    return Ok(());
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    pub fn next_packet(&mut self) -> Option<spore_idm::Result<IdmPacket>> {
        self.decoder.next_packet()
    }

    /// Blocks until everything queued is written (or `timeout`), then waits for the terminal
    /// layer to hand it to the host.
    pub fn drain(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.queued() > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                alert!(
                    "IDM: {} bytes could not be delivered (host not reading)",
                    self.queued()
                );
                return;
            }
            if self.host_gone {
                // Poll reports a hung-up port at once: wait, then try again.
                std::thread::sleep(left.min(Duration::from_millis(20)));
                let _ = self.read_some();
            } else {
                let mut fds = [sys::pollfd(self.raw_fd(), sys::POLLOUT)];
                let _ = sys::poll(&mut fds, left.as_millis().min(100) as i32);
            }
            if let Err(e) = self.flush_some() {
                alert!("IDM write failed: {e}");
                return;
            }
        }
        sys::drain_tty(self.file.as_fd(), deadline);
    }
}
