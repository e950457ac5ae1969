//! Flows the zone opens: TCP through the SYN gate, UDP datagrams, echo requests.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use super::parse::TcpInfo;
use super::reply::{self, Unreachable};
use super::{Connecting, Flow, FlowKey, Proto, Stack, icmp, tcp, udp};
use crate::counters::{Counters, DropReason};
use crate::policy::Purpose;
use crate::poller::Poller;

impl Stack {
    pub(super) fn tcp_segment(
        &mut self,
        src: IpAddr,
        dst: IpAddr,
        info: TcpInfo,
        ip: &[u8],
        poller: &Poller,
    ) {
        let key = FlowKey {
            proto: Proto::Tcp,
            zone: SocketAddr::new(src, info.src_port),
            remote: SocketAddr::new(dst, info.dst_port),
        };
        let now = self.now();
        if let Some(&slot) = self.index.get(&key) {
            let s = &mut self.slots[slot as usize];
            match s.flow.as_mut() {
                Some(Flow::Connecting(c)) => {
                    if info.syn && !info.ack {
                        c.syn.clear();
                        c.syn.extend_from_slice(ip);
                        c.info = info;
                    }
                    return;
                }
                Some(Flow::Tcp(f)) if info.syn && !info.ack && f.is_closing() => {
                    // The port is reused for a new connection: the old flow is over.
                    self.remove(slot);
                }
                Some(Flow::Tcp(f)) => {
                    f.ingress(ip, &mut self.tx, now);
                    self.mark(slot);
                    return;
                }
                _ => return,
            }
        }
        if !info.syn || info.ack {
            if !info.rst {
                self.counters.note(DropReason::NoFlow);
                reply::tcp_reset(&mut self.tx, &self.zone, src, dst, &info);
            }
            return;
        }
        self.syn_gate(key, info, ip, poller);
    }

    /// A new connection from the zone: the host connect starts first; the zone's SYN waits.
    fn syn_gate(&mut self, key: FlowKey, info: TcpInfo, ip: &[u8], poller: &Poller) {
        let (src, dst) = (key.zone.ip(), key.remote.ip());
        let (upstream, purpose) =
            match self
                .policy
                .outbound(&self.zone, dst, key.remote.port(), &mut self.dns)
            {
                Ok(t) => t,
                Err(why) => {
                    self.counters.note(why);
                    reply::tcp_reset(&mut self.tx, &self.zone, src, dst, &info);
                    return;
                }
            };
        let buffers = (self.tcp_flows + 1) * 2 * self.cfg.tcp.buffer_bytes;
        if self.tcp_flows >= self.cfg.policy.max_tcp_flows
            || self.connecting >= self.cfg.policy.max_pending_connects
            || buffers > self.cfg.policy.max_buffer_bytes
        {
            self.counters.note(DropReason::FlowLimit);
            reply::tcp_reset(&mut self.tx, &self.zone, src, dst, &info);
            return;
        }
        let (host, result) = match tcp::start_connect(upstream) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(zone = %self.zone.name, "cannot open a socket for {upstream}: {e}");
                self.counters.note(DropReason::ConnectFailed);
                reply::unreachable(&mut self.tx, &self.zone, dst, ip, Unreachable::Host);
                return;
            }
        };
        match result {
            tcp::ConnectResult::Refused => {
                self.counters.note(DropReason::ConnectRefused);
                reply::tcp_reset(&mut self.tx, &self.zone, src, dst, &info);
                return;
            }
            tcp::ConnectResult::Failed(e) => {
                // No route (e.g. no IPv6 on the host): answer at once so clients fall back.
                tracing::debug!(zone = %self.zone.name, "connect to {upstream} failed: {e}");
                self.counters.note(DropReason::ConnectFailed);
                reply::unreachable(&mut self.tx, &self.zone, dst, ip, Unreachable::Host);
                return;
            }
            tcp::ConnectResult::Pending | tcp::ConnectResult::Connected => {}
        }
        let deadline = Instant::now() + self.cfg.connect_timeout();
        let slot = self.insert(
            key,
            Flow::Connecting(Connecting {
                host,
                syn: ip.to_vec(),
                info,
                deadline,
                upstream,
                purpose,
            }),
        );
        self.tcp_flows += 1;
        self.connecting += 1;
        Counters::set(&self.counters.tcp_flows, self.tcp_flows as u64);
        if !self.register(slot, poller) {
            return;
        }
        self.schedule(slot, deadline);
        if result == tcp::ConnectResult::Connected {
            self.mark(slot);
        }
    }

    pub(super) fn udp_datagram(
        &mut self,
        zone_end: SocketAddr,
        remote: SocketAddr,
        payload: &[u8],
        ip: &[u8],
        poller: &Poller,
    ) {
        let key = FlowKey {
            proto: Proto::Udp,
            zone: zone_end,
            remote,
        };
        let now = Instant::now();
        if let Some(&slot) = self.index.get(&key) {
            match self.slots[slot as usize].flow.as_mut() {
                Some(Flow::Udp(f)) => {
                    f.last_active = now;
                    if f.dns {
                        f.unanswered += 1;
                    }
                    if rustix::net::send(&f.host, payload, rustix::net::SendFlags::empty()).is_err()
                    {
                        self.counters.note(DropReason::HostBusy);
                    }
                }
                Some(Flow::UdpInbound {
                    listener,
                    client,
                    last_active,
                }) => {
                    *last_active = now;
                    let sent = self.listeners.get(*listener).map(|l| {
                        rustix::net::sendto(
                            &l.fd,
                            payload,
                            rustix::net::SendFlags::empty(),
                            &*client,
                        )
                    });
                    if !matches!(sent, Some(Ok(_))) {
                        self.counters.note(DropReason::HostBusy);
                    }
                }
                _ => {}
            }
            return;
        }
        let (upstream, purpose) =
            match self
                .policy
                .outbound(&self.zone, remote.ip(), remote.port(), &mut self.dns)
            {
                Ok(t) => t,
                Err(why) => {
                    self.counters.note(why);
                    let why = if why == DropReason::Gateway {
                        Unreachable::Port
                    } else {
                        Unreachable::Prohibited
                    };
                    reply::unreachable(&mut self.tx, &self.zone, remote.ip(), ip, why);
                    return;
                }
            };
        if self.udp_flows >= self.cfg.policy.max_udp_flows {
            self.counters.note(DropReason::FlowLimit);
            reply::unreachable(
                &mut self.tx,
                &self.zone,
                remote.ip(),
                ip,
                Unreachable::Prohibited,
            );
            return;
        }
        let host = match udp::connect(upstream) {
            Ok(fd) => fd,
            Err(e) => {
                tracing::debug!(zone = %self.zone.name, "UDP to {upstream}: {e}");
                self.counters.note(DropReason::ConnectFailed);
                reply::unreachable(&mut self.tx, &self.zone, remote.ip(), ip, Unreachable::Host);
                return;
            }
        };
        let dns = purpose == Purpose::Dns;
        if rustix::net::send(&host, payload, rustix::net::SendFlags::empty()).is_err() {
            self.counters.note(DropReason::HostBusy);
        }
        let slot = self.insert(
            key,
            Flow::Udp(udp::UdpFlow {
                host,
                upstream,
                dns,
                last_active: now,
                host_readable: false,
                unanswered: u32::from(dns),
            }),
        );
        self.udp_flows += 1;
        Counters::set(&self.counters.udp_flows, self.udp_flows as u64);
        if !self.register(slot, poller) {
            return;
        }
        let idle = self.udp_idle(dns);
        self.schedule(slot, now + idle);
    }

    pub(super) fn echo_request(
        &mut self,
        src: IpAddr,
        dst: IpAddr,
        ident: u16,
        seq: u16,
        data: &[u8],
        poller: &Poller,
    ) {
        let key = FlowKey {
            proto: Proto::Icmp,
            zone: SocketAddr::new(src, ident),
            remote: SocketAddr::new(dst, 0),
        };
        let now = Instant::now();
        if let Some(&slot) = self.index.get(&key) {
            if let Some(Flow::Icmp(f)) = self.slots[slot as usize].flow.as_mut()
                && f.send(seq, data, now).is_err()
            {
                self.counters.note(DropReason::HostBusy);
            }
            return;
        }
        if let Err(why) = self.policy.outbound(&self.zone, dst, 0, &mut self.dns) {
            tracing::debug!(zone = %self.zone.name, "echo to {dst} refused: {}", why.name());
            self.counters.note(why);
            return;
        }
        if self.icmp_flows >= self.cfg.policy.max_icmp_flows {
            self.counters.note(DropReason::FlowLimit);
            return;
        }
        let mut flow = match icmp::IcmpFlow::open(dst, ident, now) {
            Ok(f) => f,
            Err(e) => {
                tracing::debug!(zone = %self.zone.name, "echo to {dst}: {e}");
                self.counters.note(DropReason::ConnectFailed);
                return;
            }
        };
        if flow.send(seq, data, now).is_err() {
            self.counters.note(DropReason::ConnectFailed);
            return;
        }
        let slot = self.insert(key, Flow::Icmp(flow));
        self.icmp_flows += 1;
        Counters::set(&self.counters.icmp_flows, self.icmp_flows as u64);
        if !self.register(slot, poller) {
            return;
        }
        let idle = self.udp_idle(true);
        self.schedule(slot, now + idle);
    }
}
