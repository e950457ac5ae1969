//! sporenet serving a tap in a private network namespace this test creates: the zone's side is
//! the namespace (its kernel's stack), the host's side is this machine's loopback. Only
//! loopback and the test's own namespaces are ever addressed.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

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
    support::until("the refusal counted", Duration::from_secs(5), || {
        (lab.dropped("gateway_port") >= 1).then_some(())
    });
}
