//! What sporenet needs to know about one zone: its reserved addresses and MAC (as spored
//! reports them in `ZoneStatus.network`), its gateway, its MTU and its published ports.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use smoltcp::wire::{EthernetAddress, Ipv4Cidr, Ipv6Cidr};
use spore_api::v1;

/// The gateway's MAC: index 1 of spored's address plan (`02:73:70` + index), the index the
/// plan reserves for the gateway, so it can never be a zone's.
pub const GATEWAY_MAC: EthernetAddress = EthernetAddress([0x02, 0x73, 0x70, 0, 0, 1]);

/// A field spored reported that sporenet cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ZoneError {
    #[error("{field}: {value:?} is not {expected}")]
    Field {
        field: &'static str,
        value: String,
        expected: &'static str,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    Tcp,
    Udp,
}

impl std::fmt::Display for Proto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        })
    }
}

/// `host_address:host_port -> zone_port/proto`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PublishedPort {
    /// None: all addresses (IPv4 and IPv6).
    pub host_address: Option<IpAddr>,
    pub host_port: u16,
    pub zone_port: u16,
    pub proto: Proto,
}

impl std::fmt::Display for PublishedPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.host_address {
            Some(IpAddr::V6(a)) => write!(f, "[{a}]:")?,
            Some(a) => write!(f, "{a}:")?,
            None => {}
        }
        write!(f, "{}:{}/{}", self.host_port, self.zone_port, self.proto)
    }
}

impl std::str::FromStr for PublishedPort {
    type Err = ZoneError;

    /// docker's syntax: `[ADDR:]HOST_PORT:ZONE_PORT[/tcp|/udp]`, IPv6 addresses in brackets.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ZoneError::Field {
            field: "port",
            value: s.to_owned(),
            expected: "[ADDRESS:]HOST_PORT:ZONE_PORT[/tcp|/udp]",
        };
        let (rest, proto) = match s.rsplit_once('/') {
            Some((r, "tcp")) => (r, Proto::Tcp),
            Some((r, "udp")) => (r, Proto::Udp),
            Some(_) => return Err(bad()),
            None => (s, Proto::Tcp),
        };
        let (rest, zone_port) = rest.rsplit_once(':').ok_or_else(bad)?;
        let (addr, host_port) = match rest.rsplit_once(':') {
            Some((a, p)) => (Some(a), p),
            None => (None, rest),
        };
        let port = |p: &str| p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(bad);
        let host_address = match addr {
            None => None,
            Some(a) => Some(
                a.trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<IpAddr>()
                    .map_err(|_| bad())?,
            ),
        };
        Ok(PublishedPort {
            host_address,
            host_port: port(host_port)?,
            zone_port: port(zone_port)?,
            proto,
        })
    }
}

/// One zone's network identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneNet {
    pub id: String,
    pub name: String,
    pub mac: EthernetAddress,
    pub ipv4: Ipv4Cidr,
    pub ipv6: Ipv6Cidr,
    pub gateway_ipv4: Ipv4Addr,
    pub gateway_ipv6: Ipv6Addr,
    /// The guest interface's MTU (IP packet size).
    pub mtu: usize,
    pub ports: Vec<PublishedPort>,
}

impl ZoneNet {
    /// From spored's view of a zone; `None` when the zone has networking disabled or no
    /// reservation.
    pub fn from_zone(zone: &v1::Zone, mtu: usize) -> Result<Option<ZoneNet>, ZoneError> {
        let spec = zone.spec.clone().unwrap_or_default();
        let Some(net) = zone.status.as_ref().and_then(|s| s.network.as_ref()) else {
            return Ok(None);
        };
        if spec.network_disabled || net.ipv4.is_empty() {
            return Ok(None);
        }
        let ports = spec
            .ports
            .iter()
            .map(port_of)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(ZoneNet {
            id: zone.id.clone(),
            name: zone.name.clone(),
            mac: parse_field("network.mac", &net.mac, "a MAC address")?,
            ipv4: parse_field("network.ipv4", &net.ipv4, "an IPv4 address/prefix")?,
            ipv6: parse_field("network.ipv6", &net.ipv6, "an IPv6 address/prefix")?,
            gateway_ipv4: parse_field(
                "network.gateway_ipv4",
                &net.gateway_ipv4,
                "an IPv4 address",
            )?,
            gateway_ipv6: parse_field(
                "network.gateway_ipv6",
                &net.gateway_ipv6,
                "an IPv6 address",
            )?,
            mtu,
            ports,
        }))
    }

    /// The zone's address of the same family as `a`.
    pub fn own_address(&self, v6: bool) -> IpAddr {
        if v6 {
            IpAddr::V6(self.ipv6.address())
        } else {
            IpAddr::V4(self.ipv4.address())
        }
    }

    pub fn gateway(&self, v6: bool) -> IpAddr {
        if v6 {
            IpAddr::V6(self.gateway_ipv6)
        } else {
            IpAddr::V4(self.gateway_ipv4)
        }
    }

    /// Whether `a` lies in the zones' subnet (where only the gateway answers).
    pub fn in_zone_subnet(&self, a: IpAddr) -> bool {
        match a {
            IpAddr::V4(a) => self.ipv4.contains_addr(&a),
            IpAddr::V6(a) => self.ipv6.contains_addr(&a),
        }
    }
}

fn parse_field<T: std::str::FromStr>(
    field: &'static str,
    value: &str,
    expected: &'static str,
) -> Result<T, ZoneError> {
    value.parse().map_err(|_| ZoneError::Field {
        field,
        value: value.to_owned(),
        expected,
    })
}

fn port_of(p: &v1::PortMapping) -> Result<PublishedPort, ZoneError> {
    let port = |field, v: u32| {
        u16::try_from(v)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| ZoneError::Field {
                field,
                value: v.to_string(),
                expected: "a port 1-65535",
            })
    };
    let host_address = if p.host_address.is_empty() {
        None
    } else {
        Some(parse_field(
            "spec.ports.host_address",
            &p.host_address,
            "an IP address",
        )?)
    };
    Ok(PublishedPort {
        host_address,
        host_port: port("spec.ports.host_port", p.host_port)?,
        zone_port: port("spec.ports.zone_port", p.zone_port)?,
        proto: if p.protocol == v1::Protocol::Udp as i32 {
            Proto::Udp
        } else {
            Proto::Tcp
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_port_syntax() {
        let p: PublishedPort = "8080:80".parse().unwrap();
        assert_eq!(
            p,
            PublishedPort {
                host_address: None,
                host_port: 8080,
                zone_port: 80,
                proto: Proto::Tcp
            }
        );
        let p: PublishedPort = "127.0.0.1:5353:53/udp".parse().unwrap();
        assert_eq!(p.host_address, Some("127.0.0.1".parse().unwrap()));
        assert_eq!(p.proto, Proto::Udp);
        let p: PublishedPort = "[::1]:8443:443/tcp".parse().unwrap();
        assert_eq!(p.host_address, Some("::1".parse().unwrap()));
        assert_eq!(p.to_string(), "[::1]:8443:443/tcp");
        for bad in ["80", "0:80", "8080:80/sctp", "x:1:2", "1:70000"] {
            assert!(bad.parse::<PublishedPort>().is_err(), "{bad}");
        }
    }

    #[test]
    fn zone_from_spored_status() {
        let zone = v1::Zone {
            id: "z1".into(),
            name: "web".into(),
            spec: Some(v1::ZoneSpec {
                ports: vec![v1::PortMapping {
                    host_port: 8080,
                    zone_port: 80,
                    protocol: v1::Protocol::Tcp as i32,
                    host_address: String::new(),
                }],
                ..Default::default()
            }),
            status: Some(v1::ZoneStatus {
                network: Some(v1::ZoneNetworkStatus {
                    ipv4: "10.75.0.2/16".into(),
                    ipv6: "fdd4:1476:6c7e::2/48".into(),
                    mac: "02:73:70:00:00:02".into(),
                    gateway_ipv4: "10.75.0.1".into(),
                    gateway_ipv6: "fdd4:1476:6c7e::1".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        };
        let net = ZoneNet::from_zone(&zone, 65520).unwrap().unwrap();
        assert_eq!(net.ipv4.prefix_len(), 16);
        assert_eq!(net.ports[0].zone_port, 80);
        assert!(net.in_zone_subnet("10.75.9.9".parse().unwrap()));
        assert!(!net.in_zone_subnet("10.76.0.1".parse().unwrap()));

        let mut disabled = zone.clone();
        disabled.spec.as_mut().unwrap().network_disabled = true;
        assert_eq!(ZoneNet::from_zone(&disabled, 1500).unwrap(), None);

        let mut broken = zone;
        broken
            .status
            .as_mut()
            .unwrap()
            .network
            .as_mut()
            .unwrap()
            .mac = "nope".into();
        let err = ZoneNet::from_zone(&broken, 1500).unwrap_err();
        assert_eq!(
            err.to_string(),
            "network.mac: \"nope\" is not a MAC address"
        );
    }
}
