//! sporenet: the zones' network service.
//!
//! Each zone gets a gateway (IPv4 and IPv6) served by a userspace stack, and reaches the host's
//! network through a proxy NAT: the zone's TCP, UDP and ICMP echo flows become the host's own
//! sockets, with no kernel bridge and no iptables. Published ports are host listeners carried
//! into the zone from the gateway. docs/network.md has the model; the parts:
//!
//! - [`discovery`] follows spored through its API and says which zones to attach;
//! - [`service`] runs one [`engine`] loop per attached zone and writes the status file;
//! - [`link`] is the seam to the zone's NIC (QEMU's stream socket, a tap; Xen's later);
//! - [`stack`] demultiplexes frames: the gateway's own interface, then one flow per 5-tuple
//!   (TCP through the SYN gate, UDP, ICMP echo), with [`policy`] deciding where a flow may go
//!   and [`dns`] where the gateway's resolver forwards.

pub mod config;
pub mod counters;
pub mod discovery;
pub mod dns;
pub mod engine;
pub mod frames;
pub mod link;
pub mod policy;
pub mod poller;
pub mod ports;
pub mod service;
pub mod socket;
pub mod stack;
pub(crate) mod sys;
pub mod zone;

#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
#[cfg(test)]
mod hostile_tests;

/// An error and its sources, `: `-separated (library errors never repeat their source).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}
