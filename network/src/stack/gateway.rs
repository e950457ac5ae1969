//! The gateway's own interface: a smoltcp Ethernet interface holding the gateway's MAC and
//! addresses, with no sockets. It answers ARP and neighbour solicitations for the gateway and
//! echo requests to it; every flow is handled elsewhere.

use smoltcp::iface::{Config, Interface, SocketSet};
use smoltcp::time::Instant;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr, Ipv6Address};

use super::device::OneShot;
use crate::frames::TxQueue;
use crate::zone::{GATEWAY_MAC, ZoneNet};

/// The gateway's link-local address, so neighbour discovery from the zone's link-local
/// address is answered too.
const LINK_LOCAL: Ipv6Address = Ipv6Address::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);

pub struct Gateway {
    iface: Interface,
    sockets: SocketSet<'static>,
    mtu: usize,
}

impl Gateway {
    pub fn new(zone: &ZoneNet, tx: &mut TxQueue, now: Instant) -> Gateway {
        let config = Config::new(HardwareAddress::Ethernet(GATEWAY_MAC));
        let mut iface = Interface::new(config, &mut OneShot::ethernet(None, tx, zone.mtu), now);
        iface.update_ip_addrs(|addrs| {
            for cidr in [
                IpCidr::new(IpAddress::Ipv4(zone.gateway_ipv4), zone.ipv4.prefix_len()),
                IpCidr::new(IpAddress::Ipv6(zone.gateway_ipv6), zone.ipv6.prefix_len()),
                IpCidr::new(IpAddress::Ipv6(LINK_LOCAL), 64),
            ] {
                // Capacity is a smoltcp feature (iface-max-addr-count-4): three always fit.
                let _ = addrs.push(cidr);
            }
        });
        Gateway {
            iface,
            sockets: SocketSet::new(Vec::new()),
            mtu: zone.mtu,
        }
    }

    /// Handles one frame classified as the gateway's; replies go to `tx`.
    pub fn ingress(&mut self, frame: &[u8], tx: &mut TxQueue, now: Instant) {
        let mut dev = OneShot::ethernet(Some(frame), tx, self.mtu);
        self.iface.poll(now, &mut dev, &mut self.sockets);
    }
}
