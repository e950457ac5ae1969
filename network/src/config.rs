//! sporenet's configuration: `/etc/spore/sporenet.toml`, every key optional with a default;
//! command-line flags override the file. docs/network.md lists every key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// spored's API socket.
    pub socket: PathBuf,
    /// spored's state directory, where `zones/<id>/net.sock` live; empty: as spored reports it
    /// (`GetHostStatus.state_dir`).
    pub state_dir: PathBuf,
    /// Where sporenet writes its view of every zone (link, ports, counters) as JSON.
    pub status_file: PathBuf,
    /// The zones' interface MTU (QEMU guests get 65520 through their launch config).
    pub zone_mtu: usize,
    pub policy: PolicyConfig,
    pub tcp: TcpConfig,
    pub udp: UdpConfig,
    pub dns: DnsConfig,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    /// Connections from a zone to its gateway address (any port but 53) go to the host's
    /// loopback (127.0.0.1 / ::1), as pasta and slirp4netns map theirs. Off: the gateway
    /// refuses them. Tests and the bench turn it on; a zone then reaches every service the host
    /// binds to loopback, so leave it off in production.
    pub host_loopback_via_gateway: bool,
    /// Zones may connect to the host's own (non-loopback) addresses.
    pub allow_host_addresses: bool,
    /// Concurrent flows per zone and protocol; a new flow past the limit is refused (TCP: RST,
    /// UDP: ICMP port unreachable) and counted.
    pub max_tcp_flows: usize,
    pub max_udp_flows: usize,
    pub max_icmp_flows: usize,
    /// Host connects in progress per zone.
    pub max_pending_connects: usize,
    /// Bytes of flow buffers per zone (each TCP flow holds two of `tcp.buffer_bytes`).
    pub max_buffer_bytes: usize,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TcpConfig {
    /// Per flow and direction: the window the zone sees and what sporenet holds for a slow
    /// host socket.
    pub buffer_bytes: usize,
    /// A host connect that has not finished by then answers the zone with ICMP unreachable.
    pub connect_timeout_secs: u64,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct UdpConfig {
    pub idle_timeout_secs: u64,
    /// Idle timeout of DNS flows (to the gateway's port 53) and ICMP echo flows.
    pub dns_idle_timeout_secs: u64,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DnsConfig {
    /// Resolvers the gateway forwards to, e.g. `["127.0.0.1:5353"]`; empty: the `nameserver`
    /// lines of `resolv_conf` (re-read when it changes), port 53.
    pub upstreams: Vec<SocketAddr>,
    pub resolv_conf: PathBuf,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            socket: spore_api::DEFAULT_SOCKET.into(),
            state_dir: PathBuf::new(),
            status_file: "/run/sporenet/status.json".into(),
            zone_mtu: 65520,
            policy: PolicyConfig::default(),
            tcp: TcpConfig::default(),
            udp: UdpConfig::default(),
            dns: DnsConfig::default(),
        }
    }
}

impl Default for PolicyConfig {
    fn default() -> PolicyConfig {
        PolicyConfig {
            host_loopback_via_gateway: false,
            allow_host_addresses: false,
            max_tcp_flows: 4096,
            max_udp_flows: 1024,
            max_icmp_flows: 64,
            max_pending_connects: 256,
            max_buffer_bytes: 256 << 20,
        }
    }
}

impl Default for TcpConfig {
    fn default() -> TcpConfig {
        TcpConfig {
            buffer_bytes: 256 << 10,
            connect_timeout_secs: 10,
        }
    }
}

impl Default for UdpConfig {
    fn default() -> UdpConfig {
        UdpConfig {
            idle_timeout_secs: 60,
            dns_idle_timeout_secs: 10,
        }
    }
}

impl Default for DnsConfig {
    fn default() -> DnsConfig {
        DnsConfig {
            upstreams: Vec::new(),
            resolv_conf: "/etc/resolv.conf".into(),
        }
    }
}

/// The configuration file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not valid sporenet configuration")]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("{key}: {detail}")]
    Invalid { key: &'static str, detail: String },
}

impl Config {
    /// Reads `path`; a missing file at the default path means all defaults.
    pub fn load(path: &Path, must_exist: bool) -> Result<Config, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !must_exist => String::new(),
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        let config: Config = toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })?;
        config.check()?;
        Ok(config)
    }

    pub fn check(&self) -> Result<(), ConfigError> {
        if !(1280..=65520).contains(&self.zone_mtu) {
            return Err(ConfigError::Invalid {
                key: "zone_mtu",
                detail: format!("{} is outside 1280..=65520", self.zone_mtu),
            });
        }
        if !(4096..=(64 << 20)).contains(&self.tcp.buffer_bytes) {
            return Err(ConfigError::Invalid {
                key: "tcp.buffer_bytes",
                detail: format!("{} is outside 4096..=67108864", self.tcp.buffer_bytes),
            });
        }
        Ok(())
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.tcp.connect_timeout_secs.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_is_all_defaults_and_keys_are_checked() {
        let c: Config = toml::from_str("").unwrap();
        assert_eq!(c, Config::default());
        assert!(!c.policy.host_loopback_via_gateway);
        let c: Config = toml::from_str(
            "zone_mtu = 1500\n[policy]\nhost_loopback_via_gateway = true\n[dns]\nupstreams = [\"127.0.0.1:5353\"]\n",
        )
        .unwrap();
        assert_eq!(c.zone_mtu, 1500);
        assert!(c.policy.host_loopback_via_gateway);
        assert_eq!(c.dns.upstreams, vec!["127.0.0.1:5353".parse().unwrap()]);
        assert!(toml::from_str::<Config>("nope = 1").is_err());
        let c = Config {
            zone_mtu: 100,
            ..Config::default()
        };
        assert!(matches!(
            c.check(),
            Err(ConfigError::Invalid {
                key: "zone_mtu",
                ..
            })
        ));
    }

    #[test]
    fn a_missing_default_file_is_fine_a_missing_named_one_is_not() {
        let missing = Path::new("/nonexistent/sporenet.toml");
        assert_eq!(Config::load(missing, false).unwrap(), Config::default());
        assert!(matches!(
            Config::load(missing, true),
            Err(ConfigError::Read { .. })
        ));
    }
}
