//! `launch.json`: everything zone-specific the guest needs, written by the host into the
//! config block and read by spore-init. The kernel command line carries nothing zone-specific.
//!
//! The JSON is versioned ([`LAUNCH_CONFIG_VERSION`]); a guest refuses any other version rather
//! than guess. Fields added later must have defaults so the version can stay put.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{IdmError, Result};

/// The version this build writes and reads.
pub const LAUNCH_CONFIG_VERSION: u32 = 1;

/// A root disk's size is a positive multiple of this: block devices have whole sectors. The
/// same rule as the host's `spore_oci::attachable_size` (this crate cannot depend on spore-oci;
/// spored's tests check that the two agree).
pub const ROOT_SECTOR_BYTES: u64 = 512;

/// The launch configuration of one zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaunchConfig {
    pub version: u32,
    pub zone_id: String,
    pub hostname: String,
    pub root: RootImage,
    /// Size of the tmpfs holding the writable layer over the read-only image.
    pub overlay_size_mib: u64,
    /// The image's OCI config (the subset the guest applies).
    pub image: ImageConfig,
    /// What the user asked for at launch, applied over the image config with docker's rules.
    #[serde(default)]
    pub overrides: Overrides,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkConfig>,
    /// Extra `/etc/hosts` entries (docker's `--add-host`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<HostEntry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rlimits: Vec<Rlimit>,
    /// spore-init narrates its boot steps on the console.
    #[serde(default)]
    pub verbose: bool,
}

/// The root image disk. The guest finds it by superblock magic and exact size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootImage {
    pub format: RootFormat,
    /// The disk's size as the guest sees it: the image file size, a positive multiple of
    /// [`ROOT_SECTOR_BYTES`].
    pub size_bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RootFormat {
    Squashfs,
    Erofs,
}

impl RootFormat {
    /// The filesystem type name for mount(2).
    pub fn fs_type(self) -> &'static str {
        match self {
            RootFormat::Squashfs => "squashfs",
            RootFormat::Erofs => "erofs",
        }
    }
}

/// The image config fields the guest applies, as in the OCI image config (`config.Entrypoint`
/// etc.). Empty means unset, as docker treats them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `KEY=VALUE` entries.
    pub env: Vec<String>,
    pub working_dir: String,
    pub user: String,
}

/// Launch-time overrides (`sporectl zone launch --entrypoint/-e/-w/-u/-t IMAGE CMD...`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Overrides {
    /// `Some` replaces the image entrypoint and drops the image cmd; `Some(vec![])` clears it
    /// (docker's `--entrypoint ""`).
    pub entrypoint: Option<Vec<String>>,
    /// `Some` non-empty replaces the image cmd.
    pub cmd: Option<Vec<String>>,
    /// `KEY=VALUE` entries, replacing image entries with the same key.
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    /// The workload gets hvc0 as its controlling terminal.
    pub tty: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkConfig {
    /// Identifies the interface (never probe order).
    pub mac: MacAddr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4: Option<IpConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<IpConfig>,
    #[serde(default)]
    pub nameservers: Vec<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
}

/// An address with its prefix, and the default gateway of that family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    pub address: Cidr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostEntry {
    pub ip: IpAddr,
    pub names: Vec<String>,
}

/// A resource limit, applied to the workload (and exec'd processes) before exec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rlimit {
    pub resource: RlimitResource,
    /// `u64::MAX` = unlimited.
    pub soft: u64,
    pub hard: u64,
}

/// The names docker's `--ulimit` uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RlimitResource {
    As,
    Core,
    Cpu,
    Data,
    Fsize,
    Locks,
    Memlock,
    Msgqueue,
    Nice,
    Nofile,
    Nproc,
    Rss,
    Rtprio,
    Rttime,
    Sigpending,
    Stack,
}

/// An IP address with a prefix length, written `10.0.0.2/24` or `fd00::2/64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not ADDRESS/PREFIX"))?;
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{addr:?} in {s:?} is not an IP address"))?;
        let prefix: u8 = prefix
            .parse()
            .map_err(|_| format!("prefix {prefix:?} in {s:?} is not a number"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(format!("prefix {prefix} in {s:?} is over {max}"));
        }
        Ok(Cidr { addr, prefix })
    }
}

impl Serialize for Cidr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An Ethernet address, written `02:00:00:aa:bb:cc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl FromStr for MacAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut out {
            let part = parts
                .next()
                .filter(|p| p.len() == 2)
                .ok_or_else(|| format!("{s:?} is not a MAC address like 02:00:00:aa:bb:cc"))?;
            *byte = u8::from_str_radix(part, 16)
                .map_err(|_| format!("{s:?} is not a MAC address like 02:00:00:aa:bb:cc"))?;
        }
        if parts.next().is_some() {
            return Err(format!("{s:?} is not a MAC address like 02:00:00:aa:bb:cc"));
        }
        Ok(MacAddr(out))
    }
}

impl Serialize for MacAddr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

fn invalid(msg: impl Into<String>) -> IdmError {
    IdmError::LaunchInvalid(msg.into())
}

/// The guest's host-name rule (RFC 1123): dot-separated labels of 1-63 letters, digits and
/// '-', neither starting nor ending with '-', at most `max` bytes in all. spored's zone names
/// follow it too, since a zone's name becomes its host name.
pub fn is_host_name(name: &str, max: usize) -> bool {
    !name.is_empty()
        && name.len() <= max
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// A hostname or /etc/hosts name: RFC 1123 labels, at most 253 bytes (64 for the hostname).
fn check_hostname(what: &str, name: &str, max: usize) -> Result<()> {
    if is_host_name(name, max) {
        Ok(())
    } else {
        Err(invalid(format!(
            "{what} {name:?} is not a valid host name (letters, digits, '-' and '.', at most {max} bytes)"
        )))
    }
}

/// Strings that end up in argv/env/paths: exec and open take C strings.
fn check_no_nul<'a>(what: &str, items: impl IntoIterator<Item = &'a String>) -> Result<()> {
    match items.into_iter().find(|s| s.contains('\0')) {
        Some(s) => Err(invalid(format!("{what} entry {s:?} contains a NUL byte"))),
        None => Ok(()),
    }
}

fn check_env(what: &str, env: &[String]) -> Result<()> {
    check_no_nul(what, env)?;
    match env.iter().find(|e| e.is_empty() || e.starts_with('=')) {
        Some(e) => Err(invalid(format!(
            "{what} entry {e:?} has no variable name (expected KEY=VALUE)"
        ))),
        None => Ok(()),
    }
}

fn check_working_dir(what: &str, dir: &str) -> Result<()> {
    if dir.is_empty() {
        return Ok(());
    }
    check_no_nul(what, [&dir.to_string()])?;
    if !dir.starts_with('/') {
        return Err(invalid(format!(
            "{what} {dir:?} is not an absolute path (it must start with '/')"
        )));
    }
    Ok(())
}

fn check_ip(family: &str, cfg: &IpConfig, want_v4: bool) -> Result<()> {
    if cfg.address.addr.is_ipv4() != want_v4 {
        return Err(invalid(format!(
            "network.{family}.address {} is not an {family} address",
            cfg.address
        )));
    }
    if let Some(gw) = cfg.gateway
        && gw.is_ipv4() != want_v4
    {
        return Err(invalid(format!(
            "network.{family}.gateway {gw} is not an {family} address"
        )));
    }
    Ok(())
}

impl LaunchConfig {
    /// Parses and validates `launch.json` bytes.
    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        // Check the version before the schema, so an old guest says "version" rather than
        // pointing at whichever new field it does not know.
        #[derive(Deserialize)]
        struct Versioned {
            version: u32,
        }
        let v: Versioned = serde_json::from_slice(bytes).map_err(IdmError::LaunchJson)?;
        if v.version != LAUNCH_CONFIG_VERSION {
            return Err(IdmError::LaunchVersion {
                found: v.version,
                supported: LAUNCH_CONFIG_VERSION,
            });
        }
        let config: LaunchConfig = serde_json::from_slice(bytes).map_err(IdmError::LaunchJson)?;
        config.validate()?;
        Ok(config)
    }

    /// Validates and serialises to JSON.
    pub fn to_json(&self) -> Result<Vec<u8>> {
        self.validate()?;
        serde_json::to_vec_pretty(self).map_err(IdmError::LaunchJson)
    }

    /// Checks every rule the guest relies on. The host calls it before writing (through
    /// [`LaunchConfig::to_json`]), the guest after reading.
    pub fn validate(&self) -> Result<()> {
        if self.version != LAUNCH_CONFIG_VERSION {
            return Err(IdmError::LaunchVersion {
                found: self.version,
                supported: LAUNCH_CONFIG_VERSION,
            });
        }
        if self.zone_id.is_empty() || self.zone_id.len() > 128 {
            return Err(invalid("zone_id must be 1 to 128 bytes"));
        }
        check_hostname("hostname", &self.hostname, 64)?;
        if self.root.size_bytes == 0 || !self.root.size_bytes.is_multiple_of(ROOT_SECTOR_BYTES) {
            return Err(invalid(format!(
                "root.size_bytes {} must be a positive multiple of {ROOT_SECTOR_BYTES} (pad the image file)",
                self.root.size_bytes
            )));
        }
        if self.overlay_size_mib == 0 || self.overlay_size_mib > 1 << 30 {
            return Err(invalid(format!(
                "overlay_size_mib {} must be between 1 and 2^30",
                self.overlay_size_mib
            )));
        }
        let image = &self.image;
        check_no_nul("image.entrypoint", &image.entrypoint)?;
        check_no_nul("image.cmd", &image.cmd)?;
        check_env("image.env", &image.env)?;
        check_working_dir("image.working_dir", &image.working_dir)?;
        check_no_nul("image.user", [&image.user])?;
        let o = &self.overrides;
        check_no_nul("overrides.entrypoint", o.entrypoint.iter().flatten())?;
        check_no_nul("overrides.cmd", o.cmd.iter().flatten())?;
        check_env("overrides.env", &o.env)?;
        if let Some(dir) = &o.working_dir {
            check_working_dir("overrides.working_dir", dir)?;
        }
        check_no_nul("overrides.user", o.user.iter())?;
        if let Some(net) = &self.network {
            if let Some(v4) = &net.ipv4 {
                check_ip("ipv4", v4, true)?;
            }
            if let Some(v6) = &net.ipv6 {
                check_ip("ipv6", v6, false)?;
            }
            if let Some(mtu) = net.mtu
                && !(68..=65535).contains(&mtu)
            {
                return Err(invalid(format!(
                    "network.mtu {mtu} must be between 68 and 65535"
                )));
            }
            if net.nameservers.len() > 16 {
                return Err(invalid("network.nameservers has more than 16 entries"));
            }
        }
        for entry in &self.hosts {
            if entry.names.is_empty() {
                return Err(invalid(format!(
                    "hosts entry for {} has no names",
                    entry.ip
                )));
            }
            for name in &entry.names {
                check_hostname("hosts name", name, 253)?;
            }
        }
        for limit in &self.rlimits {
            if limit.soft > limit.hard {
                return Err(invalid(format!(
                    "rlimit {:?}: soft limit {} is above the hard limit {}",
                    limit.resource, limit.soft, limit.hard
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample() -> LaunchConfig {
        LaunchConfig {
            version: LAUNCH_CONFIG_VERSION,
            zone_id: "7d3c1f0e-5a2b-4c1d-9e8f-0a1b2c3d4e5f".into(),
            hostname: "web-1".into(),
            root: RootImage {
                format: RootFormat::Squashfs,
                size_bytes: 4096 * 100,
            },
            overlay_size_mib: 64,
            image: ImageConfig {
                entrypoint: vec!["/bin/sh".into(), "-c".into()],
                cmd: vec!["echo hi".into()],
                env: vec!["PATH=/bin".into()],
                working_dir: "/srv".into(),
                user: "nobody".into(),
            },
            overrides: Overrides {
                env: vec!["A=1".into()],
                tty: true,
                ..Default::default()
            },
            network: Some(NetworkConfig {
                mac: "02:00:0a:00:00:02".parse().unwrap(),
                ipv4: Some(IpConfig {
                    address: "10.0.0.2/24".parse().unwrap(),
                    gateway: Some("10.0.0.1".parse().unwrap()),
                }),
                ipv6: Some(IpConfig {
                    address: "fd00::2/64".parse().unwrap(),
                    gateway: Some("fd00::1".parse().unwrap()),
                }),
                nameservers: vec!["10.0.0.1".parse().unwrap()],
                mtu: Some(1500),
            }),
            hosts: vec![HostEntry {
                ip: "10.0.0.9".parse().unwrap(),
                names: vec!["db".into(), "db.local".into()],
            }],
            rlimits: vec![Rlimit {
                resource: RlimitResource::Nofile,
                soft: 1024,
                hard: 4096,
            }],
            verbose: false,
        }
    }

    #[test]
    fn json_round_trip() {
        let cfg = sample();
        let json = cfg.to_json().unwrap();
        let text = String::from_utf8(json.clone()).unwrap();
        assert!(text.contains("\"address\": \"10.0.0.2/24\""), "{text}");
        assert!(text.contains("\"mac\": \"02:00:0a:00:00:02\""), "{text}");
        assert!(text.contains("\"format\": \"squashfs\""), "{text}");
        assert_eq!(LaunchConfig::from_json(&json).unwrap(), cfg);
    }

    #[test]
    fn minimal_json_takes_defaults() {
        let json = br#"{"version":1,"zone_id":"z","hostname":"h",
            "root":{"format":"erofs","size_bytes":1024},"overlay_size_mib":8,"image":{}}"#;
        let cfg = LaunchConfig::from_json(json).unwrap();
        assert_eq!(cfg.root.format, RootFormat::Erofs);
        assert_eq!(cfg.overrides, Overrides::default());
        assert!(cfg.network.is_none());
    }

    #[test]
    fn unknown_version_is_named() {
        let json = br#"{"version":2,"whatever":true}"#;
        match LaunchConfig::from_json(json) {
            Err(IdmError::LaunchVersion {
                found: 2,
                supported: 1,
            }) => {}
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn bad_json() {
        assert!(matches!(
            LaunchConfig::from_json(b"{\"version\":1,"),
            Err(IdmError::LaunchJson(_))
        ));
        assert!(matches!(
            LaunchConfig::from_json(br#"{"version":1,"zone_id":5}"#),
            Err(IdmError::LaunchJson(_))
        ));
    }

    fn invalid_message(cfg: &LaunchConfig) -> String {
        match cfg.validate() {
            Err(IdmError::LaunchInvalid(msg)) => msg,
            other => panic!("expected LaunchInvalid, got {other:?}"),
        }
    }

    #[test]
    fn validation_names_the_field() {
        let mut cfg = sample();
        cfg.hostname = "bad_name".into();
        assert!(invalid_message(&cfg).contains("hostname \"bad_name\""));

        let mut cfg = sample();
        cfg.root.size_bytes = 1000;
        assert!(invalid_message(&cfg).contains("root.size_bytes 1000"));

        let mut cfg = sample();
        cfg.image.working_dir = "srv".into();
        assert!(invalid_message(&cfg).contains("image.working_dir \"srv\""));

        let mut cfg = sample();
        cfg.overrides.env = vec!["=x".into()];
        assert!(invalid_message(&cfg).contains("overrides.env entry \"=x\""));

        let mut cfg = sample();
        cfg.overrides.cmd = Some(vec!["a\0b".into()]);
        assert!(invalid_message(&cfg).contains("NUL"));

        let mut cfg = sample();
        cfg.network.as_mut().unwrap().ipv4.as_mut().unwrap().gateway =
            Some("fd00::1".parse().unwrap());
        assert!(invalid_message(&cfg).contains("network.ipv4.gateway"));

        let mut cfg = sample();
        cfg.rlimits[0].soft = 5000;
        assert!(invalid_message(&cfg).contains("soft limit 5000"));

        let mut cfg = sample();
        cfg.network.as_mut().unwrap().mtu = Some(20);
        assert!(invalid_message(&cfg).contains("network.mtu 20"));
    }

    #[test]
    fn cidr_and_mac_parsing() {
        assert_eq!(
            "fd00::2/64".parse::<Cidr>().unwrap().to_string(),
            "fd00::2/64"
        );
        assert!(
            "10.0.0.1/33"
                .parse::<Cidr>()
                .unwrap_err()
                .contains("over 32")
        );
        assert!(
            "10.0.0.1"
                .parse::<Cidr>()
                .unwrap_err()
                .contains("ADDRESS/PREFIX")
        );
        assert!(
            "10.0.0/8"
                .parse::<Cidr>()
                .unwrap_err()
                .contains("not an IP")
        );
        assert_eq!(
            "02:AB:00:00:00:01".parse::<MacAddr>().unwrap().0,
            [2, 0xab, 0, 0, 0, 1]
        );
        for bad in [
            "02:ab:00:00:00",
            "02:ab:00:00:00:01:02",
            "2:ab:00:00:00:01",
            "zz:ab:00:00:00:01",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
    }
}
