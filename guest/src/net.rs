//! Network setup from the launch config: loopback up, the zone's interface (found by MAC, not
//! by name or probe order) up with its MTU, IPv4/IPv6 addresses and default routes, and
//! nothing else (router advertisements are ignored).

use std::net::IpAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use spore_idm::launch::{Cidr, MacAddr, NetworkConfig};

use crate::console::info;
use crate::netlink::{self, Link, Netlink};

/// Is `gateway` inside `cidr`'s prefix (reachable without the on-link flag)?
pub fn in_prefix(cidr: Cidr, gateway: IpAddr) -> bool {
    fn masked(bytes: &[u8], prefix: u8) -> Vec<u8> {
        bytes
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let bits = (prefix as usize).saturating_sub(i * 8).min(8);
                if bits == 0 {
                    0
                } else {
                    b & (0xffu8 << (8 - bits))
                }
            })
            .collect()
    }
    match (cidr.addr, gateway) {
        (IpAddr::V4(a), IpAddr::V4(g)) => {
            masked(&a.octets(), cidr.prefix) == masked(&g.octets(), cidr.prefix)
        }
        (IpAddr::V6(a), IpAddr::V6(g)) => {
            masked(&a.octets(), cidr.prefix) == masked(&g.octets(), cidr.prefix)
        }
        _ => false,
    }
}

pub fn loopback_up(nl: &mut Netlink) -> Result<()> {
    let links = nl.links().context("cannot list network links")?;
    let lo = links
        .iter()
        .find(|l| l.name == "lo")
        .context("the kernel has no loopback interface")?;
    let index = lo.index;
    nl.request(|seq| netlink::link_up(seq, index, None))
        .context("cannot bring lo up")
}

fn find_by_mac(nl: &mut Netlink, mac: MacAddr, timeout: Duration) -> Result<Link> {
    let deadline = Instant::now() + timeout;
    loop {
        let links = nl.links().context("cannot list network links")?;
        if let Some(link) = links.iter().find(|l| l.mac == Some(mac.0)) {
            return Ok(link.clone());
        }
        if Instant::now() >= deadline {
            let seen: Vec<String> = links
                .iter()
                .map(|l| match l.mac {
                    Some(m) => format!("{} ({})", l.name, MacAddr(m)),
                    None => l.name.clone(),
                })
                .collect();
            bail!(
                "no network interface with MAC {mac} appeared within {} s (found: {})",
                timeout.as_secs(),
                seen.join(", ")
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The zone's addresses and routes are the launch config's alone: no SLAAC address and no
/// default route from a router advertisement (QEMU's user network sends them, and a zone on
/// the same link as a stray router would otherwise pick up its prefix). Link-local addresses
/// and neighbour discovery are unaffected. Without IPv6 in the kernel the files do not exist.
fn ignore_router_advertisements(name: &str) -> Result<()> {
    for key in ["accept_ra", "autoconf"] {
        let path = format!("/proc/sys/net/ipv6/conf/{name}/{key}");
        match std::fs::write(&path, "0") {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot write 0 to {path}")),
        }
    }
    Ok(())
}

/// Configures the zone's interface. Returns its name.
pub fn configure(nl: &mut Netlink, net: &NetworkConfig, timeout: Duration) -> Result<String> {
    let link = find_by_mac(nl, net.mac, timeout)?;
    let index = link.index;
    ignore_router_advertisements(&link.name)?;
    nl.request(|seq| netlink::link_up(seq, index, net.mtu))
        .with_context(|| format!("cannot bring {} up", link.name))?;
    for ip in [net.ipv4, net.ipv6].into_iter().flatten() {
        let addr = ip.address;
        nl.request(|seq| netlink::add_address(seq, index, addr.addr, addr.prefix))
            .with_context(|| format!("cannot add address {addr} to {}", link.name))?;
        if let Some(gw) = ip.gateway {
            let onlink = !in_prefix(addr, gw);
            nl.request(|seq| netlink::add_default_route(seq, index, gw, onlink))
                .with_context(|| format!("cannot add a default route via {gw} on {}", link.name))?;
        }
        info!(
            "{}: {addr}{}",
            link.name,
            ip.gateway.map(|g| format!(" via {g}")).unwrap_or_default()
        );
    }
    Ok(link.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_membership() {
        let c: Cidr = "10.0.0.5/24".parse().unwrap();
        assert!(in_prefix(c, "10.0.0.1".parse().unwrap()));
        assert!(!in_prefix(c, "10.0.1.1".parse().unwrap()));
        assert!(in_prefix(
            "10.0.0.5/0".parse().unwrap(),
            "1.2.3.4".parse().unwrap()
        ));
        assert!(!in_prefix(
            "10.0.0.5/32".parse().unwrap(),
            "10.0.0.1".parse().unwrap()
        ));
        let c6: Cidr = "fd00:1::5/64".parse().unwrap();
        assert!(in_prefix(c6, "fd00:1::1".parse().unwrap()));
        assert!(!in_prefix(c6, "fd00:2::1".parse().unwrap()));
        assert!(!in_prefix(c6, "10.0.0.1".parse().unwrap()));
        assert!(in_prefix(
            "10.0.0.5/20".parse().unwrap(),
            "10.0.15.1".parse().unwrap()
        ));
        assert!(!in_prefix(
            "10.0.0.5/20".parse().unwrap(),
            "10.0.16.1".parse().unwrap()
        ));
    }

    /// Configures a veth end in a private network namespace and checks the result with `ip`.
    #[test]
    fn configure_in_a_network_namespace() {
        assert_eq!(
            // SAFETY: geteuid has no memory effects.
            unsafe { libc::geteuid() },
            0,
            "this test needs root (CI runs as root)"
        );
        // nextest runs each test in its own process; this thread moves to a fresh namespace.
        assert_eq!(
            // SAFETY: unshare with a constant flag; only this thread's namespace changes.
            unsafe { libc::unshare(libc::CLONE_NEWNET) },
            0,
            "unshare(CLONE_NEWNET)"
        );
        let ip = |args: &str| {
            let out = std::process::Command::new("ip")
                .args(args.split(' '))
                .output()
                .expect("run ip");
            assert!(
                out.status.success(),
                "ip {args}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        ip("link add zone0 type veth peer name host0");
        ip("link set zone0 address 02:00:00:00:00:42");
        ip("link set host0 up");

        let mut nl = Netlink::open().unwrap();
        loopback_up(&mut nl).unwrap();
        let net = NetworkConfig {
            mac: "02:00:00:00:00:42".parse().unwrap(),
            ipv4: Some(spore_idm::launch::IpConfig {
                address: "10.9.0.2/24".parse().unwrap(),
                gateway: Some("10.9.0.1".parse().unwrap()),
            }),
            ipv6: Some(spore_idm::launch::IpConfig {
                address: "fd00:9::2/64".parse().unwrap(),
                gateway: Some("fd00:9::1".parse().unwrap()),
            }),
            nameservers: vec![],
            mtu: Some(1400),
        };
        assert_eq!(
            configure(&mut nl, &net, Duration::from_secs(1)).unwrap(),
            "zone0"
        );
        let link = ip("-o link show zone0");
        assert!(link.contains("mtu 1400") && link.contains(",UP"), "{link}");
        assert!(ip("-o link show lo").contains("UP"));
        let addrs = ip("-o addr show dev zone0");
        assert!(addrs.contains("inet 10.9.0.2/24"), "{addrs}");
        let v6 = addrs
            .lines()
            .find(|l| l.contains("inet6 fd00:9::2/64"))
            .unwrap_or_default();
        assert!(v6.contains("nodad") && !v6.contains("tentative"), "{addrs}");
        assert!(ip("route show default").contains("default via 10.9.0.1 dev zone0"));
        for key in ["accept_ra", "autoconf"] {
            let path = format!("/proc/sys/net/ipv6/conf/zone0/{key}");
            assert_eq!(std::fs::read_to_string(&path).unwrap(), "0\n", "{path}");
        }
        assert!(ip("-6 route show default").contains("default via fd00:9::1 dev zone0"));

        // An off-prefix gateway works through the on-link flag.
        let mut off = net.clone();
        off.ipv4 = Some(spore_idm::launch::IpConfig {
            address: "10.8.0.2/32".parse().unwrap(),
            gateway: Some("10.8.0.1".parse().unwrap()),
        });
        off.ipv6 = None;
        configure(&mut nl, &off, Duration::from_secs(1)).unwrap();
        assert!(
            ip("route show default").contains("default via 10.8.0.1 dev zone0 proto static onlink")
        );

        let mut missing = net.clone();
        missing.mac = "02:00:00:00:00:99".parse().unwrap();
        let err = configure(&mut nl, &missing, Duration::from_millis(20))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("no network interface with MAC 02:00:00:00:00:99"),
            "{err}"
        );
        assert!(err.contains("zone0 (02:00:00:00:00:42)"), "{err}");
    }
}
