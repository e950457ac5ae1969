//! The smoltcp `Device` the gateway's and each flow's interface run on: at most one received
//! packet handed in by the zone loop (no copy), and transmissions appended to the zone's
//! [`TxQueue`]. A flow's interface speaks IP (`Medium::Ip`); this device adds the Ethernet
//! header (gateway MAC to zone MAC) on the way out.

use smoltcp::phy::{self, Checksum, ChecksumCapabilities, DeviceCapabilities, Medium};
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr};

use crate::frames::TxQueue;
use crate::zone::GATEWAY_MAC;

const ETH: usize = 14;

pub struct OneShot<'a> {
    pub rx: Option<&'a [u8]>,
    pub tx: &'a mut TxQueue,
    /// `Some(zone MAC)` for an IP-medium interface (the device frames its packets).
    pub frame_to: Option<EthernetAddress>,
    /// The zone's IP MTU.
    pub mtu: usize,
}

impl<'a> OneShot<'a> {
    pub fn ethernet(rx: Option<&'a [u8]>, tx: &'a mut TxQueue, mtu: usize) -> Self {
        OneShot {
            rx,
            tx,
            frame_to: None,
            mtu,
        }
    }

    pub fn ip(
        rx: Option<&'a [u8]>,
        tx: &'a mut TxQueue,
        zone_mac: EthernetAddress,
        mtu: usize,
    ) -> Self {
        OneShot {
            rx,
            tx,
            frame_to: Some(zone_mac),
            mtu,
        }
    }
}

pub struct Rx<'a>(&'a [u8]);

pub struct Tx<'a> {
    tx: &'a mut TxQueue,
    frame_to: Option<EthernetAddress>,
}

impl phy::Device for OneShot<'_> {
    type RxToken<'b>
        = Rx<'b>
    where
        Self: 'b;
    type TxToken<'b>
        = Tx<'b>
    where
        Self: 'b;

    fn receive(&mut self, _now: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let packet = self.rx.take()?;
        Some((
            Rx(packet),
            Tx {
                tx: self.tx,
                frame_to: self.frame_to,
            },
        ))
    }

    fn transmit(&mut self, _now: Instant) -> Option<Self::TxToken<'_>> {
        Some(Tx {
            tx: self.tx,
            frame_to: self.frame_to,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        let mut checksum = ChecksumCapabilities::default();
        // The zone's checksums are not verified: a corrupt segment only harms the zone's own
        // flow, and checking 64 KiB frames costs as much as the copy. Ours are computed.
        checksum.ipv4 = Checksum::Tx;
        checksum.tcp = Checksum::Tx;
        checksum.udp = Checksum::Tx;
        checksum.icmpv4 = Checksum::Tx;
        checksum.icmpv6 = Checksum::Tx;
        caps.checksum = checksum;
        match self.frame_to {
            Some(_) => {
                caps.medium = Medium::Ip;
                caps.max_transmission_unit = self.mtu;
            }
            None => {
                caps.medium = Medium::Ethernet;
                caps.max_transmission_unit = self.mtu + ETH;
            }
        }
        caps
    }
}

impl phy::RxToken for Rx<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.0)
    }
}

impl phy::TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        match self.frame_to {
            None => f(self.tx.push(len)),
            Some(zone_mac) => {
                let frame = self.tx.push(ETH + len);
                let r = f(&mut frame[ETH..]);
                let ethertype = if frame[ETH] >> 4 == 6 {
                    EthernetProtocol::Ipv6
                } else {
                    EthernetProtocol::Ipv4
                };
                EthernetRepr {
                    src_addr: GATEWAY_MAC,
                    dst_addr: zone_mac,
                    ethertype,
                }
                .emit(&mut EthernetFrame::new_unchecked(&mut frame[..ETH]));
                r
            }
        }
    }
}
