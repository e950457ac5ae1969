//! The seam between a zone's NIC and its stack: a [`Link`] moves batches of Ethernet frames.
//!
//! - [`stream::StreamLink`]: QEMU's `-netdev stream` socket (`<zone>/net.sock`), u32-BE framed.
//! - [`tap::TapLink`]: a tap device (tests and the bench mode).
//! - Xen's links (AF_PACKET on a netback vif; later a userspace netback) implement the same
//!   trait: whatever the frames travel over, the zone loop only sees readiness of one
//!   descriptor, whole frames in, and a [`TxQueue`] drained as far as the link allows.
//!
//! A link never drops a frame for lack of room: what it cannot write stays queued and the zone
//! loop stops producing until the descriptor is writable again.

pub mod framing;
pub mod stream;
pub mod tap;

use std::os::fd::BorrowedFd;
use std::path::PathBuf;

use crate::frames::TxQueue;

/// Why a link stopped working.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The peer went away (QEMU restarted or the VM ended); reopen later.
    #[error("the peer closed the link")]
    Closed,
    #[error("bad framing from the peer")]
    Framing(#[from] framing::FramingError),
    #[error("link I/O failed")]
    Io(#[from] std::io::Error),
}

impl From<rustix::io::Errno> for LinkError {
    fn from(e: rustix::io::Errno) -> LinkError {
        LinkError::Io(e.into())
    }
}

/// Where a zone's frames come from, and how to (re)open that.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkSpec {
    /// Connect to QEMU's listening `-netdev stream` socket.
    QemuStream { path: PathBuf },
    /// Attach to the tap `name`, inside the network namespace at `netns` (a path such as
    /// `/run/netns/NAME`) when given.
    Tap {
        name: String,
        netns: Option<PathBuf>,
    },
}

impl LinkSpec {
    pub fn open(&self) -> Result<Box<dyn Link>, LinkError> {
        Ok(match self {
            LinkSpec::QemuStream { path } => Box::new(stream::StreamLink::connect(path)?),
            LinkSpec::Tap { name, netns } => Box::new(tap::TapLink::open(name, netns.as_deref())?),
        })
    }
}

impl std::fmt::Display for LinkSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LinkSpec::QemuStream { path } => write!(f, "qemu-stream:{}", path.display()),
            LinkSpec::Tap { name, netns: None } => write!(f, "tap:{name}"),
            LinkSpec::Tap {
                name,
                netns: Some(ns),
            } => write!(f, "tap:{name}@{}", ns.display()),
        }
    }
}

/// A zone's NIC as sporenet sees it.
pub trait Link: Send {
    /// The descriptor to wait on: readable when frames arrived, writable when there is room.
    fn fd(&self) -> BorrowedFd<'_>;

    /// Hands up to `max` received frames to `on_frame`, in order; returns how many. 0 means
    /// nothing is waiting (the descriptor must become readable again first).
    fn recv(&mut self, max: usize, on_frame: &mut dyn FnMut(&[u8])) -> Result<usize, LinkError>;

    /// Writes as much of `tx` as the link takes now; the rest stays queued. Returns whether
    /// everything went out.
    fn send(&mut self, tx: &mut TxQueue) -> Result<bool, LinkError>;
}

/// `EAGAIN`/`EWOULDBLOCK` as rustix reports it.
fn would_block(e: rustix::io::Errno) -> bool {
    e == rustix::io::Errno::AGAIN
}
