//! One zone's stack: the frame demultiplexer, the gateway interface, the flow table (TCP
//! through the SYN gate, UDP, ICMP echo), published-port listeners and the timers that drive
//! them. Single-threaded: the zone loop ([`crate::engine`]) owns it and calls it with frames
//! from the link and readiness from its poller; nothing here blocks.

pub mod device;
pub mod gateway;
pub mod icmp;
pub mod parse;
pub mod reply;
pub mod tcp;
pub mod udp;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustix::io::Errno;

use crate::config::Config;
use crate::counters::{Counters, DropReason};
use crate::dns::Upstreams;
use crate::frames::TxQueue;
use crate::policy::{Policy, Purpose};
use crate::poller::{Poller, Token};
use crate::ports::{Listener, ListenerKind};
use crate::zone::ZoneNet;
use parse::{Frame, TcpInfo};
use reply::Unreachable;

/// Above this many queued bytes for the link, the stack stops producing (flows stop reading
/// their host sockets, the link stops being read) until the link drains.
pub const TX_HIGH_WATER: usize = 2 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    Tcp,
    Udp,
    Icmp,
}

/// A flow as the zone sees it: its own end and the remote end (ICMP: the echo identifier as
/// the zone's port, 0 as the remote's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub proto: Proto,
    pub zone: SocketAddr,
    pub remote: SocketAddr,
}

/// A TCP flow waiting for its host connect; the zone has seen nothing yet.
struct Connecting {
    host: OwnedFd,
    /// The zone's latest SYN (IP packet), injected once the host connect succeeds.
    syn: Vec<u8>,
    info: TcpInfo,
    deadline: Instant,
    upstream: SocketAddr,
    purpose: Purpose,
}

enum Flow {
    Connecting(Connecting),
    Tcp(Box<tcp::TcpFlow>),
    Udp(udp::UdpFlow),
    /// A published UDP port's client: answers leave through the listener's socket.
    UdpInbound {
        listener: usize,
        client: SocketAddr,
        last_active: Instant,
    },
    Icmp(icmp::IcmpFlow),
}

struct Slot {
    generation: u32,
    key: FlowKey,
    flow: Option<Flow>,
    /// The earliest wake-up queued for this flow.
    timer: Option<Instant>,
    dirty: bool,
}

/// What a zone loop reports for one published port.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PortReport {
    pub port: String,
    pub listening: bool,
    pub error: Option<String>,
}

pub struct Stack {
    pub zone: ZoneNet,
    cfg: Arc<Config>,
    policy: Policy,
    dns: Upstreams,
    pub counters: Arc<Counters>,
    pub tx: TxQueue,
    gateway: gateway::Gateway,
    slots: Vec<Slot>,
    free: Vec<u32>,
    index: HashMap<FlowKey, u32>,
    tcp_flows: usize,
    udp_flows: usize,
    icmp_flows: usize,
    connecting: usize,
    timers: BinaryHeap<Reverse<(Instant, u32, u32)>>,
    dirty: Vec<u32>,
    /// Flows that stopped reading their host socket because the link was full.
    starved: Vec<u32>,
    pub listeners: Vec<Listener>,
    next_ephemeral: u16,
    epoch: Instant,
    scratch: Vec<u8>,
}

impl Stack {
    pub fn new(zone: ZoneNet, cfg: Arc<Config>, counters: Arc<Counters>) -> Stack {
        let epoch = Instant::now();
        let mut tx = TxQueue::default();
        let gateway = gateway::Gateway::new(&zone, &mut tx, smoltcp::time::Instant::ZERO);
        Stack {
            policy: Policy::new(&cfg.policy),
            dns: Upstreams::new(&cfg.dns),
            zone,
            cfg,
            counters,
            tx,
            gateway,
            slots: Vec::new(),
            free: Vec::new(),
            index: HashMap::new(),
            tcp_flows: 0,
            udp_flows: 0,
            icmp_flows: 0,
            connecting: 0,
            timers: BinaryHeap::new(),
            dirty: Vec::new(),
            starved: Vec::new(),
            listeners: Vec::new(),
            next_ephemeral: 32768,
            epoch,
            scratch: vec![0; 65536],
        }
    }

    fn now(&self) -> smoltcp::time::Instant {
        smoltcp::time::Instant::from_micros(self.epoch.elapsed().as_micros() as i64)
    }

    fn to_std(&self, t: smoltcp::time::Instant) -> Instant {
        self.epoch + Duration::from_micros(t.total_micros().max(0) as u64)
    }

    pub fn room(&self) -> bool {
        self.tx.pending() < TX_HIGH_WATER
    }

    // ---- frames from the zone ------------------------------------------------------------

    /// Handles one frame from the zone. Flows it touched run at [`Stack::service`].
    pub fn ingress(&mut self, frame: &[u8], poller: &Poller) {
        Counters::add(&self.counters.rx_frames, 1);
        Counters::add(&self.counters.rx_bytes, frame.len() as u64);
        let parsed = match parse::classify(frame, &self.zone) {
            Ok(f) => f,
            Err(why) => {
                self.counters.note(why);
                tracing::debug!(zone = %self.zone.name, "dropped a frame: {}", why.name());
                return;
            }
        };
        let now = self.now();
        match parsed {
            Frame::Gateway => self.gateway.ingress(frame, &mut self.tx, now),
            Frame::Tcp { src, dst, info, ip } => self.tcp_segment(src, dst, info, ip, poller),
            Frame::Udp {
                src,
                dst,
                src_port,
                dst_port,
                payload,
                ip,
            } => self.udp_datagram(
                SocketAddr::new(src, src_port),
                SocketAddr::new(dst, dst_port),
                payload,
                ip,
                poller,
            ),
            Frame::Echo {
                src,
                dst,
                ident,
                seq,
                data,
            } => self.echo_request(src, dst, ident, seq, data, poller),
        }
    }

    fn tcp_segment(&mut self, src: IpAddr, dst: IpAddr, info: TcpInfo, ip: &[u8], poller: &Poller) {
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
        let generation = self.slots[slot as usize].generation;
        if let Some(Flow::Connecting(c)) = &self.slots[slot as usize].flow
            && let Err(e) = poller.add(&c.host, Token::Flow(slot, generation))
        {
            tracing::warn!(zone = %self.zone.name, "cannot watch a host socket: {e}");
            self.remove(slot);
            return;
        }
        self.schedule(slot, deadline);
        if result == tcp::ConnectResult::Connected {
            self.mark(slot);
        }
    }

    fn udp_datagram(
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
        self.register(slot, poller);
        let idle = self.udp_idle(dns);
        self.schedule(slot, now + idle);
    }

    fn echo_request(
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
        self.register(slot, poller);
        let idle = self.udp_idle(true);
        self.schedule(slot, now + idle);
    }

    fn udp_idle(&self, short: bool) -> Duration {
        Duration::from_secs(if short {
            self.cfg.udp.dns_idle_timeout_secs
        } else {
            self.cfg.udp.idle_timeout_secs
        })
    }

    // ---- the host side --------------------------------------------------------------------

    /// Readiness of a flow's host socket.
    pub fn host_ready(
        &mut self,
        slot: u32,
        generation: u32,
        readable: bool,
        writable: bool,
        error: bool,
    ) {
        let Some(s) = self.slots.get_mut(slot as usize) else {
            return;
        };
        if s.generation != generation {
            return;
        }
        match s.flow.as_mut() {
            Some(Flow::Tcp(f)) => {
                f.host_readable |= readable || error;
                f.host_writable |= writable || error;
            }
            Some(Flow::Udp(f)) => f.host_readable |= readable || error,
            Some(Flow::Icmp(f)) => f.host_readable |= readable || error,
            _ => {}
        }
        self.mark(slot);
    }

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
                self.inbound_udp(index, client, zone_port, n, poller);
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
        self.register(slot, poller);
        self.mark(slot);
    }

    fn inbound_udp(
        &mut self,
        listener: usize,
        client: SocketAddr,
        zone_port: u16,
        n: usize,
        _poller: &Poller,
    ) {
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

    // ---- running flows ----------------------------------------------------------------------

    /// Runs every flow that was touched, and every flow whose timer is due.
    pub fn service(&mut self) {
        let now_std = Instant::now();
        while let Some(Reverse((at, slot, generation))) = self.timers.peek().copied() {
            if at > now_std {
                break;
            }
            self.timers.pop();
            if let Some(s) = self.slots.get_mut(slot as usize)
                && s.generation == generation
                && s.timer == Some(at)
            {
                s.timer = None;
                self.mark(slot);
            }
        }
        if self.room() && !self.starved.is_empty() {
            for slot in std::mem::take(&mut self.starved) {
                self.mark(slot);
            }
        }
        let dirty = std::mem::take(&mut self.dirty);
        for slot in &dirty {
            if let Some(s) = self.slots.get_mut(*slot as usize) {
                s.dirty = false;
            }
        }
        for slot in dirty {
            self.run(slot, now_std);
        }
    }

    fn run(&mut self, slot: u32, now_std: Instant) {
        let now = self.now();
        let room = self.room();
        let idle = self.udp_idle(false);
        let short_idle = self.udp_idle(true);
        let Stack {
            slots,
            tx,
            zone,
            counters,
            dns,
            scratch,
            starved,
            ..
        } = self;
        let Some(s) = slots.get_mut(slot as usize) else {
            return;
        };
        let key = s.key;
        let Some(flow) = s.flow.as_mut() else {
            return;
        };
        // What to do once the flow is no longer borrowed.
        let mut remove = false;
        let mut wake_at = None;
        match flow {
            Flow::Connecting(c) => match tcp::connect_status(&c.host) {
                tcp::ConnectResult::Connected => {
                    self.established(slot, now);
                    return;
                }
                tcp::ConnectResult::Pending if now_std < c.deadline => {}
                tcp::ConnectResult::Refused => {
                    counters.note(DropReason::ConnectRefused);
                    reply::tcp_reset(tx, zone, key.zone.ip(), key.remote.ip(), &c.info);
                    remove = true;
                }
                tcp::ConnectResult::Pending | tcp::ConnectResult::Failed(_) => {
                    if c.purpose == Purpose::Dns {
                        dns.failed(c.upstream);
                    }
                    counters.note(DropReason::ConnectFailed);
                    reply::unreachable(tx, zone, key.remote.ip(), &c.syn, Unreachable::Host);
                    remove = true;
                }
            },
            Flow::Tcp(f) => {
                if f.pump(tx, now, room) == tcp::Progress::Done {
                    remove = true;
                } else {
                    if !room && f.host_readable {
                        starved.push(slot);
                    }
                    wake_at = f.poll_at(now);
                }
            }
            Flow::Udp(f) => {
                while room && f.host_readable {
                    match rustix::net::recv(
                        &f.host,
                        &mut scratch[..],
                        rustix::net::RecvFlags::empty(),
                    ) {
                        Ok((n, ..)) => {
                            f.unanswered = 0;
                            f.last_active = now_std;
                            reply::udp(
                                tx,
                                zone,
                                key.remote.ip(),
                                key.remote.port(),
                                key.zone.ip(),
                                key.zone.port(),
                                &scratch[..n],
                            );
                        }
                        Err(Errno::AGAIN) => f.host_readable = false,
                        Err(_) => {
                            // An ICMP error from the far side (e.g. port unreachable).
                            if f.dns {
                                dns.failed(f.upstream);
                            }
                            f.host_readable = false;
                        }
                    }
                }
                if !room && f.host_readable {
                    starved.push(slot);
                }
                let expires = f.last_active + if f.dns { short_idle } else { idle };
                if now_std >= expires {
                    if f.dns && f.unanswered > 0 {
                        dns.failed(f.upstream);
                    }
                    remove = true;
                } else {
                    self.schedule(slot, expires);
                }
            }
            Flow::UdpInbound { last_active, .. } => {
                let expires = *last_active + idle;
                if now_std >= expires {
                    remove = true;
                } else {
                    self.schedule(slot, expires);
                }
            }
            Flow::Icmp(f) => {
                while room && f.host_readable {
                    match f.recv(&mut scratch[..]) {
                        Ok(Some((seq, data))) => {
                            f.last_active = now_std;
                            reply::echo_reply(tx, zone, f.remote, f.zone_ident, seq, data);
                        }
                        Ok(None) => {}
                        Err(_) => f.host_readable = false,
                    }
                }
                let expires = f.last_active + short_idle;
                if now_std >= expires {
                    remove = true;
                } else {
                    self.schedule(slot, expires);
                }
            }
        }
        if remove {
            self.remove(slot);
        } else if let Some(at) = wake_at {
            let at = self.to_std(at);
            self.schedule(slot, at);
        }
    }

    /// The host connect succeeded: the flow's stack takes the zone's SYN and answers SYN-ACK.
    fn established(&mut self, slot: u32, now: smoltcp::time::Instant) {
        let room = self.room();
        let s = &mut self.slots[slot as usize];
        let Some(Flow::Connecting(c)) = s.flow.take() else {
            return;
        };
        self.connecting -= 1;
        let mut flow = tcp::TcpFlow::outbound(
            s.key.remote,
            &self.zone,
            c.host,
            self.cfg.tcp.buffer_bytes,
            &mut self.tx,
            now,
        );
        flow.ingress(&c.syn, &mut self.tx, now);
        flow.pump(&mut self.tx, now, room);
        let wake_at = flow.poll_at(now);
        s.flow = Some(Flow::Tcp(Box::new(flow)));
        if let Some(at) = wake_at {
            let at = self.to_std(at);
            self.schedule(slot, at);
        }
    }

    // ---- bookkeeping ------------------------------------------------------------------------

    fn insert(&mut self, key: FlowKey, flow: Flow) -> u32 {
        let slot = match self.free.pop() {
            Some(i) => {
                let s = &mut self.slots[i as usize];
                s.generation = s.generation.wrapping_add(1) & 0x3fff_ffff;
                s.key = key;
                s.flow = Some(flow);
                s.timer = None;
                s.dirty = false;
                i
            }
            None => {
                self.slots.push(Slot {
                    generation: 0,
                    key,
                    flow: Some(flow),
                    timer: None,
                    dirty: false,
                });
                (self.slots.len() - 1) as u32
            }
        };
        self.index.insert(key, slot);
        slot
    }

    fn register(&mut self, slot: u32, poller: &Poller) {
        let s = &self.slots[slot as usize];
        let token = Token::Flow(slot, s.generation);
        let fd = match &s.flow {
            Some(Flow::Udp(f)) => &f.host,
            Some(Flow::Icmp(f)) => &f.host,
            Some(Flow::Tcp(f)) => &f.host,
            Some(Flow::Connecting(c)) => &c.host,
            _ => return,
        };
        if let Err(e) = poller.add(fd, token) {
            tracing::warn!(zone = %self.zone.name, "cannot watch a host socket: {e}");
        }
    }

    fn remove(&mut self, slot: u32) {
        let s = &mut self.slots[slot as usize];
        let Some(flow) = s.flow.take() else {
            return;
        };
        self.index.remove(&s.key);
        s.timer = None;
        match flow {
            Flow::Connecting(_) => {
                self.connecting -= 1;
                self.tcp_flows -= 1;
            }
            Flow::Tcp(_) => self.tcp_flows -= 1,
            Flow::Udp(_) | Flow::UdpInbound { .. } => self.udp_flows -= 1,
            Flow::Icmp(_) => self.icmp_flows -= 1,
        }
        Counters::set(&self.counters.tcp_flows, self.tcp_flows as u64);
        Counters::set(&self.counters.udp_flows, self.udp_flows as u64);
        Counters::set(&self.counters.icmp_flows, self.icmp_flows as u64);
        self.free.push(slot);
    }

    fn mark(&mut self, slot: u32) {
        if let Some(s) = self.slots.get_mut(slot as usize)
            && !s.dirty
        {
            s.dirty = true;
            self.dirty.push(slot);
        }
    }

    fn schedule(&mut self, slot: u32, at: Instant) {
        let s = &mut self.slots[slot as usize];
        if s.timer.is_some_and(|t| t <= at) {
            return;
        }
        s.timer = Some(at);
        self.timers.push(Reverse((at, slot, s.generation)));
    }

    /// When the next timer is due.
    pub fn next_timer(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((at, ..))| *at)
    }

    /// Whether flows wait to run.
    pub fn has_work(&self) -> bool {
        !self.dirty.is_empty() || (self.room() && !self.starved.is_empty())
    }

    /// The link went away: frames for it are gone (the flows' stacks retransmit).
    pub fn link_lost(&mut self) {
        self.tx.clear();
    }
}
