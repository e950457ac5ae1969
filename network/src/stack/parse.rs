//! Classifies a frame from the zone: who handles it, or why it is dropped. Pure and bounded:
//! the fuzz target and the corpus test drive it with hostile bytes.

use std::net::IpAddr;

use smoltcp::wire::{
    ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol, Icmpv4Message,
    Icmpv4Packet, Icmpv6Message, Icmpv6Packet, IpProtocol, Ipv4Packet, Ipv6Packet, TcpPacket,
    UdpPacket,
};

use crate::counters::DropReason;
use crate::zone::{GATEWAY_MAC, ZoneNet};

/// The parts of a TCP segment the flow table needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpInfo {
    pub src_port: u16,
    pub dst_port: u16,
    pub syn: bool,
    pub ack: bool,
    pub rst: bool,
    pub fin: bool,
    pub seq: u32,
    pub ack_number: u32,
    pub payload_len: usize,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// ARP, NDP, MLD and echo requests to the gateway: the gateway's own interface.
    Gateway,
    Tcp {
        src: IpAddr,
        dst: IpAddr,
        info: TcpInfo,
        /// The IP packet (without Ethernet padding), for the flow's stack.
        ip: &'a [u8],
    },
    Udp {
        src: IpAddr,
        dst: IpAddr,
        src_port: u16,
        dst_port: u16,
        payload: &'a [u8],
        ip: &'a [u8],
    },
    /// An echo request beyond the gateway.
    Echo {
        src: IpAddr,
        dst: IpAddr,
        ident: u16,
        seq: u16,
        data: &'a [u8],
    },
}

pub fn classify<'a>(frame: &'a [u8], zone: &ZoneNet) -> Result<Frame<'a>, DropReason> {
    let eth = EthernetFrame::new_checked(frame).map_err(|_| DropReason::Malformed)?;
    if eth.src_addr() != zone.mac {
        return Err(DropReason::SpoofedMac);
    }
    let dst = eth.dst_addr();
    if dst != GATEWAY_MAC && !dst.is_broadcast() && !dst.is_multicast() {
        return Err(DropReason::ZoneToZone);
    }
    let payload = &frame[EthernetFrame::<&[u8]>::header_len()..];
    match eth.ethertype() {
        EthernetProtocol::Arp => arp(payload, zone),
        EthernetProtocol::Ipv4 => ipv4(payload, zone, dst),
        EthernetProtocol::Ipv6 => ipv6(payload, zone),
        _ => Err(DropReason::Unsupported),
    }
}

fn arp<'a>(payload: &[u8], zone: &ZoneNet) -> Result<Frame<'a>, DropReason> {
    let packet = ArpPacket::new_checked(payload).map_err(|_| DropReason::Malformed)?;
    match ArpRepr::parse(&packet).map_err(|_| DropReason::Malformed)? {
        ArpRepr::EthernetIpv4 {
            source_hardware_addr,
            source_protocol_addr,
            ..
        } => {
            if source_hardware_addr != zone.mac {
                return Err(DropReason::SpoofedMac);
            }
            // 0.0.0.0 is an address probe (RFC 5227), sent before the address is in use.
            if source_protocol_addr != zone.ipv4.address() && !source_protocol_addr.is_unspecified()
            {
                return Err(DropReason::SpoofedIp);
            }
            Ok(Frame::Gateway)
        }
        _ => Err(DropReason::Unsupported),
    }
}

fn ipv4<'a>(
    payload: &'a [u8],
    zone: &ZoneNet,
    dst_mac: EthernetAddress,
) -> Result<Frame<'a>, DropReason> {
    let packet = Ipv4Packet::new_checked(payload).map_err(|_| DropReason::Malformed)?;
    if !packet.verify_checksum() {
        return Err(DropReason::Malformed);
    }
    if packet.src_addr() != zone.ipv4.address() {
        return Err(DropReason::SpoofedIp);
    }
    if packet.more_frags() || packet.frag_offset() != 0 {
        return Err(DropReason::Unsupported);
    }
    if dst_mac != GATEWAY_MAC {
        return Err(DropReason::Reserved);
    }
    let ip = &payload[..usize::from(packet.total_len())];
    let body = &ip[usize::from(packet.header_len())..];
    let (src, dst) = (IpAddr::V4(packet.src_addr()), IpAddr::V4(packet.dst_addr()));
    match packet.next_header() {
        IpProtocol::Tcp => tcp(body, src, dst, ip),
        IpProtocol::Udp => udp(body, src, dst, ip),
        IpProtocol::Icmp => {
            let icmp = Icmpv4Packet::new_checked(body).map_err(|_| DropReason::Malformed)?;
            if icmp.msg_type() != Icmpv4Message::EchoRequest {
                return Err(DropReason::Unsupported);
            }
            if dst == zone.gateway(false) {
                return Ok(Frame::Gateway);
            }
            Ok(Frame::Echo {
                src,
                dst,
                ident: icmp.echo_ident(),
                seq: icmp.echo_seq_no(),
                data: icmp.data(),
            })
        }
        _ => Err(DropReason::Unsupported),
    }
}

fn ipv6<'a>(payload: &'a [u8], zone: &ZoneNet) -> Result<Frame<'a>, DropReason> {
    let packet = Ipv6Packet::new_checked(payload).map_err(|_| DropReason::Malformed)?;
    let src = packet.src_addr();
    let ip = &payload[..packet.total_len()];
    let body = &ip[40..];
    let own = src == zone.ipv6.address();
    // Neighbour discovery and MLD come from the link-local or unspecified address too.
    let local_only = src.is_unicast_link_local() || src.is_unspecified();
    if !own && !local_only {
        return Err(DropReason::SpoofedIp);
    }
    let (srcip, dst) = (IpAddr::V6(src), IpAddr::V6(packet.dst_addr()));
    match packet.next_header() {
        // MLD reports ride behind a hop-by-hop header; the gateway's stack sorts them out.
        IpProtocol::HopByHop => Ok(Frame::Gateway),
        IpProtocol::Icmpv6 => {
            let icmp = Icmpv6Packet::new_checked(body).map_err(|_| DropReason::Malformed)?;
            match icmp.msg_type() {
                Icmpv6Message::EchoRequest if own && dst != zone.gateway(true) => {
                    if dst.is_multicast() {
                        return Err(DropReason::Reserved);
                    }
                    Ok(Frame::Echo {
                        src: srcip,
                        dst,
                        ident: icmp.echo_ident(),
                        seq: icmp.echo_seq_no(),
                        data: icmp.payload(),
                    })
                }
                Icmpv6Message::EchoRequest
                | Icmpv6Message::RouterSolicit
                | Icmpv6Message::NeighborSolicit
                | Icmpv6Message::NeighborAdvert
                | Icmpv6Message::MldReport
                | Icmpv6Message::MldQuery => Ok(Frame::Gateway),
                _ => Err(DropReason::Unsupported),
            }
        }
        _ if !own => Err(DropReason::SpoofedIp),
        _ if dst.is_multicast() => Err(DropReason::Reserved),
        IpProtocol::Tcp => tcp(body, srcip, dst, ip),
        IpProtocol::Udp => udp(body, srcip, dst, ip),
        _ => Err(DropReason::Unsupported),
    }
}

fn tcp<'a>(body: &[u8], src: IpAddr, dst: IpAddr, ip: &'a [u8]) -> Result<Frame<'a>, DropReason> {
    let seg = TcpPacket::new_checked(body).map_err(|_| DropReason::Malformed)?;
    let info = TcpInfo {
        src_port: seg.src_port(),
        dst_port: seg.dst_port(),
        syn: seg.syn(),
        ack: seg.ack(),
        rst: seg.rst(),
        fin: seg.fin(),
        seq: seg.seq_number().0 as u32,
        ack_number: seg.ack_number().0 as u32,
        payload_len: seg.payload().len(),
    };
    if info.src_port == 0 || info.dst_port == 0 {
        return Err(DropReason::Malformed);
    }
    Ok(Frame::Tcp { src, dst, info, ip })
}

fn udp<'a>(
    body: &'a [u8],
    src: IpAddr,
    dst: IpAddr,
    ip: &'a [u8],
) -> Result<Frame<'a>, DropReason> {
    let dgram = UdpPacket::new_checked(body).map_err(|_| DropReason::Malformed)?;
    if dgram.src_port() == 0 || dgram.dst_port() == 0 {
        return Err(DropReason::Malformed);
    }
    let len = usize::from(dgram.len()).clamp(8, body.len());
    Ok(Frame::Udp {
        src,
        dst,
        src_port: dgram.src_port(),
        dst_port: dgram.dst_port(),
        payload: &body[8..len],
        ip,
    })
}
