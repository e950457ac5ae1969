//! The QEMU stream link against the real QEMU 7.2: QEMU relays between the zone's tap (in the
//! test's namespace) and its `-netdev stream,server=on` socket, sporenet connects to that
//! socket exactly as it does to a zone's `net.sock`. No guest is booted: the namespace's kernel
//! is the zone.

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use support::{GW_V4, GW_V6, Lab};

fn ping(lab: &Lab, args: &[&str]) -> bool {
    let mut cmd = vec!["busybox", "ping"];
    cmd.extend_from_slice(args);
    lab.exec(&cmd).status.success()
}

fn echo_once(lab: &Lab, port: u16, len: usize) {
    let data: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
    let got = lab.inside(|| {
        let mut s = TcpStream::connect_timeout(
            &format!("{GW_V4}:{port}").parse().unwrap(),
            Duration::from_secs(5),
        )
        .expect("connect through QEMU's stream link");
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut w = s.try_clone().unwrap();
        let out = data.clone();
        let sender = std::thread::spawn(move || {
            w.write_all(&out).unwrap();
            w.shutdown(std::net::Shutdown::Write).unwrap();
        });
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        sender.join().unwrap();
        got
    });
    assert!(got == data, "{} bytes echoed of {len}", got.len());
}

#[test]
fn sporenet_serves_a_zone_through_qemus_stream_netdev_and_reconnects_after_kill_9() {
    let mut lab = Lab::new("qemu", 65520);
    lab.config("[policy]\nhost_loopback_via_gateway = true\n");
    let _qemu = lab.start_qemu_relay();
    lab.start_sporenet(&[]);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut c) = conn else { return };
            std::thread::spawn(move || {
                let mut buf = vec![0; 65536];
                while let Ok(n) = c.read(&mut buf) {
                    if n == 0 || c.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            });
        }
    });
    assert!(
        ping(&lab, &["-c", "2", "-W", "3", GW_V4]),
        "IPv4 ping through QEMU"
    );
    assert!(
        ping(&lab, &["-6", "-c", "2", "-W", "3", GW_V6]),
        "IPv6 ping through QEMU"
    );
    // 64 KiB frames through QEMU's relay both ways, byte-exact.
    echo_once(&lab, port, 4 << 20);

    // sporenet dies; QEMU listens again; a new sporenet serves new flows.
    lab.kill_sporenet();
    assert!(
        !ping(&lab, &["-c", "1", "-W", "1", GW_V4]),
        "answered with sporenet down"
    );
    lab.start_sporenet(&[]);
    support::until(
        "the gateway answering again",
        Duration::from_secs(10),
        || ping(&lab, &["-c", "1", "-W", "1", GW_V4]).then_some(()),
    );
    echo_once(&lab, port, 1 << 20);
}
