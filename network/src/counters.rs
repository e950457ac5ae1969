//! Per-zone counters: traffic, flows, and every frame or flow sporenet refused, by reason.
//! Written by the zone's loop, read by the status writer (relaxed atomics: each is a tally).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// Why a frame or a flow was refused. Each has its own counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Not a parseable Ethernet/ARP/IPv4/IPv6/TCP/UDP/ICMP frame.
    Malformed,
    /// A protocol the gateway does not carry (e.g. SCTP, IP options it cannot route).
    Unsupported,
    /// Source MAC other than the zone's reserved one.
    SpoofedMac,
    /// Source IP other than the zone's reserved ones.
    SpoofedIp,
    /// Addressed to another zone (zones never reach each other).
    ZoneToZone,
    /// Addressed to the host's loopback or own addresses, not allowed by policy.
    HostAddress,
    /// Addressed to the gateway on a port it does not serve.
    Gateway,
    /// Multicast, broadcast, unspecified or link-local destinations beyond the gateway.
    Reserved,
    /// A new flow past the zone's flow, connect or buffer limit.
    FlowLimit,
    /// A TCP segment for no flow (answered with RST).
    NoFlow,
    /// A host connect was refused (answered with RST).
    ConnectRefused,
    /// A host connect failed or timed out (answered with ICMP unreachable).
    ConnectFailed,
    /// A UDP datagram the host socket would not take right now.
    HostBusy,
}

impl DropReason {
    pub const ALL: [DropReason; 13] = [
        DropReason::Malformed,
        DropReason::Unsupported,
        DropReason::SpoofedMac,
        DropReason::SpoofedIp,
        DropReason::ZoneToZone,
        DropReason::HostAddress,
        DropReason::Gateway,
        DropReason::Reserved,
        DropReason::FlowLimit,
        DropReason::NoFlow,
        DropReason::ConnectRefused,
        DropReason::ConnectFailed,
        DropReason::HostBusy,
    ];

    pub fn name(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::Unsupported => "unsupported",
            DropReason::SpoofedMac => "spoofed_mac",
            DropReason::SpoofedIp => "spoofed_ip",
            DropReason::ZoneToZone => "zone_to_zone",
            DropReason::HostAddress => "host_address",
            DropReason::Gateway => "gateway_port",
            DropReason::Reserved => "reserved_destination",
            DropReason::FlowLimit => "flow_limit",
            DropReason::NoFlow => "no_flow",
            DropReason::ConnectRefused => "connect_refused",
            DropReason::ConnectFailed => "connect_failed",
            DropReason::HostBusy => "host_busy",
        }
    }
}

#[derive(Debug, Default)]
pub struct Counters {
    pub rx_frames: AtomicU64,
    pub rx_bytes: AtomicU64,
    pub tx_bytes: AtomicU64,
    pub tcp_flows: AtomicU64,
    pub udp_flows: AtomicU64,
    pub icmp_flows: AtomicU64,
    pub link_up: AtomicU64,
    pub link_reconnects: AtomicU64,
    drops: [AtomicU64; DropReason::ALL.len()],
}

impl Counters {
    pub fn note(&self, why: DropReason) {
        self.drops[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn dropped(&self, why: DropReason) -> u64 {
        self.drops[why as usize].load(Ordering::Relaxed)
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn set(counter: &AtomicU64, n: u64) {
        counter.store(n, Ordering::Relaxed);
    }

    /// Non-zero drop counters by name.
    pub fn drops(&self) -> BTreeMap<&'static str, u64> {
        DropReason::ALL
            .iter()
            .map(|d| (d.name(), self.dropped(*d)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_its_own_counter_and_name() {
        let c = Counters::default();
        for (i, d) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*d as usize, i);
            for _ in 0..=i {
                c.note(*d);
            }
        }
        let names = c.drops();
        assert_eq!(names.len(), DropReason::ALL.len());
        assert_eq!(names["spoofed_mac"], DropReason::SpoofedMac as u64 + 1);
    }
}
