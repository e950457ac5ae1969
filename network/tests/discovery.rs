//! sporenet in its service mode against a test double of spored's API, with the test acting as
//! each zone's QEMU: it listens on `<state>/zones/<id>/net.sock` as `-netdev
//! stream,server=on` does, and checks that the gateway answers ARP over the u32-BE framing.

mod support;

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    EthernetRepr,
};
use spore_api::v1::ZoneState;
use support::double::{Double, zone};
use support::{Cleanup, Proc};

const GATEWAY_MAC: EthernetAddress = EthernetAddress([0x02, 0x73, 0x70, 0, 0, 1]);

/// Listens where QEMU would for zone `id`.
fn qemu(state: &Path, id: &str) -> UnixListener {
    let dir = state.join("zones").join(id);
    std::fs::create_dir_all(&dir).unwrap();
    let l = UnixListener::bind(dir.join("net.sock")).unwrap();
    l.set_nonblocking(true).unwrap();
    l
}

fn accept(l: &UnixListener, what: &str) -> UnixStream {
    let start = Instant::now();
    loop {
        match l.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                return s;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(
                    start.elapsed() < Duration::from_secs(15),
                    "sporenet never connected: {what}"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
}

/// Sends an ARP request for the gateway from zone `index` and expects the gateway's reply.
fn arp_roundtrip(s: &mut UnixStream, index: u8) {
    let mac = EthernetAddress([0x02, 0x73, 0x70, 0, 0, index]);
    let mut frame = vec![0u8; 14 + 28];
    EthernetRepr {
        src_addr: mac,
        dst_addr: EthernetAddress::BROADCAST,
        ethertype: EthernetProtocol::Arp,
    }
    .emit(&mut EthernetFrame::new_unchecked(&mut frame[..]));
    ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Request,
        source_hardware_addr: mac,
        source_protocol_addr: [10, 75, 0, index].into(),
        target_hardware_addr: EthernetAddress([0; 6]),
        target_protocol_addr: [10, 75, 0, 1].into(),
    }
    .emit(&mut ArpPacket::new_unchecked(&mut frame[14..]));
    s.write_all(&(frame.len() as u32).to_be_bytes()).unwrap();
    s.write_all(&frame).unwrap();
    let mut len = [0; 4];
    s.read_exact(&mut len).expect("the gateway's ARP reply");
    let mut reply = vec![0; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut reply).unwrap();
    let eth = EthernetFrame::new_checked(&reply[..]).unwrap();
    assert_eq!(eth.src_addr(), GATEWAY_MAC);
    assert_eq!(eth.dst_addr(), mac);
    let arp = ArpRepr::parse(&ArpPacket::new_checked(eth.payload()).unwrap()).unwrap();
    assert!(matches!(
        arp,
        ArpRepr::EthernetIpv4 { operation: ArpOperation::Reply, source_protocol_addr, .. }
            if source_protocol_addr == std::net::Ipv4Addr::new(10, 75, 0, 1)
    ));
}

/// The peer closed the stream (sporenet detached).
fn assert_closed(s: &mut UnixStream, what: &str) {
    let mut buf = [0; 64];
    match s.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("{what}: expected the link to close, got {other:?}"),
    }
}

fn sporenet(c: &Cleanup, socket: &Path) -> Proc {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(c.dir.join("sporenet.log"))
        .unwrap();
    Proc(Some(
        c.spawn(
            Command::new(env!("CARGO_BIN_EXE_sporenet"))
                .arg("--config")
                .arg(c.dir.join("none.toml"))
                .arg("--socket")
                .arg(socket)
                .arg("--status-file")
                .arg(c.dir.join("status.json"))
                .arg("run")
                .env("RUST_LOG", "sporenet=debug")
                .stdout(log.try_clone().unwrap())
                .stderr(log),
        ),
    ))
}

const ID1: &str = "11111111-1111-4111-8111-111111111111";
const ID2: &str = "22222222-2222-4222-8222-222222222222";
const ID3: &str = "33333333-3333-4333-8333-333333333333";

#[test]
fn sporenet_follows_spored_through_events_restarts_and_its_own_crash() {
    let c = Cleanup::new("discovery");
    std::fs::write(c.dir.join("none.toml"), "").unwrap();
    let state: PathBuf = c.dir.join("state");
    let socket = c.dir.join("spored.sock");
    let double = Double::new(&state);
    let z1 = zone(ID1, "one", 2, ZoneState::Starting);
    double.transition(&z1, ZoneState::Starting);
    double.transition(&z1, ZoneState::Running);
    let q1 = qemu(&state, ID1);
    let server = double.serve(&socket);
    let mut net = sporenet(&c, &socket);
    let log = || std::fs::read_to_string(c.dir.join("sporenet.log")).unwrap_or_default();

    // A zone already running when sporenet starts is attached.
    let mut l1 = accept(&q1, "zone one (running at start)");
    arp_roundtrip(&mut l1, 2);
    // QEMU's side of the link goes away and listens again: sporenet reconnects.
    drop(l1);
    let mut l1 = accept(&q1, "zone one after its link dropped");
    arp_roundtrip(&mut l1, 2);

    // A new zone is attached at STARTING.
    let z2 = zone(ID2, "two", 3, ZoneState::Starting);
    let q2 = qemu(&state, ID2);
    double.transition(&z2, ZoneState::Starting);
    let mut l2 = accept(&q2, "zone two at STARTING");
    arp_roundtrip(&mut l2, 3);

    // Zone one's peer sends an impossible frame length: only zone one's link is dropped (and
    // reopened); zone two is served throughout.
    l1.write_all(&0xffff_ffffu32.to_be_bytes()).unwrap();
    assert_closed(&mut l1, "zone one after a bogus frame length");
    arp_roundtrip(&mut l2, 3);
    let mut l1 = accept(&q1, "zone one after its bad link was dropped");
    arp_roundtrip(&mut l1, 2);
    arp_roundtrip(&mut l2, 3);

    // Zone one exits: detached.
    double.transition(&z1, ZoneState::Exited);
    assert_closed(&mut l1, "zone one after EXITED");

    // spored restarts; while it is down zone two is destroyed. sporenet resumes from the
    // event after the last it saw and detaches zone two.
    drop(server);
    double.transition(&z2, ZoneState::Destroying);
    std::thread::sleep(Duration::from_millis(300));
    let server = double.serve(&socket);
    assert_closed(&mut l2, "zone two destroyed while spored was down");

    // sporenet is killed; a zone starts meanwhile; the new sporenet attaches to it.
    drop(net);
    let z3 = zone(ID3, "three", 4, ZoneState::Starting);
    let q3 = qemu(&state, ID3);
    double.transition(&z3, ZoneState::Starting);
    double.transition(&z3, ZoneState::Running);
    net = sporenet(&c, &socket);
    let mut l3 = accept(&q3, "zone three after sporenet's restart");
    arp_roundtrip(&mut l3, 4);
    // And the exited zone stays detached.
    assert!(
        q1.accept().is_err(),
        "zone one was attached again after EXITED"
    );
    // The status file lists what is served.
    support::until(
        "the status file to list zone three only",
        Duration::from_secs(5),
        || {
            let text = std::fs::read_to_string(c.dir.join("status.json")).ok()?;
            let v: serde_json::Value = serde_json::from_str(&text).ok()?;
            let zones = v["zones"].as_array()?;
            (zones.len() == 1 && zones[0]["name"] == "three" && zones[0]["link_up"] == true)
                .then_some(())
        },
    );
    drop(net);
    drop(server);
    assert!(log().contains("following spored"), "{}", log());
}
