//! Host sockets as every flow and listener opens them: the family of the address they serve,
//! non-blocking and close-on-exec.

use std::net::IpAddr;
use std::os::fd::OwnedFd;

use rustix::io::Errno;
use rustix::net::{AddressFamily, Protocol, SocketFlags, SocketType};

/// A non-blocking socket of `ty` for talking to or listening on `addr`.
pub fn host_socket(
    addr: IpAddr,
    ty: SocketType,
    proto: Option<Protocol>,
) -> Result<OwnedFd, Errno> {
    let family = match addr {
        IpAddr::V4(_) => AddressFamily::INET,
        IpAddr::V6(_) => AddressFamily::INET6,
    };
    rustix::net::socket_with(
        family,
        ty,
        SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
        proto,
    )
}
