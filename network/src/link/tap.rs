//! A tap device: one frame per `read`/`write` (`IFF_TAP | IFF_NO_PI`).

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use super::{Link, LinkError, framing::MAX_FRAME, would_block};
use crate::frames::TxQueue;

pub struct TapLink {
    fd: OwnedFd,
    buf: Box<[u8]>,
}

impl TapLink {
    /// Attaches to tap `name`, inside the network namespace file `netns` when given (the
    /// attachment is made from a short-lived thread that enters the namespace, so sporenet's
    /// own threads never change namespace).
    pub fn open(name: &str, netns: Option<&Path>) -> Result<TapLink, LinkError> {
        let fd = match netns {
            None => crate::sys::open_tap(name)?,
            Some(ns) => {
                let ns_file = std::fs::File::open(ns)?;
                let name = name.to_owned();
                std::thread::scope(|s| {
                    s.spawn(|| {
                        rustix::thread::move_into_link_name_space(
                            ns_file.as_fd(),
                            Some(rustix::thread::LinkNameSpaceType::Network),
                        )?;
                        crate::sys::open_tap(&name)
                    })
                    .join()
                    .unwrap_or_else(|_| Err(std::io::Error::other("tap opener thread panicked")))
                })?
            }
        };
        Ok(TapLink {
            fd,
            buf: vec![0; MAX_FRAME].into_boxed_slice(),
        })
    }
}

impl Link for TapLink {
    fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    fn recv(&mut self, max: usize, on_frame: &mut dyn FnMut(&[u8])) -> Result<usize, LinkError> {
        let mut n = 0;
        while n < max {
            match rustix::io::read(&self.fd, &mut self.buf[..]) {
                Ok(len) => {
                    on_frame(&self.buf[..len]);
                    n += 1;
                }
                Err(e) if would_block(e) => break,
                // The device is gone (deleted, or its namespace was).
                Err(rustix::io::Errno::BADFD) | Err(rustix::io::Errno::IO) => {
                    return Err(LinkError::Closed);
                }
                Err(e) => return Err(LinkError::Io(e.into())),
            }
        }
        Ok(n)
    }

    fn send(&mut self, tx: &mut TxQueue) -> Result<bool, LinkError> {
        while let Some(frame) = tx.next_frame() {
            match rustix::io::write(&self.fd, frame) {
                Ok(_) => tx.consume_frame(),
                Err(e) if would_block(e) => return Ok(false),
                Err(rustix::io::Errno::BADFD) | Err(rustix::io::Errno::IO) => {
                    return Err(LinkError::Closed);
                }
                Err(e) => return Err(LinkError::Io(e.into())),
            }
        }
        Ok(true)
    }
}
