//! The resolvers the gateway's DNS forwarder sends to: configured ones, else the host's
//! `/etc/resolv.conf` nameservers, re-read when the file changes. A loopback resolver (such as
//! systemd-resolved's 127.0.0.53) works: sporenet's sockets are the host's.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use crate::config::DnsConfig;
use crate::policy::DNS_PORT;

/// How often the file's modification time is looked at, at most.
const RECHECK: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub struct Upstreams {
    fixed: Vec<SocketAddr>,
    resolv_conf: PathBuf,
    from_file: Vec<SocketAddr>,
    seen: Option<(SystemTime, u64)>,
    checked: Option<Instant>,
    /// Index of the resolver in use; moves on when one fails.
    current: usize,
}

impl Upstreams {
    pub fn new(cfg: &DnsConfig) -> Upstreams {
        Upstreams {
            fixed: cfg.upstreams.clone(),
            resolv_conf: cfg.resolv_conf.clone(),
            from_file: Vec::new(),
            seen: None,
            checked: None,
            current: 0,
        }
    }

    /// The resolver to use now.
    pub fn pick(&mut self) -> Option<SocketAddr> {
        self.refresh();
        let list = if self.fixed.is_empty() {
            &self.from_file
        } else {
            &self.fixed
        };
        if list.is_empty() {
            return None;
        }
        Some(list[self.current % list.len()])
    }

    /// `addr` did not answer: the next flow tries the next resolver.
    pub fn failed(&mut self, addr: SocketAddr) {
        if self.pick() == Some(addr) {
            self.current = self.current.wrapping_add(1);
        }
    }

    /// Re-reads the file when it changed (looked at once a second at most).
    fn refresh(&mut self) {
        if !self.fixed.is_empty() {
            return;
        }
        let now = Instant::now();
        if self
            .checked
            .is_none_or(|t| now.duration_since(t) >= RECHECK)
        {
            self.checked = Some(now);
            let stamp = std::fs::metadata(&self.resolv_conf)
                .ok()
                .map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()));
            if stamp != self.seen {
                self.seen = stamp;
                let text = std::fs::read_to_string(&self.resolv_conf).unwrap_or_default();
                self.from_file = parse_resolv_conf(&text);
                self.current = 0;
                tracing::info!(
                    "DNS upstreams from {}: {:?}",
                    self.resolv_conf.display(),
                    self.from_file
                );
            }
        }
    }
}

/// The `nameserver` addresses of a resolv.conf, port 53 (a `%scope` suffix is dropped).
pub fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next()? == "nameserver").then_some(())?;
            let addr = words.next()?;
            let addr = addr.split('%').next()?;
            addr.parse::<IpAddr>()
                .ok()
                .map(|a| SocketAddr::new(a, DNS_PORT))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_nameservers() {
        let text = "# comment\nsearch example\nnameserver 127.0.0.53\nnameserver fe80::1%eth0\nnameserver bogus\noptions edns0\n";
        assert_eq!(
            parse_resolv_conf(text),
            vec![
                "127.0.0.53:53".parse().unwrap(),
                "[fe80::1]:53".parse().unwrap()
            ]
        );
    }

    #[test]
    fn file_changes_are_picked_up_and_failures_rotate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("resolv.conf");
        std::fs::write(&path, "nameserver 127.0.0.1\nnameserver 127.0.0.2\n").unwrap();
        let mut u = Upstreams::new(&DnsConfig {
            upstreams: Vec::new(),
            resolv_conf: path.clone(),
        });
        let first: SocketAddr = "127.0.0.1:53".parse().unwrap();
        assert_eq!(u.pick(), Some(first));
        u.failed(first);
        assert_eq!(u.pick(), Some("127.0.0.2:53".parse().unwrap()));
        // A longer file is a change even within the same second.
        std::fs::write(&path, "nameserver 127.0.0.53\nnameserver 127.0.0.54\n").unwrap();
        u.checked = None;
        assert_eq!(u.pick(), Some("127.0.0.53:53".parse().unwrap()));
        std::fs::write(&path, "").unwrap();
        u.checked = None;
        assert_eq!(u.pick(), None);
    }
}
