//! One zone's stack: the frame demultiplexer, the gateway interface, the flow table (TCP
//! through the SYN gate, UDP, ICMP echo), published-port listeners and the timers that drive
//! them. Single-threaded: the zone loop ([`crate::engine`]) owns it and calls it with frames
//! from the link and readiness from its poller; nothing here blocks.

pub mod device;
pub mod gateway;
pub mod icmp;
mod inbound;
mod outbound;
pub mod parse;
pub mod reply;
pub mod tcp;
pub mod udp;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
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
use crate::ports::Listener;
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

    /// Watches the flow's host socket; a flow that cannot be watched is removed (false).
    fn register(&mut self, slot: u32, poller: &Poller) -> bool {
        let s = &self.slots[slot as usize];
        let token = Token::Flow(slot, s.generation);
        let fd = match &s.flow {
            Some(Flow::Udp(f)) => &f.host,
            Some(Flow::Icmp(f)) => &f.host,
            Some(Flow::Tcp(f)) => &f.host,
            Some(Flow::Connecting(c)) => &c.host,
            _ => return true,
        };
        match poller.add(fd, token) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(zone = %self.zone.name, "cannot watch a host socket: {e}");
                self.remove(slot);
                false
            }
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
