//! QEMU's `-netdev stream,server=on,addr.type=unix` socket: sporenet is the client. QEMU 7.2
//! serves one client at a time and listens again when it leaves, so a restarted sporenet simply
//! connects again.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};

use super::framing::Decoder;
use super::{Link, LinkError, would_block};
use crate::frames::TxQueue;

/// Bytes read per `recv`: many frames at a small MTU, a few at 65520.
const READ_BUFFER: usize = 512 * 1024;

pub struct StreamLink {
    fd: OwnedFd,
    decoder: Decoder,
}

impl StreamLink {
    /// Connects without blocking: a full listen backlog (QEMU serves one client at a time)
    /// is an error to retry, never a wait.
    pub fn connect(path: &Path) -> Result<StreamLink, LinkError> {
        let fd = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::STREAM,
            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            None,
        )?;
        let addr = SocketAddrUnix::new(path)?;
        rustix::net::connect(&fd, &addr)?;
        Self::from_fd(fd)
    }

    /// Serves an already connected socket (tests, and a listening variant for A/B benches).
    pub fn from_fd(fd: OwnedFd) -> Result<StreamLink, LinkError> {
        rustix::io::ioctl_fionbio(&fd, true)?;
        // Room for a burst of 64 KiB frames both ways without waking QEMU per frame.
        let _ = rustix::net::sockopt::set_socket_send_buffer_size(&fd, 4 << 20);
        let _ = rustix::net::sockopt::set_socket_recv_buffer_size(&fd, 4 << 20);
        Ok(StreamLink {
            fd,
            decoder: Decoder::new(READ_BUFFER),
        })
    }
}

impl Link for StreamLink {
    fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    fn recv(&mut self, max: usize, on_frame: &mut dyn FnMut(&[u8])) -> Result<usize, LinkError> {
        let mut n = 0;
        loop {
            while n < max {
                match self.decoder.next_frame()? {
                    Some(frame) => {
                        on_frame(frame);
                        n += 1;
                    }
                    None => break,
                }
            }
            if n >= max {
                return Ok(n);
            }
            match rustix::io::read(&self.fd, self.decoder.spare()) {
                Ok(0) => return Err(LinkError::Closed),
                Ok(len) => self.decoder.filled(len),
                Err(e) if would_block(e) => return Ok(n),
                Err(rustix::io::Errno::CONNRESET) => return Err(LinkError::Closed),
                Err(e) => return Err(LinkError::Io(e.into())),
            }
        }
    }

    fn send(&mut self, tx: &mut TxQueue) -> Result<bool, LinkError> {
        while !tx.is_empty() {
            match rustix::net::send(&self.fd, tx.unsent(), rustix::net::SendFlags::NOSIGNAL) {
                Ok(n) => tx.consume(n),
                Err(e) if would_block(e) => return Ok(false),
                Err(rustix::io::Errno::PIPE) | Err(rustix::io::Errno::CONNRESET) => {
                    return Err(LinkError::Closed);
                }
                Err(e) => return Err(LinkError::Io(e.into())),
            }
        }
        Ok(true)
    }
}
