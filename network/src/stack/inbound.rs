//! Published ports: connections and datagrams from host listeners, carried into the zone from
//! the gateway's address.

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::time::Instant;

use rustix::io::Errno;

use super::reply;
use super::{Flow, FlowKey, Proto, Stack, tcp};
use crate::counters::{Counters, DropReason};
use crate::poller::Poller;
use crate::ports::ListenerKind;

impl Stack {
    /// A published port's listener is readable: accept its connections or datagrams.
    pub fn listener_ready(&mut self, index: usize, poller: &Poller) {
        let Some(l) = self.listeners.get(index) else {
            return;
        };
        match l.kind {
            ListenerKind::Tcp => loop {
                let Some(l) = self.listeners.get(index) else {
                    return;
                };
                let conn = match rustix::net::accept_with(
                    &l.fd,
                    rustix::net::SocketFlags::NONBLOCK | rustix::net::SocketFlags::CLOEXEC,
                ) {
                    Ok(c) => c,
                    Err(Errno::AGAIN) => return,
                    Err(e) => {
                        tracing::warn!(zone = %self.zone.name, "accept on {}: {e}", l.port);
                        return;
                    }
                };
                let zone_port = l.port.zone_port;
                self.inbound_tcp(conn, zone_port, poller);
            },
            ListenerKind::Udp => loop {
                let Some(l) = self.listeners.get(index) else {
                    return;
                };
                let zone_port = l.port.zone_port;
                let (n, client) = match rustix::net::recvfrom(
                    &l.fd,
                    &mut self.scratch[..],
                    rustix::net::RecvFlags::empty(),
                ) {
                    Ok((n, _, Some(addr))) => match SocketAddr::try_from(addr) {
                        Ok(a) => (n, a),
                        Err(_) => continue,
                    },
                    Ok(_) => continue,
                    Err(_) => return,
                };
                self.inbound_udp(index, client, zone_port, n);
            },
        }
    }

    fn ephemeral(&mut self, proto: Proto, zone_end: SocketAddr) -> Option<u16> {
        for _ in 0..28232 {
            let port = self.next_ephemeral;
            self.next_ephemeral = if port >= 60999 { 32768 } else { port + 1 };
            let key = FlowKey {
                proto,
                zone: zone_end,
                remote: SocketAddr::new(self.zone.gateway(false), port),
            };
            if !self.index.contains_key(&key) {
                return Some(port);
            }
        }
        None
    }

    fn inbound_tcp(&mut self, conn: OwnedFd, zone_port: u16, poller: &Poller) {
        let buffers = (self.tcp_flows + 1) * 2 * self.cfg.tcp.buffer_bytes;
        if self.tcp_flows >= self.cfg.policy.max_tcp_flows
            || buffers > self.cfg.policy.max_buffer_bytes
        {
            self.counters.note(DropReason::FlowLimit);
            return;
        }
        let zone_end = SocketAddr::new(self.zone.own_address(false), zone_port);
        let Some(port) = self.ephemeral(Proto::Tcp, zone_end) else {
            self.counters.note(DropReason::FlowLimit);
            return;
        };
        let _ = rustix::net::sockopt::set_tcp_nodelay(&conn, true);
        let from = SocketAddr::new(self.zone.gateway(false), port);
        let now = self.now();
        let flow = tcp::TcpFlow::inbound(
            from,
            zone_end,
            &self.zone,
            conn,
            self.cfg.tcp.buffer_bytes,
            &mut self.tx,
            now,
        );
        let key = FlowKey {
            proto: Proto::Tcp,
            zone: zone_end,
            remote: from,
        };
        let slot = self.insert(key, Flow::Tcp(Box::new(flow)));
        self.tcp_flows += 1;
        Counters::set(&self.counters.tcp_flows, self.tcp_flows as u64);
        if !self.register(slot, poller) {
            return;
        }
        self.mark(slot);
    }

    fn inbound_udp(&mut self, listener: usize, client: SocketAddr, zone_port: u16, n: usize) {
        let zone_end = SocketAddr::new(self.zone.own_address(false), zone_port);
        let now = Instant::now();
        // One flow per client: find it by scanning this listener's clients through the index.
        let existing = self.index.iter().find_map(|(k, &slot)| {
            (k.proto == Proto::Udp && k.zone == zone_end).then_some(slot).filter(|&slot| {
                matches!(self.slots[slot as usize].flow,
                    Some(Flow::UdpInbound { listener: l, client: c, .. }) if l == listener && c == client)
            })
        });
        let remote = match existing {
            Some(slot) => {
                if let Some(Flow::UdpInbound { last_active, .. }) =
                    self.slots[slot as usize].flow.as_mut()
                {
                    *last_active = now;
                }
                self.slots[slot as usize].key.remote
            }
            None => {
                if self.udp_flows >= self.cfg.policy.max_udp_flows {
                    self.counters.note(DropReason::FlowLimit);
                    return;
                }
                let Some(port) = self.ephemeral(Proto::Udp, zone_end) else {
                    self.counters.note(DropReason::FlowLimit);
                    return;
                };
                let remote = SocketAddr::new(self.zone.gateway(false), port);
                let key = FlowKey {
                    proto: Proto::Udp,
                    zone: zone_end,
                    remote,
                };
                let slot = self.insert(
                    key,
                    Flow::UdpInbound {
                        listener,
                        client,
                        last_active: now,
                    },
                );
                self.udp_flows += 1;
                Counters::set(&self.counters.udp_flows, self.udp_flows as u64);
                let idle = self.udp_idle(false);
                self.schedule(slot, now + idle);
                remote
            }
        };
        reply::udp(
            &mut self.tx,
            &self.zone,
            remote.ip(),
            remote.port(),
            zone_end.ip(),
            zone_end.port(),
            &self.scratch[..n],
        );
    }
}
