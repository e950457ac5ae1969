//! Where a zone may send: the destination a flow's host socket connects to, or why not.
//!
//! The default stance: the gateway serves DNS only; other zones, the host's loopback and the
//! host's own addresses are out of reach; everything else is reached through the host's own
//! sockets (so the host's routes and firewall apply).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::config::PolicyConfig;
use crate::counters::DropReason;
use crate::dns::Upstreams;
use crate::zone::ZoneNet;

pub const DNS_PORT: u16 = 53;

/// What a flow's host side is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// An ordinary outbound flow.
    Outbound,
    /// The gateway's DNS forwarder.
    Dns,
}

#[derive(Debug)]
pub struct Policy {
    pub loopback_via_gateway: bool,
    pub allow_host_addresses: bool,
}

impl Policy {
    pub fn new(cfg: &PolicyConfig) -> Policy {
        Policy {
            loopback_via_gateway: cfg.host_loopback_via_gateway,
            allow_host_addresses: cfg.allow_host_addresses,
        }
    }

    /// The host address a zone's flow to `dst:port` goes to. `port` is 0 for ICMP echo.
    pub fn outbound(
        &self,
        zone: &ZoneNet,
        dst: IpAddr,
        port: u16,
        dns: &mut Upstreams,
    ) -> Result<(SocketAddr, Purpose), DropReason> {
        if dst == zone.gateway(dst.is_ipv6()) {
            if port == DNS_PORT {
                return dns
                    .pick()
                    .map(|a| (a, Purpose::Dns))
                    .ok_or(DropReason::Gateway);
            }
            if self.loopback_via_gateway && port != 0 {
                let lo = match dst {
                    IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                    IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
                };
                return Ok((SocketAddr::new(lo, port), Purpose::Outbound));
            }
            return Err(DropReason::Gateway);
        }
        if reserved(dst) {
            return Err(DropReason::Reserved);
        }
        if zone.in_zone_subnet(dst) {
            return Err(DropReason::ZoneToZone);
        }
        if dst.is_loopback() || (!self.allow_host_addresses && is_host_address(dst)) {
            return Err(DropReason::HostAddress);
        }
        Ok((SocketAddr::new(dst, port), Purpose::Outbound))
    }
}

/// Destinations no flow may have: unspecified, multicast, broadcast, link-local, and IPv4
/// addresses mapped into IPv6 (which would sidestep the IPv4 checks).
fn reserved(a: IpAddr) -> bool {
    match a {
        IpAddr::V4(a) => {
            a.is_unspecified() || a.is_multicast() || a.is_broadcast() || a.is_link_local()
        }
        IpAddr::V6(a) => {
            a.is_unspecified()
                || a.is_multicast()
                || a.is_unicast_link_local()
                || a.to_ipv4_mapped().is_some()
        }
    }
}

/// Whether `a` is one of the host's own addresses: the kernel lets a socket bind only to
/// those, which stays right as addresses come and go.
pub fn is_host_address(a: IpAddr) -> bool {
    let Ok(fd) = crate::socket::host_socket(a, rustix::net::SocketType::DGRAM, None) else {
        return false;
    };
    rustix::net::bind(&fd, &SocketAddr::new(a, 0)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DnsConfig;

    fn zone() -> ZoneNet {
        crate::fuzzing::zone()
    }

    fn dns() -> Upstreams {
        Upstreams::new(&DnsConfig {
            upstreams: vec!["127.0.0.1:5353".parse().unwrap()],
            ..DnsConfig::default()
        })
    }

    #[test]
    fn default_policy_keeps_zones_off_the_host_and_each_other() {
        let p = Policy::new(&PolicyConfig::default());
        let z = zone();
        let mut d = dns();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            p.outbound(&z, ip("10.75.0.1"), 80, &mut d),
            Err(DropReason::Gateway)
        );
        assert_eq!(
            p.outbound(&z, ip("10.75.0.1"), 53, &mut d),
            Ok(("127.0.0.1:5353".parse().unwrap(), Purpose::Dns))
        );
        assert_eq!(
            p.outbound(&z, ip("fdd4:1476:6c7e::1"), 53, &mut d)
                .unwrap()
                .1,
            Purpose::Dns
        );
        assert_eq!(
            p.outbound(&z, ip("10.75.0.3"), 80, &mut d),
            Err(DropReason::ZoneToZone)
        );
        assert_eq!(
            p.outbound(&z, ip("fdd4:1476:6c7e::9"), 80, &mut d),
            Err(DropReason::ZoneToZone)
        );
        assert_eq!(
            p.outbound(&z, ip("127.0.0.1"), 80, &mut d),
            Err(DropReason::HostAddress)
        );
        assert_eq!(
            p.outbound(&z, ip("::1"), 80, &mut d),
            Err(DropReason::HostAddress)
        );
        assert_eq!(
            p.outbound(&z, ip("224.0.0.1"), 80, &mut d),
            Err(DropReason::Reserved)
        );
        assert_eq!(
            p.outbound(&z, ip("::ffff:127.0.0.1"), 80, &mut d),
            Err(DropReason::Reserved)
        );
        assert_eq!(
            p.outbound(&z, ip("0.0.0.0"), 80, &mut d),
            Err(DropReason::Reserved)
        );
        // TEST-NET-3 (RFC 5737): never a local address, so the flow may go out.
        assert_eq!(
            p.outbound(&z, ip("203.0.113.7"), 443, &mut d),
            Ok(("203.0.113.7:443".parse().unwrap(), Purpose::Outbound))
        );
    }

    #[test]
    fn the_loopback_mapping_sends_gateway_ports_to_host_loopback() {
        let p = Policy::new(&PolicyConfig {
            host_loopback_via_gateway: true,
            ..PolicyConfig::default()
        });
        let z = zone();
        let mut d = dns();
        assert_eq!(
            p.outbound(&z, "10.75.0.1".parse().unwrap(), 8080, &mut d),
            Ok(("127.0.0.1:8080".parse().unwrap(), Purpose::Outbound))
        );
        assert_eq!(
            p.outbound(&z, "fdd4:1476:6c7e::1".parse().unwrap(), 8080, &mut d),
            Ok(("[::1]:8080".parse().unwrap(), Purpose::Outbound))
        );
        // Still only through the gateway: 127.0.0.1 itself stays unreachable.
        assert_eq!(
            p.outbound(&z, "127.0.0.1".parse().unwrap(), 8080, &mut d),
            Err(DropReason::HostAddress)
        );
    }

    #[test]
    fn host_addresses_are_found_by_the_kernel() {
        assert!(is_host_address("127.0.0.1".parse().unwrap()));
        assert!(!is_host_address("203.0.113.7".parse().unwrap()));
    }
}
