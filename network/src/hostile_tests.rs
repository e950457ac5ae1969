//! Hostile frames from a zone, each with the exact verdict expected, then fed to a whole stack
//! through the stream framing ([`crate::fuzzing`]); plus the stream framing's own hostile cases.

use std::net::IpAddr;

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    EthernetRepr, IpAddress, IpProtocol, IpRepr, TcpControl, TcpPacket, TcpRepr, TcpSeqNumber,
    UdpPacket, UdpRepr,
};

use crate::counters::DropReason;
use crate::fuzzing::{fuzz_one, run_frames, zone};
use crate::stack::parse::{Frame, classify};
use crate::zone::GATEWAY_MAC;

const ZONE_MAC: EthernetAddress = EthernetAddress([0x02, 0x73, 0x70, 0, 0, 2]);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn eth(src: EthernetAddress, dst: EthernetAddress, ty: EthernetProtocol, body: &[u8]) -> Vec<u8> {
    let mut f = vec![0; 14 + body.len()];
    EthernetRepr {
        src_addr: src,
        dst_addr: dst,
        ethertype: ty,
    }
    .emit(&mut EthernetFrame::new_unchecked(&mut f[..]));
    f[14..].copy_from_slice(body);
    f
}

fn ip_packet(src: IpAddr, dst: IpAddr, proto: IpProtocol, payload: &[u8]) -> Vec<u8> {
    let repr = IpRepr::new(src.into(), dst.into(), proto, payload.len(), 64);
    let mut p = vec![0; repr.buffer_len()];
    repr.emit(&mut p[..], &ChecksumCapabilities::default());
    let hl = repr.header_len();
    p[hl..].copy_from_slice(payload);
    p
}

fn tcp(
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
    control: TcpControl,
    ack: bool,
) -> Vec<u8> {
    let repr = TcpRepr {
        src_port: sport,
        dst_port: dport,
        control,
        seq_number: TcpSeqNumber(1000),
        ack_number: ack.then_some(TcpSeqNumber(5000)),
        window_len: 1024,
        window_scale: None,
        max_seg_size: None,
        sack_permitted: false,
        sack_ranges: [None; 3],
        timestamp: None,
        payload: &[],
    };
    let mut seg = vec![0; repr.buffer_len()];
    repr.emit(
        &mut TcpPacket::new_unchecked(&mut seg[..]),
        &IpAddress::from(src),
        &IpAddress::from(dst),
        &ChecksumCapabilities::default(),
    );
    ip_packet(src, dst, IpProtocol::Tcp, &seg)
}

fn udp(src: IpAddr, dst: IpAddr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let repr = UdpRepr {
        src_port: sport,
        dst_port: dport,
    };
    let mut d = vec![0; 8 + payload.len()];
    repr.emit(
        &mut UdpPacket::new_unchecked(&mut d[..]),
        &IpAddress::from(src),
        &IpAddress::from(dst),
        payload.len(),
        |p| p.copy_from_slice(payload),
        &ChecksumCapabilities::default(),
    );
    ip_packet(src, dst, IpProtocol::Udp, &d)
}

fn v4(packet: &[u8]) -> Vec<u8> {
    eth(ZONE_MAC, GATEWAY_MAC, EthernetProtocol::Ipv4, packet)
}

fn v6(packet: &[u8]) -> Vec<u8> {
    eth(ZONE_MAC, GATEWAY_MAC, EthernetProtocol::Ipv6, packet)
}

fn arp(sender_mac: EthernetAddress, sender_ip: [u8; 4]) -> Vec<u8> {
    let mut a = vec![0; 28];
    ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Request,
        source_hardware_addr: sender_mac,
        source_protocol_addr: sender_ip.into(),
        target_hardware_addr: EthernetAddress([0; 6]),
        target_protocol_addr: [10, 75, 0, 1].into(),
    }
    .emit(&mut ArpPacket::new_unchecked(&mut a[..]));
    eth(
        ZONE_MAC,
        EthernetAddress::BROADCAST,
        EthernetProtocol::Arp,
        &a,
    )
}

fn verdict(frame: &[u8]) -> Result<&'static str, DropReason> {
    classify(frame, &zone()).map(|f| match f {
        Frame::Gateway => "gateway",
        Frame::Tcp { .. } => "tcp",
        Frame::Udp { .. } => "udp",
        Frame::Echo { .. } => "echo",
    })
}

#[test]
fn every_hostile_frame_gets_its_exact_verdict() {
    let (zone4, gw4, out4) = (ip("10.75.0.2"), ip("10.75.0.1"), ip("203.0.113.9"));
    let (zone6, out6) = (ip("fdd4:1476:6c7e::2"), ip("2001:db8::9"));
    let syn = tcp(zone4, out4, 40000, 443, TcpControl::Syn, false);

    let mut bad_checksum = syn.clone();
    bad_checksum[10] ^= 0xff;
    let mut fragment = syn.clone();
    fragment[6] = 0x20; // more fragments
    let mut fragment_fixed = fragment.clone();
    let mut p = smoltcp::wire::Ipv4Packet::new_unchecked(&mut fragment_fixed[..]);
    p.fill_checksum();
    let mut long_total = syn.clone();
    long_total[2..4].copy_from_slice(&2000u16.to_be_bytes());
    let mut short_header = syn.clone();
    short_header[0] = 0x44; // IHL 4: shorter than an IPv4 header
    let mut tcp_offset = syn.clone();
    tcp_offset[20 + 12] = 0xf0; // data offset 60 bytes, beyond the segment
    let mut tcp_offset_fixed = tcp_offset.clone();
    smoltcp::wire::Ipv4Packet::new_unchecked(&mut tcp_offset_fixed[..]).fill_checksum();
    let mut v6_long = tcp(zone6, out6, 40000, 443, TcpControl::Syn, false);
    v6_long[4..6].copy_from_slice(&9000u16.to_be_bytes());
    let icmp_redirect = ip_packet(zone4, gw4, IpProtocol::Icmp, &[5, 0, 0, 0, 0, 0, 0, 0]);

    let cases: Vec<(&str, Vec<u8>, Result<&str, DropReason>)> = vec![
        ("empty", vec![], Err(DropReason::Malformed)),
        ("13 bytes", vec![0; 13], Err(DropReason::Malformed)),
        ("a SYN out", v4(&syn), Ok("tcp")),
        (
            "another MAC",
            eth(
                EthernetAddress([2, 0, 0, 0, 0, 9]),
                GATEWAY_MAC,
                EthernetProtocol::Ipv4,
                &syn,
            ),
            Err(DropReason::SpoofedMac),
        ),
        (
            "to another zone's MAC",
            eth(
                ZONE_MAC,
                EthernetAddress([2, 0x73, 0x70, 0, 0, 3]),
                EthernetProtocol::Ipv4,
                &syn,
            ),
            Err(DropReason::ZoneToZone),
        ),
        (
            "bad IPv4 checksum",
            v4(&bad_checksum),
            Err(DropReason::Malformed),
        ),
        (
            "fragment, bad checksum",
            v4(&fragment),
            Err(DropReason::Malformed),
        ),
        (
            "fragment",
            v4(&fragment_fixed),
            Err(DropReason::Unsupported),
        ),
        (
            "total length past the frame",
            v4(&long_total),
            Err(DropReason::Malformed),
        ),
        ("IHL below 5", v4(&short_header), Err(DropReason::Malformed)),
        (
            "TCP offset past the segment",
            v4(&tcp_offset_fixed),
            Err(DropReason::Malformed),
        ),
        (
            "another IPv4 source",
            v4(&tcp(ip("10.75.0.99"), out4, 1, 2, TcpControl::Syn, false)),
            Err(DropReason::SpoofedIp),
        ),
        (
            "TCP port 0",
            v4(&tcp(zone4, out4, 0, 80, TcpControl::Syn, false)),
            Err(DropReason::Malformed),
        ),
        (
            "UDP port 0",
            v4(&udp(zone4, out4, 5, 0, b"x")),
            Err(DropReason::Malformed),
        ),
        ("UDP", v4(&udp(zone4, gw4, 5353, 53, b"q")), Ok("udp")),
        (
            "ICMP redirect",
            v4(&icmp_redirect),
            Err(DropReason::Unsupported),
        ),
        (
            "IPv6 payload past the frame",
            v6(&v6_long),
            Err(DropReason::Malformed),
        ),
        (
            "IPv6 TCP from link-local",
            v6(&tcp(ip("fe80::2"), out6, 1, 2, TcpControl::Syn, false)),
            Err(DropReason::SpoofedIp),
        ),
        (
            "IPv6 TCP",
            v6(&tcp(zone6, out6, 1, 2, TcpControl::Syn, false)),
            Ok("tcp"),
        ),
        (
            "IPv6 UDP to multicast",
            v6(&udp(zone6, ip("ff02::fb"), 5353, 5353, b"m")),
            Err(DropReason::Reserved),
        ),
        ("ARP", arp(ZONE_MAC, [10, 75, 0, 2]), Ok("gateway")),
        ("ARP probe", arp(ZONE_MAC, [0, 0, 0, 0]), Ok("gateway")),
        (
            "ARP for another address",
            arp(ZONE_MAC, [10, 75, 0, 7]),
            Err(DropReason::SpoofedIp),
        ),
        (
            "ARP with another sender MAC",
            arp(EthernetAddress([2, 0, 0, 0, 0, 9]), [10, 75, 0, 2]),
            Err(DropReason::SpoofedMac),
        ),
        (
            "unknown ethertype",
            eth(
                ZONE_MAC,
                GATEWAY_MAC,
                EthernetProtocol::Unknown(0x88cc),
                &[0; 40],
            ),
            Err(DropReason::Unsupported),
        ),
    ];
    for (name, frame, want) in &cases {
        assert_eq!(verdict(frame), *want, "{name}");
    }
    // The whole stack takes all of them in one batch without a panic.
    run_frames(&cases.into_iter().map(|(_, f, _)| f).collect::<Vec<_>>());
}

/// The frames the stack sends back for `frames`.
fn replies(frames: &[Vec<u8>]) -> Vec<Vec<u8>> {
    crate::fuzzing::replies(frames)
}

#[test]
fn stray_segments_get_one_reset_and_resets_get_nothing() {
    let (zone4, out4) = (ip("10.75.0.2"), ip("203.0.113.9"));
    let ack = v4(&tcp(zone4, out4, 40000, 443, TcpControl::None, true));
    let rst = v4(&tcp(zone4, out4, 40000, 443, TcpControl::Rst, true));
    let out = replies(&[ack, rst]);
    assert_eq!(out.len(), 1, "one RST for the stray ACK, none for the RST");
    let eth = EthernetFrame::new_checked(&out[0][..]).unwrap();
    let ip = smoltcp::wire::Ipv4Packet::new_checked(eth.payload()).unwrap();
    assert_eq!(
        IpAddr::V4(ip.src_addr()),
        out4,
        "from where the segment went"
    );
    let seg = TcpPacket::new_checked(ip.payload()).unwrap();
    assert!(seg.rst());
    assert_eq!(
        seg.seq_number(),
        TcpSeqNumber(5000),
        "the stray ACK's number"
    );
    assert_eq!((seg.src_port(), seg.dst_port()), (443, 40000));
}

#[test]
fn a_syn_past_the_connect_limit_is_reset_not_connected() {
    // The harness allows no pending connect: the SYN gate must refuse without any socket.
    let syn = v4(&tcp(
        ip("10.75.0.2"),
        ip("203.0.113.9"),
        40001,
        443,
        TcpControl::Syn,
        false,
    ));
    let out = replies(&[syn]);
    assert_eq!(out.len(), 1);
    let eth = EthernetFrame::new_checked(&out[0][..]).unwrap();
    let ip = smoltcp::wire::Ipv4Packet::new_checked(eth.payload()).unwrap();
    let seg = TcpPacket::new_checked(ip.payload()).unwrap();
    assert!(seg.rst() && seg.ack());
    assert_eq!(seg.ack_number(), TcpSeqNumber(1001), "acknowledges the SYN");
}

#[test]
fn hostile_streams_through_the_framing() {
    let frame = v4(&udp(ip("10.75.0.2"), ip("10.75.0.1"), 5353, 53, b"q"));
    let framed = |f: &[u8]| {
        let mut s = (f.len() as u32).to_be_bytes().to_vec();
        s.extend_from_slice(f);
        s
    };
    let streams: Vec<Vec<u8>> = vec![
        vec![],
        vec![0],
        [vec![0], framed(&frame)].concat(),
        [vec![3], framed(&frame), framed(&frame)].concat(),
        // A zero length, a length below a header, a length past the largest frame.
        [vec![0], vec![0, 0, 0, 0]].concat(),
        [vec![1], 13u32.to_be_bytes().to_vec(), vec![0; 13]].concat(),
        [
            vec![255],
            0xffff_ffffu32.to_be_bytes().to_vec(),
            vec![0; 100],
        ]
        .concat(),
        [vec![9], 65536u32.to_be_bytes().to_vec()].concat(),
        // A frame cut short, then garbage.
        [vec![0], framed(&frame)[..20].to_vec()].concat(),
        [vec![7], (0..5000).map(|i| (i * 31) as u8).collect()].concat(),
    ];
    for s in &streams {
        fuzz_one(s);
    }
}
