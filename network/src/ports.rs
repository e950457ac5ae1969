//! Published ports: host listeners (TCP and UDP) whose connections and datagrams the zone's
//! stack carries from the gateway into the zone.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::os::fd::OwnedFd;

use rustix::io::Errno;
use rustix::net::SocketType;

use crate::zone::{Proto, PublishedPort};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerKind {
    Tcp,
    Udp,
}

pub struct Listener {
    pub port: PublishedPort,
    pub kind: ListenerKind,
    pub fd: OwnedFd,
}

/// Binds the host side of `port`: its address, or every address (IPv4 and IPv6) when none.
pub fn bind(port: &PublishedPort) -> Result<Listener, Errno> {
    let addr = SocketAddr::new(
        port.host_address
            .unwrap_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED)),
        port.host_port,
    );
    let (kind, ty) = match port.proto {
        Proto::Tcp => (ListenerKind::Tcp, SocketType::STREAM),
        Proto::Udp => (ListenerKind::Udp, SocketType::DGRAM),
    };
    let fd = crate::socket::host_socket(addr.ip(), ty, None)?;
    if port.host_address.is_none() {
        rustix::net::sockopt::set_ipv6_v6only(&fd, false)?;
    }
    if kind == ListenerKind::Tcp {
        rustix::net::sockopt::set_socket_reuseaddr(&fd, true)?;
    }
    rustix::net::bind(&fd, &addr)?;
    if kind == ListenerKind::Tcp {
        rustix::net::listen(&fd, 1024)?;
    }
    Ok(Listener {
        port: port.clone(),
        kind,
        fd,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_port_is_an_error_naming_the_cause() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = PublishedPort {
            host_address: Some("127.0.0.1".parse().unwrap()),
            host_port: taken.local_addr().unwrap().port(),
            zone_port: 80,
            proto: Proto::Tcp,
        };
        assert_eq!(bind(&port).err(), Some(Errno::ADDRINUSE));
        let free = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let udp = PublishedPort {
            host_port: free.local_addr().unwrap().port(),
            proto: Proto::Udp,
            ..port
        };
        drop(free);
        let l = bind(&udp).unwrap();
        assert_eq!(l.kind, ListenerKind::Udp);
    }
}
