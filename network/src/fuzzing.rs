//! The hostile-input harness shared by the cargo-fuzz target (`network/fuzz`) and the corpus
//! test: the first byte picks how a byte stream is cut into reads; the stream goes through the
//! link framing, and every frame it yields through the classifier and a zone's whole stack.
//! Panics only on a broken invariant.
//!
//! Compiled for this crate's tests and with the `fuzzing` feature only.

use std::sync::Arc;

use crate::config::Config;
use crate::counters::Counters;
use crate::link::framing::{Decoder, HEADER, MAX_FRAME, MIN_FRAME};
use crate::poller::Poller;
use crate::stack::Stack;
use crate::zone::ZoneNet;

pub fn zone() -> ZoneNet {
    ZoneNet {
        id: "fuzz".into(),
        name: "fuzz".into(),
        mac: smoltcp::wire::EthernetAddress([0x02, 0x73, 0x70, 0, 0, 2]),
        ipv4: "10.75.0.2/16".parse().expect("literal"),
        ipv6: "fdd4:1476:6c7e::2/48".parse().expect("literal"),
        gateway_ipv4: "10.75.0.1".parse().expect("literal"),
        gateway_ipv6: "fdd4:1476:6c7e::1".parse().expect("literal"),
        mtu: 65520,
        ports: Vec::new(),
    }
}

/// Decodes `data[1..]` read in pieces of `data[0] + 1` bytes; every frame goes to the stack.
pub fn fuzz_one(data: &[u8]) {
    let Some((&cut, stream)) = data.split_first() else {
        return;
    };
    let piece = usize::from(cut) + 1;
    let mut decoder = Decoder::new(0);
    let mut frames = Vec::new();
    let mut consumed = 0;
    'outer: for chunk in stream.chunks(piece) {
        let spare = decoder.spare();
        spare[..chunk.len()].copy_from_slice(chunk);
        decoder.filled(chunk.len());
        loop {
            match decoder.next_frame() {
                Ok(Some(f)) => {
                    assert!((MIN_FRAME..=MAX_FRAME).contains(&f.len()));
                    consumed += HEADER + f.len();
                    frames.push(f.to_vec());
                }
                Ok(None) => break,
                Err(e) => {
                    assert!(!(MIN_FRAME as u32..=MAX_FRAME as u32).contains(&e.len));
                    break 'outer;
                }
            }
        }
        assert!(decoder.pending() <= HEADER + MAX_FRAME);
    }
    assert!(consumed <= stream.len());
    run_frames(&frames);
}

/// Feeds frames to the classifier and a fresh stack (no link: replies stay queued).
pub fn run_frames(frames: &[Vec<u8>]) {
    replies(frames);
}

/// Like [`run_frames`], returning the frames the stack queued for the zone.
pub fn replies(frames: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let zone = zone();
    let mut cfg = Config::default();
    // No flow may reach anything real: the fuzzer's flows would connect for real otherwise.
    cfg.policy.max_pending_connects = 0;
    cfg.policy.max_udp_flows = 0;
    cfg.policy.max_icmp_flows = 0;
    cfg.dns.upstreams = vec!["127.0.0.1:9".parse().expect("literal")];
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .expect("runtime");
    let _guard = runtime.enter();
    let poller = Poller::new().expect("poller");
    let mut stack = Stack::new(zone.clone(), Arc::new(cfg), Arc::new(Counters::default()));
    for f in frames {
        let _ = crate::stack::parse::classify(f, &zone);
        stack.ingress(f, &poller);
    }
    stack.service();
    // Whatever the stack answered is well-formed Ethernet from the gateway to the zone.
    let mut out = Vec::new();
    while let Some(f) = stack.tx.next_frame() {
        let eth = smoltcp::wire::EthernetFrame::new_checked(f).expect("reply is a frame");
        assert_eq!(eth.src_addr(), crate::zone::GATEWAY_MAC);
        assert_eq!(eth.dst_addr(), zone.mac);
        out.push(f.to_vec());
        stack.tx.consume_frame();
    }
    out
}
