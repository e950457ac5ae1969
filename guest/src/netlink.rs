//! A minimal rtnetlink client: list links, set a link up with an MTU, add addresses and
//! default routes (IPv4 and IPv6). Messages are built byte by byte in host order, following
//! include/uapi/linux/netlink.h (nlmsghdr, nlmsgerr), rtnetlink.h (rtmsg, rtattr, RTM_*),
//! if_link.h (ifinfomsg, IFLA_*) and if_addr.h (ifaddrmsg, IFA_*).

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsFd, OwnedFd};

use crate::sys;

// netlink.h
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_CREATE: u16 = 0x400;
const NLMSG_HDRLEN: usize = 16;

// rtnetlink.h
const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const RTM_NEWADDR: u16 = 20;
const RTM_NEWROUTE: u16 = 24;
const RT_TABLE_MAIN: u8 = 254;
const RTPROT_STATIC: u8 = 4;
const RT_SCOPE_UNIVERSE: u8 = 0;
const RTN_UNICAST: u8 = 1;
const RTNH_F_ONLINK: u32 = 4;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;

// if_link.h
const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFF_UP: u32 = 0x1;

// if_addr.h
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_FLAGS: u16 = 8;
const IFA_F_NODAD: u32 = 0x02;

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// A message under construction: header, fixed part, attributes.
#[derive(Debug)]
pub struct Message {
    buf: Vec<u8>,
}

impl Message {
    fn new(kind: u16, flags: u16, seq: u32) -> Self {
        let mut buf = Vec::with_capacity(64);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // length, patched in finish()
        buf.extend_from_slice(&kind.to_ne_bytes());
        buf.extend_from_slice(&flags.to_ne_bytes());
        buf.extend_from_slice(&seq.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it
        Self { buf }
    }

    fn bytes(mut self, b: &[u8]) -> Self {
        self.buf.extend_from_slice(b);
        self
    }

    fn attr(mut self, kind: u16, data: &[u8]) -> Self {
        let len = 4 + data.len();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.buf.resize(align4(self.buf.len()), 0);
        self
    }

    fn finish(mut self) -> Vec<u8> {
        let len = self.buf.len() as u32;
        self.buf[..4].copy_from_slice(&len.to_ne_bytes());
        self.buf
    }
}

fn ifinfomsg(index: i32, flags: u32, change: u32) -> Vec<u8> {
    let mut b = vec![0u8, 0]; // family AF_UNSPEC, pad
    b.extend_from_slice(&0u16.to_ne_bytes()); // type
    b.extend_from_slice(&index.to_ne_bytes());
    b.extend_from_slice(&flags.to_ne_bytes());
    b.extend_from_slice(&change.to_ne_bytes());
    b
}

fn ip_bytes(ip: IpAddr) -> (u8, Vec<u8>) {
    match ip {
        IpAddr::V4(v4) => (AF_INET, v4.octets().to_vec()),
        IpAddr::V6(v6) => (AF_INET6, v6.octets().to_vec()),
    }
}

/// RTM_NEWLINK on an existing link: up, optionally with an MTU.
pub fn link_up(seq: u32, index: i32, mtu: Option<u32>) -> Vec<u8> {
    let mut m = Message::new(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, seq)
        .bytes(&ifinfomsg(index, IFF_UP, IFF_UP));
    if let Some(mtu) = mtu {
        m = m.attr(IFLA_MTU, &mtu.to_ne_bytes());
    }
    m.finish()
}

/// RTM_NEWADDR; IPv6 addresses skip duplicate address detection so they work at once.
pub fn add_address(seq: u32, index: i32, addr: IpAddr, prefix: u8) -> Vec<u8> {
    let (family, bytes) = ip_bytes(addr);
    let mut fixed = vec![family, prefix, 0, RT_SCOPE_UNIVERSE];
    fixed.extend_from_slice(&(index as u32).to_ne_bytes());
    let mut m = Message::new(
        RTM_NEWADDR,
        NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
        seq,
    )
    .bytes(&fixed)
    .attr(IFA_LOCAL, &bytes)
    .attr(IFA_ADDRESS, &bytes);
    if family == AF_INET6 {
        m = m.attr(IFA_FLAGS, &IFA_F_NODAD.to_ne_bytes());
    }
    m.finish()
}

/// RTM_NEWROUTE: default route via `gateway` out of link `index`. `onlink` lets the gateway sit
/// outside the interface's prefix.
pub fn add_default_route(seq: u32, index: i32, gateway: IpAddr, onlink: bool) -> Vec<u8> {
    let (family, bytes) = ip_bytes(gateway);
    let mut fixed = vec![
        family,
        0,
        0,
        0,
        RT_TABLE_MAIN,
        RTPROT_STATIC,
        RT_SCOPE_UNIVERSE,
        RTN_UNICAST,
    ];
    fixed.extend_from_slice(&(if onlink { RTNH_F_ONLINK } else { 0 }).to_ne_bytes());
    Message::new(
        RTM_NEWROUTE,
        NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
        seq,
    )
    .bytes(&fixed)
    .attr(RTA_GATEWAY, &bytes)
    .attr(RTA_OIF, &(index as u32).to_ne_bytes())
    .finish()
}

pub fn dump_links(seq: u32) -> Vec<u8> {
    Message::new(RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, seq)
        .bytes(&ifinfomsg(0, 0, 0))
        .finish()
}

/// A link from a dump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: i32,
    pub name: String,
    pub mac: Option<[u8; 6]>,
}

/// One parsed netlink message: (type, payload after the header).
fn messages(buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut rest = buf;
    std::iter::from_fn(move || {
        if rest.len() < NLMSG_HDRLEN {
            return None;
        }
        let len = u32::from_ne_bytes(rest[..4].try_into().ok()?) as usize;
        if len < NLMSG_HDRLEN || len > rest.len() {
            return None;
        }
        let kind = u16::from_ne_bytes(rest[4..6].try_into().ok()?);
        let payload = &rest[NLMSG_HDRLEN..len];
        rest = &rest[align4(len).min(rest.len())..];
        Some((kind, payload))
    })
}

fn attrs(mut buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if buf.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([buf[0], buf[1]]) as usize;
        let kind = u16::from_ne_bytes([buf[2], buf[3]]) & 0x3fff;
        if len < 4 || len > buf.len() {
            return None;
        }
        let data = &buf[4..len];
        buf = &buf[align4(len).min(buf.len())..];
        Some((kind, data))
    })
}

/// Parses RTM_NEWLINK messages of a dump reply. `Ok(true)` once NLMSG_DONE was seen.
pub fn parse_links(buf: &[u8], out: &mut Vec<Link>) -> io::Result<bool> {
    for (kind, payload) in messages(buf) {
        match kind {
            NLMSG_DONE => return Ok(true),
            NLMSG_ERROR => check_ack(payload)?,
            RTM_NEWLINK if payload.len() >= 16 => {
                let index = i32::from_ne_bytes(payload[4..8].try_into().unwrap_or([0; 4]));
                let mut link = Link {
                    index,
                    name: String::new(),
                    mac: None,
                };
                for (attr, data) in attrs(&payload[16..]) {
                    match attr {
                        IFLA_IFNAME => {
                            link.name = String::from_utf8_lossy(
                                data.split(|&b| b == 0).next().unwrap_or(&[]),
                            )
                            .into_owned();
                        }
                        IFLA_ADDRESS if data.len() == 6 => {
                            link.mac = data.try_into().ok();
                        }
                        _ => {}
                    }
                }
                out.push(link);
            }
            _ => {}
        }
    }
    Ok(false)
}

/// An NLMSG_ERROR payload: 0 is an ACK, negative is -errno.
fn check_ack(payload: &[u8]) -> io::Result<()> {
    let code = payload
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .map(i32::from_ne_bytes)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "short netlink error message"))?;
    if code == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(-code))
    }
}

/// A route netlink socket.
#[derive(Debug)]
pub struct Netlink {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
}

impl Netlink {
    pub fn open() -> io::Result<Self> {
        Ok(Self {
            fd: sys::netlink_route_socket()?,
            seq: 1,
            buf: vec![0; 32 * 1024],
        })
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Sends a request built by `build(seq)` and waits for its ACK.
    pub fn request(&mut self, build: impl FnOnce(u32) -> Vec<u8>) -> io::Result<()> {
        let msg = build(self.next_seq());
        sys::send(self.fd.as_fd(), &msg)?;
        loop {
            let n = sys::recv(self.fd.as_fd(), &mut self.buf)?;
            for (kind, payload) in messages(&self.buf[..n]) {
                if kind == NLMSG_ERROR {
                    return check_ack(payload);
                }
            }
        }
    }

    pub fn links(&mut self) -> io::Result<Vec<Link>> {
        let msg = dump_links(self.next_seq());
        sys::send(self.fd.as_fd(), &msg)?;
        let mut links = Vec::new();
        loop {
            let n = sys::recv(self.fd.as_fd(), &mut self.buf)?;
            if n == 0 || parse_links(&self.buf[..n], &mut links)? {
                return Ok(links);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_up_bytes() {
        let m = link_up(7, 3, Some(1400));
        let mut want = Vec::new();
        want.extend_from_slice(&40u32.to_ne_bytes());
        want.extend_from_slice(&16u16.to_ne_bytes());
        want.extend_from_slice(&5u16.to_ne_bytes());
        want.extend_from_slice(&7u32.to_ne_bytes());
        want.extend_from_slice(&0u32.to_ne_bytes());
        want.extend_from_slice(&[0, 0, 0, 0]);
        want.extend_from_slice(&3i32.to_ne_bytes());
        want.extend_from_slice(&1u32.to_ne_bytes());
        want.extend_from_slice(&1u32.to_ne_bytes());
        want.extend_from_slice(&8u16.to_ne_bytes());
        want.extend_from_slice(&4u16.to_ne_bytes());
        want.extend_from_slice(&1400u32.to_ne_bytes());
        assert_eq!(m, want);
    }

    #[test]
    fn address_and_route_layout() {
        let m = add_address(1, 2, "fd00::5".parse().unwrap(), 64);
        // header 16 + ifaddrmsg 8 + IFA_LOCAL 20 + IFA_ADDRESS 20 + IFA_FLAGS 8
        assert_eq!(m.len(), 72);
        assert_eq!(u32::from_ne_bytes(m[..4].try_into().unwrap()), 72);
        assert_eq!(&m[16..20], &[AF_INET6, 64, 0, 0]);
        let m = add_address(1, 2, "10.0.0.5".parse().unwrap(), 24);
        assert_eq!(m.len(), 16 + 8 + 8 + 8);
        assert_eq!(&m[28..32], &[10, 0, 0, 5]);
        let r = add_default_route(1, 2, "10.0.0.1".parse().unwrap(), true);
        assert_eq!(r.len(), 16 + 12 + 8 + 8);
        assert_eq!(&r[16..24], &[AF_INET, 0, 0, 0, 254, 4, 0, 1]);
        assert_eq!(
            u32::from_ne_bytes(r[24..28].try_into().unwrap()),
            RTNH_F_ONLINK
        );
    }

    #[test]
    fn parse_hostile_replies() {
        let mut links = Vec::new();
        // Truncated header, lying lengths, attributes running past the end: no panic, no link.
        for junk in [
            &[][..],
            &[1, 2, 3],
            &[255, 255, 0, 0, 16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            &[20, 0, 0, 0, 16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9, 9, 9, 9],
        ] {
            assert!(!parse_links(junk, &mut links).unwrap());
        }
        let mut msg = Message::new(RTM_NEWLINK, 0, 1)
            .bytes(&ifinfomsg(4, 0, 0))
            .attr(IFLA_IFNAME, b"eth0\0");
        msg.buf.extend_from_slice(&[200, 0, 1, 0]); // an attribute claiming 200 bytes
        let done = Message::new(NLMSG_DONE, 0, 1).bytes(&[0; 4]).finish();
        let mut buf = msg.finish();
        buf.extend_from_slice(&done);
        assert!(parse_links(&buf, &mut links).unwrap());
        assert_eq!(
            links,
            vec![Link {
                index: 4,
                name: "eth0".into(),
                mac: None
            }]
        );
        let err = Message::new(NLMSG_ERROR, 0, 1)
            .bytes(&(-libc::EPERM).to_ne_bytes())
            .finish();
        assert_eq!(
            parse_links(&err, &mut links).unwrap_err().raw_os_error(),
            Some(libc::EPERM)
        );
    }
}
