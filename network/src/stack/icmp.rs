//! ICMP echo beyond the gateway: a host "ping" socket per flow where the host allows it
//! (`net.ipv4.ping_group_range`), else a raw socket connected to the destination with the echo
//! identifier rewritten to one unique in this process (raw sockets see every echo reply).

use std::net::{IpAddr, SocketAddr};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Instant;

use rustix::io::Errno;
use rustix::net::{SocketType, ipproto};

use crate::socket::host_socket;

static NEXT_IDENT: AtomicU16 = AtomicU16::new(1);

pub struct IcmpFlow {
    pub host: OwnedFd,
    /// The identifier on the wire (raw sockets); `None` when the kernel picks it (ping socket).
    pub host_ident: Option<u16>,
    /// The zone's identifier, restored on replies.
    pub zone_ident: u16,
    pub remote: IpAddr,
    pub last_active: Instant,
    pub host_readable: bool,
}

const ECHO_REQUEST_V4: u8 = 8;
const ECHO_REPLY_V4: u8 = 0;
const ECHO_REQUEST_V6: u8 = 128;
const ECHO_REPLY_V6: u8 = 129;

impl IcmpFlow {
    pub fn open(remote: IpAddr, zone_ident: u16, now: Instant) -> Result<IcmpFlow, Errno> {
        let proto = match remote {
            IpAddr::V4(_) => ipproto::ICMP,
            IpAddr::V6(_) => ipproto::ICMPV6,
        };
        let (host, host_ident) = match host_socket(remote, SocketType::DGRAM, Some(proto)) {
            Ok(fd) => (fd, None),
            Err(Errno::ACCESS) | Err(Errno::PERM) => {
                let fd = host_socket(remote, SocketType::RAW, Some(proto))?;
                (fd, Some(NEXT_IDENT.fetch_add(1, Ordering::Relaxed)))
            }
            Err(e) => return Err(e),
        };
        rustix::net::connect(&host, &SocketAddr::new(remote, 0))?;
        Ok(IcmpFlow {
            host,
            host_ident,
            zone_ident,
            remote,
            last_active: now,
            host_readable: false,
        })
    }

    /// Sends one echo request with the zone's sequence number and data.
    pub fn send(&mut self, seq: u16, data: &[u8], now: Instant) -> Result<(), Errno> {
        self.last_active = now;
        let mut msg = Vec::with_capacity(8 + data.len());
        msg.push(if self.remote.is_ipv6() {
            ECHO_REQUEST_V6
        } else {
            ECHO_REQUEST_V4
        });
        msg.push(0);
        msg.extend_from_slice(&[0, 0]);
        msg.extend_from_slice(&self.host_ident.unwrap_or(0).to_be_bytes());
        msg.extend_from_slice(&seq.to_be_bytes());
        msg.extend_from_slice(data);
        // ICMPv6 and ping sockets get their checksum from the kernel; raw ICMPv4 needs ours.
        if self.remote.is_ipv4() && self.host_ident.is_some() {
            let sum = !smoltcp::wire::checksum::data(&msg);
            msg[2..4].copy_from_slice(&sum.to_be_bytes());
        }
        rustix::net::send(&self.host, &msg, rustix::net::SendFlags::empty())?;
        Ok(())
    }

    /// The next echo reply for this flow: (sequence, data range in `buf`). `Ok(None)`: the
    /// message was not ours (raw sockets see others' replies too).
    pub fn recv<'b>(&mut self, buf: &'b mut [u8]) -> Result<Option<(u16, &'b [u8])>, Errno> {
        let (n, ..) = rustix::net::recv(&self.host, &mut *buf, rustix::net::RecvFlags::empty())?;
        let mut msg = &buf[..n];
        // Raw IPv4 sockets hand over the IP header too.
        if self.remote.is_ipv4() && self.host_ident.is_some() {
            let ihl = usize::from(msg.first().map_or(0, |b| b & 0x0f)) * 4;
            msg = msg.get(ihl..).unwrap_or(&[]);
        }
        let Some(header) = msg.first_chunk::<8>() else {
            return Ok(None);
        };
        let reply = if self.remote.is_ipv6() {
            ECHO_REPLY_V6
        } else {
            ECHO_REPLY_V4
        };
        if header[0] != reply {
            return Ok(None);
        }
        let ident = u16::from_be_bytes([header[4], header[5]]);
        if self.host_ident.is_some_and(|own| own != ident) {
            return Ok(None);
        }
        let seq = u16::from_be_bytes([header[6], header[7]]);
        Ok(Some((seq, &msg[8..])))
    }
}
