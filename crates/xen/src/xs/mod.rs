//! Our xenstore client: the xs_wire protocol ([`wire`]), a blocking client ([`XsClient`])
//! and a tokio client ([`AsyncXs`]) that multiplexes concurrent requests by request id and
//! routes watch events by token.
//!
//! ```no_run
//! # fn main() -> spore_xen::Result<()> {
//! let mut xs = spore_xen::xs::XsClient::open()?;
//! xs.write("/local/domain/0/spore/demo", b"1")?;
//! assert_eq!(xs.read_string("/local/domain/0/spore/demo")?.as_deref(), Some("1"));
//! xs.transaction(|tx| tx.write("/local/domain/0/spore/demo", b"2"))?;
//! # Ok(()) }
//! ```

pub mod async_client;
pub mod sync;
pub mod wire;

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

pub use async_client::{AsyncXs, Watch};
pub use sync::{Transaction, XsClient};
pub use wire::{Access, Perm};

use crate::{Result, XenError};
use wire::MsgType;

/// Default xenstored socket; `XENSTORED_PATH` overrides it.
pub const SOCKET_PATH: &str = "/run/xenstored/socket";
/// The kernel's xenstore device, used when no socket is available.
pub const XENBUS_PATH: &str = "/dev/xen/xenbus";

/// A fired watch: the path that changed and the watch's token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    pub path: String,
    pub token: String,
}

/// The byte stream to xenstored.
#[derive(Debug)]
pub enum Transport {
    Socket(UnixStream),
    Xenbus(File),
}

impl Transport {
    /// The socket path to use: `XENSTORED_PATH` or [`SOCKET_PATH`].
    pub fn socket_path() -> String {
        std::env::var("XENSTORED_PATH").unwrap_or_else(|_| SOCKET_PATH.to_string())
    }

    /// Connects to the socket, falling back to the xenbus device.
    pub fn connect() -> Result<Self> {
        let path = Self::socket_path();
        match UnixStream::connect(&path) {
            Ok(s) => Ok(Self::Socket(s)),
            Err(sock_err) => match std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(XENBUS_PATH)
            {
                Ok(f) => Ok(Self::Xenbus(f)),
                Err(_) => Err(XenError::Open {
                    path: path.into(),
                    source: sock_err,
                }),
            },
        }
    }
}

impl Read for Transport {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Self::Socket(s) => s.read(buf),
            Self::Xenbus(f) => f.read(buf),
        }
    }
}

impl Write for Transport {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Self::Socket(s) => s.write(buf),
            Self::Xenbus(f) => f.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Builds and bounds a request payload: `path|` (validated) then the parts, each followed by
/// a NUL except WRITE's value, which is raw bytes.
pub(crate) fn request_payload(op: MsgType, path: &str, parts: &[&[u8]]) -> Result<Vec<u8>> {
    let mut p = Vec::new();
    if !path.is_empty() || matches!(op, MsgType::Read | MsgType::Write | MsgType::Rm) {
        if !wire::valid_path(path) {
            return Err(XenError::XsBadPath(path.chars().take(200).collect()));
        }
        p.extend_from_slice(path.as_bytes());
        p.push(0);
    }
    for part in parts {
        if op != MsgType::Write && part.contains(&0) {
            return Err(XenError::InvalidArgument(format!(
                "xenstore {} argument contains a NUL byte",
                sync::op_name(op)
            )));
        }
        p.extend_from_slice(part);
        if op != MsgType::Write {
            p.push(0);
        }
    }
    if p.len() > wire::PAYLOAD_MAX {
        return Err(XenError::XsRequestTooLong {
            op: sync::op_name(op),
            path: path.chars().take(200).collect(),
            len: p.len(),
        });
    }
    Ok(p)
}

#[cfg(test)]
pub(crate) mod tests;
