//! sporenet serving a tap in a private network namespace this test creates: the zone's side is
//! the namespace (its kernel's stack), the host's side is this machine's loopback. Only
//! loopback and the test's own namespaces are ever addressed.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use support::{GW_V4, GW_V6, Lab};

const LOOPBACK_MAP: &str = "[policy]\nhost_loopback_via_gateway = true\n";

/// An echo server on host loopback (`addr`), one thread per connection, until the test ends.
fn echo_server(addr: &str) -> SocketAddr {
    let listener = TcpListener::bind(addr).unwrap();
    let local = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            std::thread::spawn(move || {
                let mut buf = vec![0; 65536];
                loop {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if conn.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    local
}

/// Sends `len` bytes through `stream` and reads them back, checking every byte.
fn echo_roundtrip(mut stream: TcpStream, len: usize) {
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let data: Vec<u8> = (0..len).map(|i| (i * 7 + i / 251) as u8).collect();
    let mut writer = stream.try_clone().unwrap();
    let to_send = data.clone();
    let sender = std::thread::spawn(move || {
        writer.write_all(&to_send).unwrap();
        writer.shutdown(std::net::Shutdown::Write).unwrap();
    });
    let mut got = Vec::with_capacity(len);
    stream.read_to_end(&mut got).unwrap();
    sender.join().unwrap();
    assert_eq!(got.len(), data.len());
    assert!(got == data, "echoed bytes differ");
}

fn ping(lab: &Lab, args: &[&str]) -> std::process::Output {
    let mut cmd = vec!["busybox", "ping"];
    cmd.extend_from_slice(args);
    lab.exec(&cmd)
}

#[test]
fn the_gateway_answers_ping_on_ipv4_and_ipv6() {
    let mut lab = Lab::new("ping", 1500);
    lab.config("");
    lab.start_sporenet(&[]);
    for (args, what) in [
        (vec!["-c", "2", "-W", "3", GW_V4], "IPv4"),
        (vec!["-6", "-c", "2", "-W", "3", GW_V6], "IPv6"),
    ] {
        let out = ping(&lab, &args);
        assert!(
            out.status.success(),
            "ping {what} gateway failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("2 packets received"));
    }
}

#[test]
fn tcp_reaches_host_loopback_through_the_gateway_mapping_both_ways() {
    let mut lab = Lab::new("tcp", 65520);
    lab.config(LOOPBACK_MAP);
    lab.start_sporenet(&[]);
    let v4 = echo_server("127.0.0.1:0");
    let v6 = echo_server("[::1]:0");
    lab.inside(|| {
        let s = TcpStream::connect_timeout(
            &format!("{GW_V4}:{}", v4.port()).parse().unwrap(),
            Duration::from_secs(5),
        )
        .expect("connect through the gateway (IPv4)");
        echo_roundtrip(s, 8 << 20);
        let s = TcpStream::connect_timeout(
            &format!("[{GW_V6}]:{}", v6.port()).parse().unwrap(),
            Duration::from_secs(5),
        )
        .expect("connect through the gateway (IPv6)");
        echo_roundtrip(s, 1 << 20);
    });
}

#[test]
fn without_the_mapping_the_gateway_refuses_and_host_loopback_is_unreachable() {
    let mut lab = Lab::new("deny", 1500);
    lab.config("");
    lab.start_sporenet(&[]);
    let v4 = echo_server("127.0.0.1:0");
    lab.inside(|| {
        let err = TcpStream::connect_timeout(
            &format!("{GW_V4}:{}", v4.port()).parse().unwrap(),
            Duration::from_secs(5),
        )
        .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
    });
    lab.wait_dropped("gateway_port", 1);
}

/// A listener on host loopback whose accept queue is full, so new SYNs to it are dropped: a
/// destination that never answers, on this machine's loopback.
fn blackhole() -> (std::os::fd::OwnedFd, Vec<TcpStream>, u16) {
    use rustix::net::{AddressFamily, SocketType};
    let fd = rustix::net::socket(AddressFamily::INET, SocketType::STREAM, None).unwrap();
    rustix::net::bind(&fd, &"127.0.0.1:0".parse::<SocketAddr>().unwrap()).unwrap();
    rustix::net::listen(&fd, 0).unwrap();
    let port = match rustix::net::getsockname(&fd).unwrap().try_into().unwrap() {
        SocketAddr::V4(a) => a.port(),
        SocketAddr::V6(a) => a.port(),
    };
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    // Two connections fill a backlog of 0 (the kernel admits backlog + 1).
    let fillers = (0..2)
        .filter_map(|_| TcpStream::connect_timeout(&addr, Duration::from_millis(300)).ok())
        .collect();
    (fd, fillers, port)
}

#[test]
fn a_refused_port_answers_rst_at_once_and_a_blackhole_stalls_no_other_flow() {
    let mut lab = Lab::new("rst", 1500);
    lab.config(&format!("{LOOPBACK_MAP}[tcp]\nconnect_timeout_secs = 3\n"));
    lab.start_sporenet(&[]);
    let echo = echo_server("127.0.0.1:0");
    let (_hole, _fillers, hole_port) = blackhole();
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    lab.inside(|| {
        let gw = |port: u16| -> SocketAddr { format!("{GW_V4}:{port}").parse().unwrap() };
        let started = Instant::now();
        let stalled = std::thread::spawn(move || {
            let r = TcpStream::connect_timeout(&gw(hole_port), Duration::from_secs(15));
            (r.map(|_| ()), started.elapsed())
        });
        std::thread::sleep(Duration::from_millis(200));
        // While that connect hangs, a refused port answers at once...
        let t = Instant::now();
        let err = TcpStream::connect_timeout(&gw(closed), Duration::from_secs(5)).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "refusal took {:?}",
            t.elapsed()
        );
        // ...and other flows carry data.
        let t = Instant::now();
        let s = TcpStream::connect_timeout(&gw(echo.port()), Duration::from_secs(5)).unwrap();
        echo_roundtrip(s, 256 << 10);
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "echo took {:?}",
            t.elapsed()
        );
        // The blackholed connect ends with ICMP unreachable once the host connect times out.
        let (result, took) = stalled.join().unwrap();
        let err = result.expect_err("the blackholed connect cannot succeed");
        assert_eq!(err.kind(), std::io::ErrorKind::HostUnreachable, "{err}");
        assert!(
            (Duration::from_secs(2)..Duration::from_secs(8)).contains(&took),
            "unreachable after {took:?} (connect_timeout_secs = 3)"
        );
    });
    lab.wait_dropped("connect_refused", 1);
    lab.wait_dropped("connect_failed", 1);
}

/// A UDP echo server on `addr` for the rest of the test.
fn udp_echo(addr: &str) -> SocketAddr {
    let s = std::net::UdpSocket::bind(addr).unwrap();
    let local = s.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0; 65536];
        while let Ok((n, from)) = s.recv_from(&mut buf) {
            let _ = s.send_to(&buf[..n], from);
        }
    });
    local
}

#[test]
fn udp_echo_through_the_gateway_v4_and_v6() {
    let mut lab = Lab::new("udp", 1500);
    lab.config(LOOPBACK_MAP);
    lab.start_sporenet(&[]);
    let v4 = udp_echo("127.0.0.1:0");
    let v6 = udp_echo("[::1]:0");
    lab.inside(|| {
        for (bind, to) in [
            ("0.0.0.0:0", format!("{GW_V4}:{}", v4.port())),
            ("[::]:0", format!("[{GW_V6}]:{}", v6.port())),
        ] {
            let s = std::net::UdpSocket::bind(bind).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            s.connect(&to).unwrap();
            for i in 0..5u8 {
                let msg = vec![i; 1000 + usize::from(i)];
                s.send(&msg).unwrap();
                let mut buf = [0; 4096];
                let n = s.recv(&mut buf).expect("echo");
                assert_eq!(&buf[..n], &msg[..], "datagram {i} to {to}");
            }
        }
    });
    lab.wait_status("udp_flows", |v| v.as_u64() == Some(2));
}

/// A DNS query for `name`, type A, with `id`.
fn dns_query(id: u16, name: &str) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// The test's resolver: answers every A query with 192.0.2.7, over UDP and TCP on one
/// loopback port; counts what it answered.
fn dns_server() -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    dns_server_on("127.0.0.1:0")
}

/// Like [`dns_server`], on `addr`.
fn dns_server_on(addr: &str) -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    fn answer(query: &[u8]) -> Vec<u8> {
        let mut r = query.to_vec();
        r[2] |= 0x80; // QR
        r[7] = 1; // ANCOUNT
        r.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 7]);
        r
    }
    let answered = std::sync::Arc::new(AtomicUsize::new(0));
    let udp = std::net::UdpSocket::bind(addr).unwrap();
    let addr = udp.local_addr().unwrap();
    let tcp = TcpListener::bind(addr).unwrap();
    let count = answered.clone();
    std::thread::spawn(move || {
        let mut buf = [0; 1500];
        while let Ok((n, from)) = udp.recv_from(&mut buf) {
            count.fetch_add(1, Ordering::Relaxed);
            let _ = udp.send_to(&answer(&buf[..n]), from);
        }
    });
    let count = answered.clone();
    std::thread::spawn(move || {
        for conn in tcp.incoming() {
            let Ok(mut conn) = conn else { return };
            let mut len = [0; 2];
            if conn.read_exact(&mut len).is_err() {
                continue;
            }
            let mut q = vec![0; usize::from(u16::from_be_bytes(len))];
            if conn.read_exact(&mut q).is_err() {
                continue;
            }
            count.fetch_add(1, Ordering::Relaxed);
            let r = answer(&q);
            let _ = conn.write_all(&(r.len() as u16).to_be_bytes());
            let _ = conn.write_all(&r);
        }
    });
    (addr, answered)
}

fn assert_answer(query: &[u8], reply: &[u8]) {
    assert_eq!(reply[..2], query[..2], "the reply carries the query's id");
    assert!(reply[2] & 0x80 != 0, "a response");
    assert_eq!(
        &reply[reply.len() - 4..],
        &[192, 0, 2, 7],
        "the test resolver's answer"
    );
}

#[test]
fn dns_to_the_gateway_is_forwarded_to_the_configured_resolver_over_udp_and_tcp() {
    let (resolver, answered) = dns_server();
    let mut lab = Lab::new("dns", 1500);
    // No loopback mapping: DNS on the gateway works without it.
    lab.config(&format!("[dns]\nupstreams = [\"{resolver}\"]\n"));
    lab.start_sporenet(&[]);
    lab.inside(|| {
        for (i, (bind, gw)) in [
            ("0.0.0.0:0", GW_V4.to_string()),
            ("[::]:0", format!("[{GW_V6}]")),
        ]
        .into_iter()
        .enumerate()
        {
            let s = std::net::UdpSocket::bind(bind).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            s.connect(format!("{gw}:53")).unwrap();
            let q = dns_query(0x4242 + i as u16, "zone.example");
            s.send(&q).unwrap();
            let mut buf = [0; 1500];
            let n = s.recv(&mut buf).expect("a DNS answer over UDP");
            assert_answer(&q, &buf[..n]);

            let mut t = TcpStream::connect_timeout(
                &format!("{gw}:53").parse().unwrap(),
                Duration::from_secs(5),
            )
            .expect("DNS over TCP to the gateway");
            t.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            let q = dns_query(0x5151, "tcp.example");
            t.write_all(&(q.len() as u16).to_be_bytes()).unwrap();
            t.write_all(&q).unwrap();
            let mut len = [0; 2];
            t.read_exact(&mut len).unwrap();
            let mut r = vec![0; usize::from(u16::from_be_bytes(len))];
            t.read_exact(&mut r).unwrap();
            assert_answer(&q, &r);
        }
    });
    assert_eq!(answered.load(std::sync::atomic::Ordering::Relaxed), 4);
}

/// A free port on host loopback (bound, then released).
fn free_port(udp: bool) -> u16 {
    if udp {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap().port()
    } else {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    }
}

#[test]
fn published_ports_carry_host_connections_and_datagrams_into_the_zone() {
    let mut lab = Lab::new("pub", 1500);
    lab.config("");
    let (tcp_port, udp_port) = (free_port(false), free_port(true));
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port();
    // Servers inside the zone: a TCP echo on 80, a UDP echo on 5353.
    let (listener, udp) = lab.inside(|| {
        (
            TcpListener::bind("0.0.0.0:80").unwrap(),
            std::net::UdpSocket::bind("0.0.0.0:5353").unwrap(),
        )
    });
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            std::thread::spawn(move || {
                let mut buf = vec![0; 65536];
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 || conn.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            });
        }
    });
    std::thread::spawn(move || {
        let mut buf = [0; 2048];
        while let Ok((n, from)) = udp.recv_from(&mut buf) {
            let _ = udp.send_to(&buf[..n], from);
        }
    });
    lab.start_sporenet(&[
        "-p",
        &format!("127.0.0.1:{tcp_port}:80"),
        "-p",
        &format!("127.0.0.1:{udp_port}:5353/udp"),
        "-p",
        &format!("127.0.0.1:{taken_port}:81"),
    ]);
    for _ in 0..3 {
        let s = TcpStream::connect_timeout(
            &format!("127.0.0.1:{tcp_port}").parse().unwrap(),
            Duration::from_secs(5),
        )
        .expect("the published TCP port accepts");
        echo_roundtrip(s, 2 << 20);
    }
    let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    u.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    u.connect(format!("127.0.0.1:{udp_port}")).unwrap();
    for i in 0..3u8 {
        u.send(&[i; 100]).unwrap();
        let mut buf = [0; 200];
        let n = u.recv(&mut buf).expect("the zone's UDP echo");
        assert_eq!(&buf[..n], &[i; 100]);
    }
    // The port that was taken is reported, the others listen.
    lab.wait_status("ports", |ports| {
        let ports = ports.as_array().cloned().unwrap_or_default();
        ports.len() == 3
            && ports.iter().filter(|p| p["listening"] == true).count() == 2
            && ports.iter().any(|p| {
                p["listening"] == false
                    && p["port"] == format!("127.0.0.1:{taken_port}:81/tcp")
                    && p["error"].as_str().unwrap_or("").contains("in use")
            })
    });
    drop(taken);
}

#[test]
fn frames_with_a_foreign_source_mac_or_ip_are_dropped_and_counted() {
    let mut lab = Lab::new("spoof", 1500);
    lab.config(LOOPBACK_MAP);
    lab.start_sporenet(&[]);
    let echo = udp_echo("127.0.0.1:0");
    let n = lab.name.clone();
    // A second address in the zone: datagrams from it are not the zone's.
    support::sh(&[
        "ip",
        "-n",
        &n,
        "addr",
        "add",
        "10.75.0.99/16",
        "dev",
        support::TAP,
    ]);
    lab.inside(|| {
        let s = std::net::UdpSocket::bind("10.75.0.99:0").unwrap();
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        s.connect(format!("{GW_V4}:{}", echo.port())).unwrap();
        s.send(b"spoofed").unwrap();
        assert!(
            s.recv(&mut [0; 64]).is_err(),
            "a spoofed source got an answer"
        );
    });
    lab.wait_dropped("spoofed_ip", 1);
    // Another MAC: not even the gateway answers.
    support::sh(&[
        "ip",
        "-n",
        &n,
        "link",
        "set",
        support::TAP,
        "address",
        "02:00:00:00:00:99",
    ]);
    let out = lab.exec(&["busybox", "ping", "-c", "1", "-W", "1", GW_V4]);
    assert!(
        !out.status.success(),
        "ping with a foreign MAC was answered"
    );
    lab.wait_dropped("spoofed_mac", 1);
    // Back to the reserved MAC and address: traffic flows again.
    support::sh(&[
        "ip",
        "-n",
        &n,
        "link",
        "set",
        support::TAP,
        "address",
        support::ZONE_MAC,
    ]);
    let out = lab.exec(&["busybox", "ping", "-c", "1", "-W", "3", GW_V4]);
    assert!(out.status.success(), "ping with the zone's own MAC failed");
}

#[test]
fn after_kill_9_a_restarted_sporenet_serves_new_flows() {
    let mut lab = Lab::new("restart", 1500);
    lab.config(LOOPBACK_MAP);
    lab.start_sporenet(&[]);
    let echo = echo_server("127.0.0.1:0");
    let to: SocketAddr = format!("{GW_V4}:{}", echo.port()).parse().unwrap();
    let before = lab.inside(|| TcpStream::connect_timeout(&to, Duration::from_secs(5)).unwrap());
    lab.kill_sporenet();
    lab.inside(|| {
        assert!(
            TcpStream::connect_timeout(&to, Duration::from_millis(700)).is_err(),
            "nothing should answer while sporenet is down"
        );
    });
    lab.start_sporenet(&[]);
    lab.inside(|| {
        let s = TcpStream::connect_timeout(&to, Duration::from_secs(5))
            .expect("a new connection after the restart");
        echo_roundtrip(s, 1 << 20);
    });
    // The connection from before the crash is gone; the zone learns so on its next segment.
    let mut old = before;
    old.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let _ = old.write_all(b"after the crash");
    let mut buf = [0; 16];
    let r = old.read(&mut buf);
    assert!(
        matches!(r, Ok(0)) || r.is_err(),
        "the old connection must be reset, got {r:?}"
    );
}

#[test]
fn echo_requests_beyond_the_gateway_reach_the_outside_with_raw_or_ping_sockets() {
    // Raw sockets (the default `ping_group_range` admits no group), then ping sockets.
    for ping_sockets in [false, true] {
        let mut lab = Lab::new(if ping_sockets { "pings" } else { "raw" }, 1500);
        lab.with_world();
        if ping_sockets {
            lab.host_sysctl("net.ipv4.ping_group_range=0 0");
        }
        lab.config("");
        lab.start_sporenet(&[]);
        for args in [
            vec!["-c", "3", "-W", "3", "198.51.100.2"],
            vec!["-6", "-c", "3", "-W", "3", "2001:db8::2"],
        ] {
            let out = ping(&lab, &args);
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success() && text.contains("3 packets received"),
                "ping {args:?} (ping sockets: {ping_sockets}): {text}{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        lab.wait_status("icmp_flows", |v| v.as_u64() == Some(2));
    }
}

#[test]
fn without_a_host_route_ipv6_fails_at_once_so_clients_fall_back() {
    let mut lab = Lab::new("noroute", 1500);
    lab.with_world();
    lab.config("");
    lab.start_sporenet(&[]);
    lab.inside(|| {
        let t = Instant::now();
        // sporenet's host namespace has no IPv6 route beyond 2001:db8::/64.
        let err = TcpStream::connect_timeout(
            &"[2001:db9::7]:80".parse().unwrap(),
            Duration::from_secs(10),
        )
        .unwrap_err();
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "took {:?}: {err}",
            t.elapsed()
        );
        assert!(
            matches!(
                err.kind(),
                std::io::ErrorKind::HostUnreachable | std::io::ErrorKind::NetworkUnreachable
            ),
            "{err}"
        );
        // IPv4 to the world works meanwhile (nothing listens: a RST from the world's kernel).
        let err =
            TcpStream::connect_timeout(&"198.51.100.2:9".parse().unwrap(), Duration::from_secs(5))
                .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
    });
}

/// sporenet's resident memory, KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn a_slow_reader_on_either_side_holds_the_sender_back_with_bounded_memory() {
    const TOTAL: usize = 48 << 20;
    const BACK: usize = 16 << 20;
    let mut lab = Lab::new("slow", 65520);
    lab.config(LOOPBACK_MAP);
    lab.start_sporenet(&[]);
    let pid = lab.sporenet.as_ref().unwrap().id();
    // The host sends 48 MiB to a zone that reads slowly, then the zone sends 16 MiB to a host
    // reader that reads slowly; each side checks every byte.
    let pattern = |i: usize| (i % 251) as u8;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let host = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let chunk: Vec<u8> = (0..TOTAL).map(pattern).collect();
        conn.write_all(&chunk).unwrap();
        conn.shutdown(std::net::Shutdown::Write).unwrap();
        // Now read slowly what the zone sends: small reads, so the flow's buffer toward the host
        // is still full when the zone's FIN arrives, which must not cut off its last bytes.
        let mut got = 0;
        let mut buf = vec![0; 64 << 10];
        loop {
            std::thread::sleep(Duration::from_millis(2));
            let n = conn.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            assert!(
                buf[..n]
                    .iter()
                    .enumerate()
                    .all(|(i, b)| *b == pattern(got + i))
            );
            got += n;
        }
        got
    });
    let before = rss_kib(pid);
    let mut peak = before;
    let zone_got = lab.inside(|| {
        let mut s = TcpStream::connect_timeout(
            &format!("{GW_V4}:{port}").parse().unwrap(),
            Duration::from_secs(5),
        )
        .unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut got = 0;
        let mut buf = vec![0; 256 << 10];
        loop {
            std::thread::sleep(Duration::from_millis(10));
            peak = peak.max(rss_kib(pid));
            let n = s.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            assert!(
                buf[..n]
                    .iter()
                    .enumerate()
                    .all(|(i, b)| *b == pattern(got + i))
            );
            got += n;
        }
        let chunk: Vec<u8> = (0..BACK).map(pattern).collect();
        let mut writer = s.try_clone().unwrap();
        let sender = std::thread::spawn(move || {
            writer.write_all(&chunk).unwrap();
            writer.shutdown(std::net::Shutdown::Write).unwrap();
        });
        while !sender.is_finished() {
            peak = peak.max(rss_kib(pid));
            std::thread::sleep(Duration::from_millis(20));
        }
        sender.join().unwrap();
        got
    });
    assert_eq!(zone_got, TOTAL);
    assert_eq!(host.join().unwrap(), BACK);
    // Two 256 KiB flow buffers and the link's queue: nowhere near the 48 MiB in flight.
    assert!(
        peak - before < 16 << 10,
        "sporenet grew by {} KiB while 48 MiB waited for slow readers",
        peak - before
    );
}

/// A UDP query to the gateway's port 53 from a new socket; the answer, if any within `wait`.
fn ask_gateway(id: u16, wait: Duration) -> Option<Vec<u8>> {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    s.set_read_timeout(Some(wait)).unwrap();
    s.connect(format!("{GW_V4}:53")).unwrap();
    let q = dns_query(id, "resolv.example");
    s.send(&q).unwrap();
    let mut buf = [0; 1500];
    let n = s.recv(&mut buf).ok()?;
    assert_answer(&q, &buf[..n]);
    Some(buf[..n].to_vec())
}

#[test]
fn dns_follows_resolv_conf_reaches_a_loopback_resolver_and_skips_a_dead_one() {
    use std::sync::atomic::Ordering;
    // Resolvers on port 53 of loopback addresses of this test's own (all of 127/8 is the
    // host's loopback), as systemd-resolved's 127.0.0.53 is.
    let base = 10 + (std::process::id() % 200) as u8;
    let dead = format!("127.53.{base}.1");
    let (first, first_count) = dns_server_on(&format!("127.53.{base}.2:53"));
    let (second, second_count) = dns_server_on(&format!("127.53.{base}.3:53"));
    let mut lab = Lab::new("resolv", 1500);
    let resolv = lab.dir.join("resolv.conf");
    std::fs::write(
        &resolv,
        format!("# test\nnameserver {dead}\nnameserver {}\n", first.ip()),
    )
    .unwrap();
    lab.config(&format!("[dns]\nresolv_conf = \"{}\"\n", resolv.display()));
    lab.start_sporenet(&[]);
    lab.inside(|| {
        // The first resolver listed answers nothing (ICMP port unreachable): the query is lost,
        // and the next flow goes to the next resolver, as a client's retry would.
        assert!(ask_gateway(1, Duration::from_millis(700)).is_none());
        support::until(
            "an answer from the second resolver listed",
            Duration::from_secs(5),
            || ask_gateway(2, Duration::from_millis(500)),
        );
    });
    assert!(first_count.load(Ordering::Relaxed) >= 1);
    // The host's resolv.conf changes: new queries follow it (read at most once a second).
    std::fs::write(&resolv, format!("nameserver {}\n", second.ip())).unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    lab.inside(|| {
        support::until(
            "an answer from the new resolver",
            Duration::from_secs(5),
            || ask_gateway(3, Duration::from_millis(500)),
        );
    });
    assert!(second_count.load(Ordering::Relaxed) >= 1);
}
