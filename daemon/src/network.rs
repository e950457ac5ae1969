//! Address reservations: each zone with networking gets one IPv4 address, one IPv6 address
//! and one MAC, reserved durably when the zone is created and released when it is destroyed.
//!
//! Host `i` of a zone is the same index in both subnets (`10.75.0.i`, `fdd4:...::i`), and its
//! MAC is `02:73:70` ("sp", locally administered, unicast) followed by `i` in 24 bits, so the
//! three never disagree and a reservation can be checked at a glance. Index 0 is the network,
//! 1 the gateway (sporenet answers there), and for IPv4 the last index is the broadcast
//! address; the lowest free index is taken.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, Ipv6Addr};

use spore_api::v1;
use uuid::Uuid;

use crate::config::NetworkConfig;

/// The first zone index (0 is the network, 1 the gateway).
const FIRST_HOST: u32 = 2;
/// MACs carry the index in 24 bits.
const MAX_INDEX: u32 = (1 << 24) - 1;

/// Why addresses could not be reserved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetworkError {
    #[error("network.{key}: {detail}")]
    Config { key: &'static str, detail: String },
    #[error(
        "no free address left in {subnet} ({used} zones hold one): destroy zones, or widen network.ipv4_subnet in spored.toml"
    )]
    Exhausted { subnet: String, used: usize },
}

/// The subnets zones get their addresses from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressPlan {
    v4: Ipv4Addr,
    v4_prefix: u8,
    v6: Ipv6Addr,
    v6_prefix: u8,
}

impl AddressPlan {
    /// Reads the subnets from the configuration; host bits in the addresses are ignored.
    pub fn from_config(config: &NetworkConfig) -> Result<AddressPlan, NetworkError> {
        let (v4, v4_prefix) =
            parse_subnet::<Ipv4Addr>(&config.ipv4_subnet, 32).map_err(|detail| {
                NetworkError::Config {
                    key: "ipv4_subnet",
                    detail,
                }
            })?;
        let (v6, v6_prefix) =
            parse_subnet::<Ipv6Addr>(&config.ipv6_subnet, 128).map_err(|detail| {
                NetworkError::Config {
                    key: "ipv6_subnet",
                    detail,
                }
            })?;
        if v4_prefix > 30 {
            return Err(NetworkError::Config {
                key: "ipv4_subnet",
                detail: format!("/{v4_prefix} leaves no room for zones (use /30 or wider)"),
            });
        }
        if v6_prefix > 126 {
            return Err(NetworkError::Config {
                key: "ipv6_subnet",
                detail: format!("/{v6_prefix} leaves no room for zones (use /126 or wider)"),
            });
        }
        let v4_mask = u32::MAX.checked_shl(32 - u32::from(v4_prefix)).unwrap_or(0);
        let v6_mask = u128::MAX
            .checked_shl(128 - u32::from(v6_prefix))
            .unwrap_or(0);
        Ok(AddressPlan {
            v4: Ipv4Addr::from(u32::from(v4) & v4_mask),
            v4_prefix,
            v6: Ipv6Addr::from(u128::from(v6) & v6_mask),
            v6_prefix,
        })
    }

    /// The highest usable index: the smaller subnet (IPv4 without its broadcast) decides.
    fn last_index(&self) -> u32 {
        let v4_hosts = (1u64 << (32 - u32::from(self.v4_prefix))) - 2;
        let v6_bits = 128 - u32::from(self.v6_prefix);
        let v6_hosts = if v6_bits >= 32 {
            u64::from(u32::MAX)
        } else {
            (1u64 << v6_bits) - 1
        };
        v4_hosts.min(v6_hosts).min(u64::from(MAX_INDEX)) as u32
    }

    pub fn gateway_v4(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.v4) + 1)
    }

    pub fn gateway_v6(&self) -> Ipv6Addr {
        Ipv6Addr::from(u128::from(self.v6) + 1)
    }

    /// Reserves the lowest index no reservation in `taken` holds.
    pub fn allocate<'a>(
        &self,
        zone: Uuid,
        taken: impl IntoIterator<Item = &'a v1::NetworkReservation>,
    ) -> Result<v1::NetworkReservation, NetworkError> {
        // Indexes are read back from the MAC: the one field that holds the index exactly.
        let used: BTreeSet<u32> = taken
            .into_iter()
            .filter_map(|r| index_of_mac(&r.mac))
            .collect();
        let last = self.last_index();
        let mut index = FIRST_HOST;
        for &u in used.range(FIRST_HOST..) {
            if u != index {
                break;
            }
            index += 1;
        }
        if index > last {
            return Err(NetworkError::Exhausted {
                subnet: format!("{}/{}", self.v4, self.v4_prefix),
                used: used.len(),
            });
        }
        Ok(v1::NetworkReservation {
            zone_id: zone.to_string(),
            ipv4: format!(
                "{}/{}",
                Ipv4Addr::from(u32::from(self.v4) + index),
                self.v4_prefix
            ),
            ipv6: format!(
                "{}/{}",
                Ipv6Addr::from(u128::from(self.v6) + u128::from(index)),
                self.v6_prefix
            ),
            mac: mac_of_index(index),
            gateway_ipv4: self.gateway_v4().to_string(),
            gateway_ipv6: self.gateway_v6().to_string(),
        })
    }
}

/// `02:73:70:ii:ii:ii`.
fn mac_of_index(index: u32) -> String {
    let [_, a, b, c] = index.to_be_bytes();
    format!("02:73:70:{a:02x}:{b:02x}:{c:02x}")
}

/// The index a MAC of ours carries; None for anything else.
fn index_of_mac(mac: &str) -> Option<u32> {
    let rest = mac.strip_prefix("02:73:70:")?;
    let mut index = 0u32;
    let mut parts = 0;
    for part in rest.split(':') {
        if part.len() != 2 {
            return None;
        }
        index = (index << 8) | u32::from(u8::from_str_radix(part, 16).ok()?);
        parts += 1;
    }
    (parts == 3).then_some(index)
}

/// The zone's network status for a reservation.
pub fn status(reservation: &v1::NetworkReservation) -> v1::ZoneNetworkStatus {
    v1::ZoneNetworkStatus {
        attached: false,
        detail: "addresses reserved; the zone gets no interface until zone networking (sporenet) lands in a later spore release".into(),
        ipv4: reservation.ipv4.clone(),
        ipv6: reservation.ipv6.clone(),
        mac: reservation.mac.clone(),
        gateway_ipv4: reservation.gateway_ipv4.clone(),
        gateway_ipv6: reservation.gateway_ipv6.clone(),
    }
}

/// Parses `addr/prefix`.
fn parse_subnet<A: std::str::FromStr>(s: &str, max_prefix: u8) -> Result<(A, u8), String> {
    let (addr, prefix) = s
        .split_once('/')
        .ok_or_else(|| format!("{s:?} is not ADDRESS/PREFIX"))?;
    let addr = addr
        .parse::<A>()
        .map_err(|_| format!("{addr:?} is not an address"))?;
    let prefix = prefix
        .parse::<u8>()
        .ok()
        .filter(|p| *p <= max_prefix)
        .ok_or_else(|| format!("{prefix:?} is not a prefix length 0-{max_prefix}"))?;
    Ok((addr, prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(v4: &str, v6: &str) -> AddressPlan {
        AddressPlan::from_config(&NetworkConfig {
            ipv4_subnet: v4.into(),
            ipv6_subnet: v6.into(),
            nameservers: Vec::new(),
        })
        .unwrap()
    }

    #[test]
    fn first_zone_gets_index_2_in_both_families_and_a_matching_mac() {
        let p = plan("10.75.0.0/16", "fdd4:1476:6c7e::/48");
        let id = Uuid::new_v4();
        let r = p.allocate(id, []).unwrap();
        assert_eq!(r.zone_id, id.to_string());
        assert_eq!(r.ipv4, "10.75.0.2/16");
        assert_eq!(r.ipv6, "fdd4:1476:6c7e::2/48");
        assert_eq!(r.mac, "02:73:70:00:00:02");
        assert_eq!(r.gateway_ipv4, "10.75.0.1");
        assert_eq!(r.gateway_ipv6, "fdd4:1476:6c7e::1");
    }

    #[test]
    fn lowest_free_index_is_reused_after_release() {
        let p = plan("10.75.0.0/16", "fdd4::/64");
        let mut held = Vec::new();
        for _ in 0..5 {
            let r = p.allocate(Uuid::new_v4(), &held).unwrap();
            held.push(r);
        }
        assert_eq!(held[4].ipv4, "10.75.0.6/16");
        held.remove(1); // index 3 released
        let r = p.allocate(Uuid::new_v4(), &held).unwrap();
        assert_eq!(r.ipv4, "10.75.0.3/16");
        assert_eq!(r.mac, "02:73:70:00:00:03");
    }

    #[test]
    fn a_full_subnet_says_what_to_do() {
        // /29: indexes 2..=6 (7 is the broadcast).
        let p = plan("192.168.7.0/29", "fd00::/64");
        let mut held = Vec::new();
        for _ in 0..5 {
            held.push(p.allocate(Uuid::new_v4(), &held).unwrap());
        }
        assert_eq!(held[4].ipv4, "192.168.7.6/29");
        let err = p.allocate(Uuid::new_v4(), &held).unwrap_err();
        assert_eq!(
            err,
            NetworkError::Exhausted {
                subnet: "192.168.7.0/29".into(),
                used: 5
            }
        );
        assert!(err.to_string().contains("widen network.ipv4_subnet"));
    }

    #[test]
    fn host_bits_in_the_configured_subnet_are_ignored_and_tiny_subnets_refused() {
        let p = plan("10.75.3.9/16", "fdd4::77/64");
        assert_eq!(p.gateway_v4(), Ipv4Addr::new(10, 75, 0, 1));
        assert_eq!(p.gateway_v6(), "fdd4::1".parse::<Ipv6Addr>().unwrap());
        for (v4, v6, key) in [
            ("10.0.0.0/31", "fd00::/64", "ipv4_subnet"),
            ("10.0.0.0/24", "fd00::/127", "ipv6_subnet"),
            ("10.0.0.0", "fd00::/64", "ipv4_subnet"),
            ("10.0.0.0/24", "nonsense/64", "ipv6_subnet"),
        ] {
            let err = AddressPlan::from_config(&NetworkConfig {
                ipv4_subnet: v4.into(),
                ipv6_subnet: v6.into(),
                nameservers: Vec::new(),
            })
            .unwrap_err();
            assert!(
                matches!(err, NetworkError::Config { key: k, .. } if k == key),
                "{err}"
            );
            assert!(
                err.to_string().starts_with(&format!("network.{key}: ")),
                "{err}"
            );
        }
    }

    #[test]
    fn foreign_or_malformed_macs_do_not_count_as_taken() {
        for mac in [
            "",
            "02:73:70",
            "02:73:70:00:00:0g",
            "aa:bb:cc:00:00:02",
            "02:73:70:0:0:2",
        ] {
            assert_eq!(index_of_mac(mac), None, "{mac}");
        }
        assert_eq!(index_of_mac("02:73:70:01:00:02"), Some(0x010002));
        let p = plan("10.75.0.0/16", "fdd4::/64");
        let foreign = v1::NetworkReservation {
            mac: "aa:bb:cc:00:00:02".into(),
            ..Default::default()
        };
        assert_eq!(
            p.allocate(Uuid::nil(), [&foreign]).unwrap().ipv4,
            "10.75.0.2/16"
        );
    }
}
