//! UDP flows: a connected host socket per (zone address and port, destination), closed after
//! an idle timeout. Inbound flows (a published UDP port) answer through the listener socket.

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::time::Instant;

use rustix::io::Errno;
use rustix::net::SocketType;

/// Opens a non-blocking UDP socket connected to `to`.
pub fn connect(to: SocketAddr) -> Result<OwnedFd, Errno> {
    let fd = crate::socket::host_socket(to.ip(), SocketType::DGRAM, None)?;
    rustix::net::connect(&fd, &to)?;
    Ok(fd)
}

pub struct UdpFlow {
    pub host: OwnedFd,
    /// The host address the socket is connected to (for DNS failover).
    pub upstream: SocketAddr,
    pub dns: bool,
    pub last_active: Instant,
    pub host_readable: bool,
    /// Queries sent that got no answer yet (DNS: a resolver that never answers is skipped).
    pub unanswered: u32,
}
