//! Packets sporenet writes to the zone by hand (no flow stack behind them): TCP resets, ICMP
//! unreachables, UDP datagrams and echo replies from the outside.

use std::net::IpAddr;

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    EthernetFrame, EthernetProtocol, EthernetRepr, Icmpv4DstUnreachable, Icmpv4Packet, Icmpv4Repr,
    Icmpv6DstUnreachable, Icmpv6Packet, Icmpv6Repr, IpAddress, IpProtocol, IpRepr, Ipv4Packet,
    Ipv6Packet, TcpControl, TcpPacket, TcpRepr, TcpSeqNumber, UdpPacket, UdpRepr,
};

use super::parse::TcpInfo;
use crate::frames::TxQueue;
use crate::zone::{GATEWAY_MAC, ZoneNet};

const ETH: usize = 14;
const HOP_LIMIT: u8 = 64;

/// Writes one IP packet to the zone: Ethernet header, IP header, then `fill` for the payload.
fn emit(
    tx: &mut TxQueue,
    zone: &ZoneNet,
    src: IpAddr,
    dst: IpAddr,
    proto: IpProtocol,
    payload_len: usize,
    fill: impl FnOnce(&IpRepr, &mut [u8]),
) {
    let ip = IpRepr::new(
        IpAddress::from(src),
        IpAddress::from(dst),
        proto,
        payload_len,
        HOP_LIMIT,
    );
    let frame = tx.push(ETH + ip.buffer_len());
    EthernetRepr {
        src_addr: GATEWAY_MAC,
        dst_addr: zone.mac,
        ethertype: if src.is_ipv6() {
            EthernetProtocol::Ipv6
        } else {
            EthernetProtocol::Ipv4
        },
    }
    .emit(&mut EthernetFrame::new_unchecked(&mut frame[..]));
    let packet = &mut frame[ETH..];
    ip.emit(&mut *packet, &ChecksumCapabilities::default());
    fill(&ip, &mut packet[ip.header_len()..]);
}

/// A RST answering `seg` (RFC 9293 3.10.7.1: with an ACK, the reset takes its number; else it
/// acknowledges the segment).
pub fn tcp_reset(tx: &mut TxQueue, zone: &ZoneNet, src: IpAddr, dst: IpAddr, seg: &TcpInfo) {
    if seg.rst {
        return;
    }
    let (seq, ack) = if seg.ack {
        (seg.ack_number, None)
    } else {
        let len = seg.payload_len as u32 + u32::from(seg.syn) + u32::from(seg.fin);
        (0, Some(seg.seq.wrapping_add(len)))
    };
    let repr = TcpRepr {
        src_port: seg.dst_port,
        dst_port: seg.src_port,
        control: TcpControl::Rst,
        seq_number: TcpSeqNumber(seq as i32),
        ack_number: ack.map(|a| TcpSeqNumber(a as i32)),
        window_len: 0,
        window_scale: None,
        max_seg_size: None,
        sack_permitted: false,
        sack_ranges: [None; 3],
        timestamp: None,
        payload: &[],
    };
    // The reset comes from where the segment went.
    emit(
        tx,
        zone,
        dst,
        src,
        IpProtocol::Tcp,
        repr.header_len(),
        |ip, buf| {
            repr.emit(
                &mut TcpPacket::new_unchecked(buf),
                &ip.src_addr(),
                &ip.dst_addr(),
                &ChecksumCapabilities::default(),
            );
        },
    );
}

/// Why a destination cannot be reached, for ICMP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unreachable {
    /// No route, or the connect timed out.
    Host,
    /// The policy forbids it.
    Prohibited,
    /// UDP to a port nobody serves.
    Port,
}

/// ICMP (v4 or v6) destination unreachable about `original` (the zone's IP packet), from `from`.
pub fn unreachable(
    tx: &mut TxQueue,
    zone: &ZoneNet,
    from: IpAddr,
    original: &[u8],
    why: Unreachable,
) {
    let caps = ChecksumCapabilities::default();
    match from {
        IpAddr::V4(_) => {
            let Ok(orig) = Ipv4Packet::new_checked(original) else {
                return;
            };
            let Ok(header) = smoltcp::wire::Ipv4Repr::parse(&orig, &caps) else {
                return;
            };
            let hl = usize::from(orig.header_len());
            // RFC 792: the header and the first 8 bytes of the datagram.
            let data = &original[hl..(hl + 8).min(original.len())];
            let repr = Icmpv4Repr::DstUnreachable {
                reason: match why {
                    Unreachable::Host => Icmpv4DstUnreachable::HostUnreachable,
                    Unreachable::Prohibited => Icmpv4DstUnreachable::HostProhibited,
                    Unreachable::Port => Icmpv4DstUnreachable::PortUnreachable,
                },
                header,
                data,
            };
            let dst = IpAddr::V4(header.src_addr);
            emit(
                tx,
                zone,
                from,
                dst,
                IpProtocol::Icmp,
                repr.buffer_len(),
                |_, buf| {
                    repr.emit(&mut Icmpv4Packet::new_unchecked(buf), &caps);
                },
            );
        }
        IpAddr::V6(src) => {
            let Ok(orig) = Ipv6Packet::new_checked(original) else {
                return;
            };
            let Ok(header) = smoltcp::wire::Ipv6Repr::parse(&orig) else {
                return;
            };
            // RFC 4443: as much of the packet as fits in the minimum MTU.
            let data = &original[40..original.len().min(1280 - 48)];
            let repr = Icmpv6Repr::DstUnreachable {
                reason: match why {
                    Unreachable::Host => Icmpv6DstUnreachable::AddrUnreachable,
                    Unreachable::Prohibited => Icmpv6DstUnreachable::AdminProhibit,
                    Unreachable::Port => Icmpv6DstUnreachable::PortUnreachable,
                },
                header,
                data,
            };
            let dst = header.src_addr;
            emit(
                tx,
                zone,
                from,
                IpAddr::V6(dst),
                IpProtocol::Icmpv6,
                repr.buffer_len(),
                |_, buf| {
                    repr.emit(&src, &dst, &mut Icmpv6Packet::new_unchecked(buf), &caps);
                },
            );
        }
    }
}

/// A UDP datagram to the zone.
pub fn udp(
    tx: &mut TxQueue,
    zone: &ZoneNet,
    src: IpAddr,
    src_port: u16,
    dst: IpAddr,
    dst_port: u16,
    payload: &[u8],
) {
    let repr = UdpRepr { src_port, dst_port };
    let len = repr.header_len() + payload.len();
    emit(tx, zone, src, dst, IpProtocol::Udp, len, |ip, buf| {
        repr.emit(
            &mut UdpPacket::new_unchecked(buf),
            &ip.src_addr(),
            &ip.dst_addr(),
            payload.len(),
            |p| p.copy_from_slice(payload),
            &ChecksumCapabilities::default(),
        );
    });
}

/// An echo reply to the zone.
pub fn echo_reply(
    tx: &mut TxQueue,
    zone: &ZoneNet,
    from: IpAddr,
    ident: u16,
    seq_no: u16,
    data: &[u8],
) {
    let caps = ChecksumCapabilities::default();
    match from {
        IpAddr::V4(_) => {
            let repr = Icmpv4Repr::EchoReply {
                ident,
                seq_no,
                data,
            };
            let dst = zone.own_address(false);
            emit(
                tx,
                zone,
                from,
                dst,
                IpProtocol::Icmp,
                repr.buffer_len(),
                |_, buf| {
                    repr.emit(&mut Icmpv4Packet::new_unchecked(buf), &caps);
                },
            );
        }
        IpAddr::V6(src) => {
            let repr = Icmpv6Repr::EchoReply {
                ident,
                seq_no,
                data,
            };
            let dst = zone.ipv6.address();
            emit(
                tx,
                zone,
                from,
                IpAddr::V6(dst),
                IpProtocol::Icmpv6,
                repr.buffer_len(),
                |_, buf| {
                    repr.emit(&src, &dst, &mut Icmpv6Packet::new_unchecked(buf), &caps);
                },
            );
        }
    }
}
