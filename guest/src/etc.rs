//! Hostname, /etc/hostname, /etc/hosts and /etc/resolv.conf, as docker writes them.

use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::net::IpAddr;

use anyhow::{Context, Result};
use spore_idm::LaunchConfig;

use crate::sys;

/// docker's /etc/hosts, plus the zone's own name and the extra entries.
pub fn render_hosts(cfg: &LaunchConfig) -> String {
    let mut out = String::from(
        "127.0.0.1\tlocalhost\n\
         ::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\n\
         ff00::0\tip6-mcastprefix\n\
         ff02::1\tip6-allnodes\n\
         ff02::2\tip6-allrouters\n",
    );
    let net = cfg.network.as_ref();
    let own: Vec<IpAddr> = [net.and_then(|n| n.ipv4), net.and_then(|n| n.ipv6)]
        .into_iter()
        .flatten()
        .map(|c| c.address.addr)
        .collect();
    if own.is_empty() {
        let _ = writeln!(out, "127.0.1.1\t{}", cfg.hostname);
    }
    for ip in own {
        let _ = writeln!(out, "{ip}\t{}", cfg.hostname);
    }
    for entry in &cfg.hosts {
        let _ = writeln!(out, "{}\t{}", entry.ip, entry.names.join(" "));
    }
    out
}

/// resolv.conf for the configured nameservers; `None` leaves the image's file alone.
pub fn render_resolv_conf(cfg: &LaunchConfig) -> Option<String> {
    let net = cfg.network.as_ref()?;
    if net.nameservers.is_empty() {
        return None;
    }
    let mut out = String::new();
    for ns in &net.nameservers {
        let _ = writeln!(out, "nameserver {ns}");
    }
    Some(out)
}

/// Replaces `path` with `contents`. A symlink in the image is replaced rather than followed,
/// so the file cannot be redirected elsewhere.
fn replace_file(path: &str, contents: &str) -> Result<()> {
    let _ = fs::remove_file(path);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("cannot create {path}"))?;
    f.write_all(contents.as_bytes())
        .with_context(|| format!("cannot write {path}"))
}

pub fn apply(cfg: &LaunchConfig) -> Result<()> {
    sys::sethostname(&cfg.hostname).context("cannot set the hostname")?;
    fs::create_dir_all("/etc").context("cannot create /etc")?;
    replace_file("/etc/hostname", &format!("{}\n", cfg.hostname))?;
    replace_file("/etc/hosts", &render_hosts(cfg))?;
    if let Some(resolv) = render_resolv_conf(cfg) {
        replace_file("/etc/resolv.conf", &resolv)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use spore_idm::launch::*;

    fn cfg(network: Option<NetworkConfig>) -> LaunchConfig {
        LaunchConfig {
            version: LAUNCH_CONFIG_VERSION,
            zone_id: "z".into(),
            hostname: "web".into(),
            root: RootImage {
                format: RootFormat::Squashfs,
                size_bytes: 4096,
            },
            overlay_size_mib: 8,
            image: ImageConfig::default(),
            overrides: Overrides::default(),
            network,
            hosts: vec![HostEntry {
                ip: "10.1.1.1".parse().unwrap(),
                names: vec!["db".into(), "db.lan".into()],
            }],
            rlimits: vec![],
            verbose: false,
        }
    }

    #[test]
    fn hosts_without_network() {
        let hosts = render_hosts(&cfg(None));
        assert!(
            hosts.starts_with("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
        );
        assert!(
            hosts.ends_with("127.0.1.1\tweb\n10.1.1.1\tdb db.lan\n"),
            "{hosts}"
        );
        assert_eq!(render_resolv_conf(&cfg(None)), None);
    }

    #[test]
    fn hosts_and_resolv_with_network() {
        let net = NetworkConfig {
            mac: "02:00:00:00:00:01".parse().unwrap(),
            ipv4: Some(IpConfig {
                address: "10.0.0.5/24".parse().unwrap(),
                gateway: None,
            }),
            ipv6: Some(IpConfig {
                address: "fd00::5/64".parse().unwrap(),
                gateway: None,
            }),
            nameservers: vec!["10.0.0.1".parse().unwrap(), "fd00::1".parse().unwrap()],
            mtu: None,
        };
        let c = cfg(Some(net));
        let hosts = render_hosts(&c);
        assert!(
            hosts.ends_with("10.0.0.5\tweb\nfd00::5\tweb\n10.1.1.1\tdb db.lan\n"),
            "{hosts}"
        );
        assert!(!hosts.contains("127.0.1.1"));
        assert_eq!(
            render_resolv_conf(&c).unwrap(),
            "nameserver 10.0.0.1\nnameserver fd00::1\n"
        );
    }
}
