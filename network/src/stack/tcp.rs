//! One TCP flow: a zone connection (outbound through the SYN gate, or inbound from a published
//! port) terminated by its own smoltcp interface with exactly one socket, pumped to and from a
//! non-blocking host socket with backpressure both ways.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::OwnedFd;

use rustix::io::Errno;
use rustix::net::SocketType;
use smoltcp::iface::{Config, Interface, PollResult, SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr, IpEndpoint};

use super::device::OneShot;
use crate::frames::TxQueue;
use crate::zone::ZoneNet;

/// Segments one pump may send (a 64 MiB buffer in 1280-byte segments is ~52k).
const MAX_SEGMENTS_PER_PUMP: usize = 65536;

/// How a host connect ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectResult {
    Pending,
    Connected,
    Refused,
    /// Unreachable, timed out, or any other failure.
    Failed(Errno),
}

/// Starts a non-blocking connect to `to`.
pub fn start_connect(to: SocketAddr) -> Result<(OwnedFd, ConnectResult), Errno> {
    let fd = crate::socket::host_socket(to.ip(), SocketType::STREAM, None)?;
    let _ = rustix::net::sockopt::set_tcp_nodelay(&fd, true);
    let result = match rustix::net::connect(&fd, &to) {
        Ok(()) => ConnectResult::Connected,
        Err(Errno::INPROGRESS) => ConnectResult::Pending,
        Err(e) => classify(e),
    };
    Ok((fd, result))
}

fn classify(e: Errno) -> ConnectResult {
    if e == Errno::CONNREFUSED {
        ConnectResult::Refused
    } else {
        ConnectResult::Failed(e)
    }
}

/// Where a pending connect stands (after the socket reported readiness).
pub fn connect_status(fd: &OwnedFd) -> ConnectResult {
    match rustix::net::sockopt::socket_error(fd) {
        Ok(Ok(())) => match rustix::net::getpeername(fd) {
            Ok(Some(_)) => ConnectResult::Connected,
            _ => ConnectResult::Pending,
        },
        Ok(Err(e)) | Err(e) => classify(e),
    }
}

/// What the pump found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    Open,
    /// Both sides are done (or one reset): remove the flow.
    Done,
}

pub struct TcpFlow {
    pub host: OwnedFd,
    iface: Interface,
    sockets: SocketSet<'static>,
    handle: SocketHandle,
    pub host_readable: bool,
    pub host_writable: bool,
    /// The host sent FIN (read returned 0): our socket closed its sending side.
    host_eof: bool,
    /// The zone's FIN was passed on (`shutdown(SHUT_WR)` on the host socket).
    shut_host: bool,
    /// The zone's side reached ESTABLISHED once (so a later CLOSED is a close, not a refusal).
    established: bool,
    /// The zone sent its FIN (its side closed in order, not by a reset).
    zone_fin: bool,
    mtu: usize,
    zone_mac: smoltcp::wire::EthernetAddress,
}

fn seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(Instant::now().total_micros() as u64);
    h.finish()
}

impl TcpFlow {
    fn new(
        local: IpAddr,
        zone: &ZoneNet,
        host: OwnedFd,
        buffer: usize,
        tx: &mut TxQueue,
        now: Instant,
    ) -> TcpFlow {
        let mut config = Config::new(HardwareAddress::Ip);
        config.random_seed = seed();
        let mut dev = OneShot::ip(None, tx, zone.mac, zone.mtu);
        let mut iface = Interface::new(config, &mut dev, now);
        // Prefix 0: every address is on-link, so replies to the zone need no route.
        iface.update_ip_addrs(|a| {
            let _ = a.push(IpCidr::new(IpAddress::from(local), 0));
        });
        let mut socket = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; buffer]),
            tcp::SocketBuffer::new(vec![0; buffer]),
        );
        socket.set_nagle_enabled(false);
        // The loop already batches: one ACK per pass covers every segment of the batch.
        socket.set_ack_delay(None);
        let mut sockets = SocketSet::new(Vec::with_capacity(1));
        let handle = sockets.add(socket);
        TcpFlow {
            host,
            iface,
            sockets,
            handle,
            host_readable: false,
            host_writable: false,
            host_eof: false,
            shut_host: false,
            established: false,
            zone_fin: false,
            mtu: zone.mtu,
            zone_mac: zone.mac,
        }
    }

    /// An outbound flow whose host connect succeeded: a listener for `dst` takes the zone's
    /// SYN, which the caller injects next.
    pub fn outbound(
        dst: SocketAddr,
        zone: &ZoneNet,
        host: OwnedFd,
        buffer: usize,
        tx: &mut TxQueue,
        now: Instant,
    ) -> TcpFlow {
        let mut flow = TcpFlow::new(dst.ip(), zone, host, buffer, tx, now);
        let sock = flow.sockets.get_mut::<tcp::Socket>(flow.handle);
        // Cannot fail: the endpoint has a port and the socket is new.
        let _ = sock.listen(IpEndpoint::new(IpAddress::from(dst.ip()), dst.port()));
        flow.host_writable = true;
        flow
    }

    /// An inbound flow (a published port): connects from the gateway to the zone's port.
    pub fn inbound(
        from: SocketAddr,
        to: SocketAddr,
        zone: &ZoneNet,
        host: OwnedFd,
        buffer: usize,
        tx: &mut TxQueue,
        now: Instant,
    ) -> TcpFlow {
        let mut flow = TcpFlow::new(from.ip(), zone, host, buffer, tx, now);
        let cx = flow.iface.context();
        let sock = flow.sockets.get_mut::<tcp::Socket>(flow.handle);
        let _ = sock.connect(
            cx,
            IpEndpoint::new(IpAddress::from(to.ip()), to.port()),
            IpEndpoint::new(IpAddress::from(from.ip()), from.port()),
        );
        flow.host_readable = true;
        flow.host_writable = true;
        flow
    }

    /// Feeds one IP packet from the zone.
    pub fn ingress(&mut self, packet: &[u8], tx: &mut TxQueue, now: Instant) {
        let mut dev = OneShot::ip(Some(packet), tx, self.zone_mac, self.mtu);
        self.iface
            .poll_ingress_single(now, &mut dev, &mut self.sockets);
    }

    /// When the flow's stack wants to run next (retransmits, delayed ACKs).
    pub fn poll_at(&mut self, now: Instant) -> Option<Instant> {
        self.iface.poll_at(now, &self.sockets)
    }

    /// Whether the zone side is closed or on its way (a new SYN for this 4-tuple replaces the
    /// flow).
    pub fn is_closing(&self) -> bool {
        let s = self.sockets.get::<tcp::Socket>(self.handle).state();
        matches!(s, tcp::State::Closed | tcp::State::TimeWait)
    }

    /// Moves data both ways as far as buffers allow, maps FIN and RST, and sends what the
    /// flow's stack has for the zone. `room` says whether the link may take more frames.
    pub fn pump(&mut self, tx: &mut TxQueue, now: Instant, room: bool) -> Progress {
        let sock = self.sockets.get_mut::<tcp::Socket>(self.handle);
        if !matches!(
            sock.state(),
            tcp::State::Listen | tcp::State::SynSent | tcp::State::SynReceived | tcp::State::Closed
        ) {
            self.established = true;
        }
        // Zone -> host: what the zone sent, as far as the host socket takes it. What it does
        // not take stays in the flow's receive buffer, and the zone's window closes.
        while self.host_writable && sock.can_recv() {
            let host = &self.host;
            match sock.recv(|buf| {
                match rustix::net::send(host, buf, rustix::net::SendFlags::NOSIGNAL) {
                    Ok(n) => (n, Ok(n)),
                    Err(e) => (0, Err(e)),
                }
            }) {
                Ok(Ok(_)) => {}
                Ok(Err(Errno::AGAIN)) => self.host_writable = false,
                Ok(Err(_)) => {
                    // The host reset or vanished: reset the zone's side too.
                    sock.abort();
                    break;
                }
                Err(_) => break,
            }
        }
        // The zone's FIN, once everything before it went out.
        if self.established
            && !self.shut_host
            && !sock.may_recv()
            && sock.recv_queue() == 0
            && sock.state() != tcp::State::Closed
        {
            let _ = rustix::net::shutdown(&self.host, rustix::net::Shutdown::Write);
            self.shut_host = true;
        }
        // Host -> zone: only while the flow's send buffer has room and the link takes frames.
        while room && self.host_readable && !self.host_eof && sock.can_send() {
            let host = &self.host;
            match sock.send(|buf| match rustix::io::read(host, buf) {
                Ok(n) => (n, Ok(n)),
                Err(e) => (0, Err(e)),
            }) {
                Ok(Ok(0)) => {
                    self.host_eof = true;
                    sock.close();
                }
                Ok(Ok(_)) => {}
                Ok(Err(Errno::AGAIN)) => self.host_readable = false,
                Ok(Err(_)) => {
                    sock.abort();
                    self.host_eof = true;
                }
                Err(_) => break,
            }
        }
        let state = sock.state();
        let mut dev = OneShot::ip(None, tx, self.zone_mac, self.mtu);
        // Each call sends at most one segment: send all the window allows (bounded by the
        // flow's send buffer; the cap only guards the loop).
        for _ in 0..MAX_SEGMENTS_PER_PUMP {
            if self.iface.poll_egress(now, &mut dev, &mut self.sockets) == PollResult::None {
                break;
            }
        }
        if matches!(
            state,
            tcp::State::CloseWait
                | tcp::State::LastAck
                | tcp::State::Closing
                | tcp::State::TimeWait
        ) {
            self.zone_fin = true;
        }
        match state {
            tcp::State::Closed | tcp::State::TimeWait if self.zone_fin && self.host_eof => {
                // Both sides closed: done once the zone's last bytes and its FIN reached the
                // host (a slow host reader may still be taking them).
                let sock = self.sockets.get::<tcp::Socket>(self.handle);
                if sock.recv_queue() > 0 {
                    return Progress::Open;
                }
                if !self.shut_host {
                    let _ = rustix::net::shutdown(&self.host, rustix::net::Shutdown::Write);
                    self.shut_host = true;
                }
                Progress::Done
            }
            tcp::State::Closed | tcp::State::TimeWait => {
                // A reset (either side) or a timeout: the host sees a reset as well.
                let _ = rustix::net::sockopt::set_socket_linger(
                    &self.host,
                    Some(std::time::Duration::ZERO),
                );
                Progress::Done
            }
            _ => Progress::Open,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::net::{AddressFamily, SocketFlags, SocketType};

    /// The zone's side: a smoltcp client on its own interface, packets shuttled by hand.
    struct Zone {
        iface: Interface,
        sockets: SocketSet<'static>,
        handle: SocketHandle,
    }

    fn ip_packets(tx: &mut TxQueue) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(f) = tx.next_frame() {
            out.push(f[14..].to_vec());
            tx.consume_frame();
        }
        out
    }

    /// The zone sends `len` bytes and its FIN while the host side reads slowly, after the host
    /// already closed its side: every byte must reach the host before the flow ends.
    #[test]
    fn the_zone_fin_behind_bytes_the_host_has_not_taken_loses_none() {
        let zone_net = crate::fuzzing::zone();
        let len = 1 << 20;
        // The host: a socket pair with small buffers; sporenet's end non-blocking.
        let (ours, peer) = rustix::net::socketpair(
            AddressFamily::UNIX,
            SocketType::STREAM,
            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            None,
        )
        .unwrap();
        rustix::net::sockopt::set_socket_send_buffer_size(&ours, 4096).unwrap();
        rustix::net::sockopt::set_socket_recv_buffer_size(&peer, 4096).unwrap();
        rustix::net::shutdown(&peer, rustix::net::Shutdown::Write).unwrap();

        let dst: SocketAddr = "203.0.113.9:80".parse().unwrap();
        let mut t = 0;
        let now = |t: i64| Instant::from_millis(t);
        let mut to_zone = TxQueue::default();
        let mut flow = TcpFlow::outbound(dst, &zone_net, ours, 64 << 10, &mut to_zone, now(0));

        let mut scratch = TxQueue::default();
        let mut iface = Interface::new(
            Config::new(HardwareAddress::Ip),
            &mut OneShot::ip(None, &mut scratch, zone_net.mac, zone_net.mtu),
            now(0),
        );
        iface.update_ip_addrs(|a| {
            let _ = a.push(IpCidr::new(IpAddress::from(zone_net.ipv4.address()), 0));
        });
        let mut sockets = SocketSet::new(Vec::new());
        let mut client = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; 64 << 10]),
            tcp::SocketBuffer::new(vec![0; 64 << 10]),
        );
        client
            .connect(
                iface.context(),
                IpEndpoint::new(IpAddress::from(dst.ip()), dst.port()),
                IpEndpoint::new(IpAddress::from(zone_net.ipv4.address()), 40000),
            )
            .unwrap();
        let handle = sockets.add(client);
        let mut zone = Zone {
            iface,
            sockets,
            handle,
        };

        let mut from_zone = TxQueue::default();
        let (mut sent, mut received) = (0usize, 0usize);
        let mut closed = false;
        let mut done = false;
        let mut buf = vec![0u8; 1024];
        while t < 600_000 && !(done && received == len) {
            t += 10;
            // Zone -> flow.
            let mut dev = OneShot::ip(None, &mut from_zone, zone_net.mac, zone_net.mtu);
            zone.iface.poll(now(t), &mut dev, &mut zone.sockets);
            for p in ip_packets(&mut from_zone) {
                if !done {
                    flow.ingress(&p, &mut to_zone, now(t));
                }
            }
            if !done {
                flow.host_readable = true;
                done = flow.pump(&mut to_zone, now(t), true) == Progress::Done;
            }
            // Flow -> zone.
            for p in ip_packets(&mut to_zone) {
                let mut dev = OneShot::ip(Some(&p), &mut from_zone, zone_net.mac, zone_net.mtu);
                zone.iface.poll(now(t), &mut dev, &mut zone.sockets);
            }
            // The zone's application: send everything, then close.
            let sock = zone.sockets.get_mut::<tcp::Socket>(zone.handle);
            if sock.may_send() && sent < len {
                sent += sock
                    .send(|b| {
                        let n = b.len().min(len - sent);
                        b[..n].fill(0x5a);
                        (n, n)
                    })
                    .unwrap();
            }
            if sent == len && !closed && sock.send_queue() == 0 {
                sock.close();
                closed = true;
            }
            // The host reads 1 KiB per step and the flow hears it may write again.
            match rustix::io::read(&peer, &mut buf) {
                Ok(n) => {
                    assert!(buf[..n].iter().all(|b| *b == 0x5a));
                    received += n;
                    flow.host_writable = true;
                }
                Err(Errno::AGAIN) => {}
                Err(e) => panic!("the host's end failed after {received} bytes: {e}"),
            }
        }
        assert!(
            closed,
            "the zone never got to close: sent {sent}, host got {received}"
        );
        assert!(done, "the flow never finished");
        assert_eq!(received, len, "bytes the host got before the flow ended");
        assert_eq!(
            rustix::io::read(&peer, &mut buf),
            Ok(0),
            "then the zone's FIN"
        );
    }
}
