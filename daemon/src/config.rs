//! spored's configuration: `/etc/spore/spored.toml`, every key optional with a default;
//! command-line flags override the file.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the gRPC API listens.
    pub socket: PathBuf,
    /// The daemon's state: database, images, zones, guest bundle.
    pub state_dir: PathBuf,
    /// `auto` (Xen when usable, else QEMU), `xen` or `qemu`.
    pub backend: BackendChoice,
    /// `text` or `json`.
    pub log_format: LogFormat,
    pub zones: ZonesConfig,
    pub guest: GuestConfig,
    pub events: EventsConfig,
    pub images: ImagesConfig,
    pub network: NetworkConfig,
    pub qemu: QemuConfig,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum BackendChoice {
    Auto,
    Xen,
    Qemu,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ZonesConfig {
    /// vCPUs of a zone whose spec does not say.
    pub default_vcpus: u32,
    /// Memory (MiB) of a zone whose spec does not say.
    pub default_memory_mib: u64,
    /// Console log kept per zone on disk, bytes (older output is dropped).
    pub console_log_bytes: u64,
    /// How long a destroyed zone's workload gets to end after SIGTERM, seconds.
    pub stop_timeout_secs: u64,
    /// How long a zone's guest may take from its VM's start to starting the workload, seconds;
    /// after that the zone fails and its VM is destroyed.
    pub start_timeout_secs: u64,
    /// Zones launched at once (image preparation and VM creation).
    pub max_parallel_launches: usize,
    /// Exec sessions one zone may run at once (each holds up to 256 KiB of output in spored).
    pub max_execs_per_zone: usize,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct GuestConfig {
    /// Guest kernel; default `<state_dir>/guest/kernel`.
    pub kernel: Option<PathBuf>,
    /// Guest initrd (spore-init as /init); default `<state_dir>/guest/initrd`.
    pub initrd: Option<PathBuf>,
    /// Extra kernel arguments for every zone.
    pub kernel_args: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct EventsConfig {
    /// Events kept for replay by WatchEvents.
    pub retained: u64,
    /// Events a watcher may fall behind before it is cut off.
    pub client_queue: usize,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ImagesConfig {
    /// `squashfs` or `erofs`.
    pub format: String,
    /// zstd level of squashfs images (1-22).
    pub zstd_level: i32,
    /// Registries (`host:port`) reached over plain HTTP.
    pub insecure_registries: Vec<String>,
    /// Blob downloads at once per pull.
    pub max_parallel_downloads: usize,
    /// Docker config with registry credentials; default `~/.docker/config.json`.
    pub docker_config: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkConfig {
    /// Zone addresses are reserved from these subnets (the first address is the gateway).
    pub ipv4_subnet: String,
    pub ipv6_subnet: String,
    /// DNS servers handed to zones.
    pub nameservers: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct QemuConfig {
    /// The emulator binary.
    pub binary: String,
    /// `auto` (KVM when a probe VM runs, else TCG), `kvm` or `tcg`.
    pub accel: String,
    /// TCG's translation cache per zone in MiB; 0 keeps QEMU's default (1 GiB, which shows
    /// in each QEMU's resident memory).
    pub tcg_tb_size_mib: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            socket: spore_api::DEFAULT_SOCKET.into(),
            state_dir: "/var/lib/spore".into(),
            backend: BackendChoice::Auto,
            log_format: LogFormat::Text,
            zones: ZonesConfig::default(),
            guest: GuestConfig::default(),
            events: EventsConfig::default(),
            images: ImagesConfig::default(),
            network: NetworkConfig::default(),
            qemu: QemuConfig::default(),
        }
    }
}

impl Default for ZonesConfig {
    fn default() -> Self {
        ZonesConfig {
            default_vcpus: 1,
            default_memory_mib: 256,
            console_log_bytes: 1024 * 1024,
            stop_timeout_secs: 10,
            // A boot takes 2-5 s under TCG on an idle 2-core machine, a minute or more when it
            // is loaded (and inside the Xen lab, TCG within TCG): generous, yet never "forever".
            start_timeout_secs: 300,
            max_parallel_launches: 8,
            max_execs_per_zone: 16,
        }
    }
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig {
            retained: 10_000,
            client_queue: 1024,
        }
    }
}

impl Default for ImagesConfig {
    fn default() -> Self {
        ImagesConfig {
            format: "squashfs".into(),
            zstd_level: 3,
            insecure_registries: Vec::new(),
            max_parallel_downloads: 3,
            docker_config: None,
        }
    }
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            ipv4_subnet: "10.75.0.0/16".into(),
            ipv6_subnet: "fdd4:1476:6c7e::/48".into(),
            nameservers: vec!["1.1.1.1".into(), "2606:4700:4700::1111".into()],
        }
    }
}

impl Default for QemuConfig {
    fn default() -> Self {
        QemuConfig {
            binary: "qemu-system-x86_64".into(),
            accel: "auto".into(),
            tcg_tb_size_mib: 64,
        }
    }
}

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path} is invalid")]
    Parse {
        path: PathBuf,
        #[source]
        source: Box<toml::de::Error>,
    },
    #[error("config key {key}: {detail}")]
    Invalid { key: &'static str, detail: String },
    /// The `[network]` section; the error names its key (`network.ipv4_subnet: ...`).
    #[error(transparent)]
    Network(#[from] crate::network::NetworkError),
}

impl Config {
    /// Reads `path`. A missing file gives the defaults when `required` is false (the default
    /// path), and an error when the operator named the file.
    pub fn load(path: &Path, required: bool) -> Result<Config, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
                return Ok(Config::default());
            }
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        let config: Config = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            source: Box::new(e),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks values the types cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, detail: String| Err(ConfigError::Invalid { key, detail });
        if self.zones.default_vcpus == 0 {
            return invalid("zones.default_vcpus", "must be at least 1".into());
        }
        if self.zones.default_memory_mib == 0 {
            return invalid("zones.default_memory_mib", "must be at least 1".into());
        }
        if self.zones.start_timeout_secs == 0 {
            return invalid("zones.start_timeout_secs", "must be at least 1".into());
        }
        if self.zones.max_parallel_launches == 0 {
            return invalid("zones.max_parallel_launches", "must be at least 1".into());
        }
        if !(1..=1024).contains(&self.zones.max_execs_per_zone) {
            return invalid("zones.max_execs_per_zone", "must be 1 to 1024".into());
        }
        if self.events.retained == 0 || self.events.client_queue == 0 {
            return invalid(
                "events",
                "retained and client_queue must be at least 1".into(),
            );
        }
        if !(1..=22).contains(&self.images.zstd_level) {
            return invalid(
                "images.zstd_level",
                format!("{} is outside 1-22", self.images.zstd_level),
            );
        }
        if self.images_format().is_none() {
            return invalid(
                "images.format",
                format!("{:?} is neither squashfs nor erofs", self.images.format),
            );
        }
        if !matches!(self.qemu.accel.as_str(), "auto" | "kvm" | "tcg") {
            return invalid(
                "qemu.accel",
                format!("{:?} is not auto, kvm or tcg", self.qemu.accel),
            );
        }
        crate::network::AddressPlan::from_config(&self.network)?;
        for ns in &self.network.nameservers {
            if ns.parse::<std::net::IpAddr>().is_err() {
                return invalid(
                    "network.nameservers",
                    format!("{ns:?} is not an IP address"),
                );
            }
        }
        Ok(())
    }

    /// The default image format.
    pub fn images_format(&self) -> Option<spore_oci::ImageFormat> {
        match self.images.format.as_str() {
            "squashfs" => Some(spore_oci::ImageFormat::Squashfs),
            "erofs" => Some(spore_oci::ImageFormat::Erofs),
            _ => None,
        }
    }

    pub fn guest_kernel(&self) -> PathBuf {
        self.guest
            .kernel
            .clone()
            .unwrap_or_else(|| self.state_dir.join("guest/kernel"))
    }

    pub fn guest_initrd(&self) -> PathBuf {
        self.guest
            .initrd
            .clone()
            .unwrap_or_else(|| self.state_dir.join("guest/initrd"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_all_defaults() {
        let config: Config = toml::from_str("").unwrap();
        assert_eq!(config, Config::default());
        config.validate().unwrap();
    }

    #[test]
    fn missing_default_file_is_fine_but_missing_named_file_is_not() {
        let path = Path::new("/nonexistent/spored.toml");
        assert_eq!(Config::load(path, false).unwrap(), Config::default());
        let err = Config::load(path, true).unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/spored.toml"),
            "{err}"
        );
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let err = toml::from_str::<Config>("sockett = \"/x\"").unwrap_err();
        assert!(err.to_string().contains("sockett"), "{err}");
        let mut config = Config::default();
        config.images.zstd_level = 40;
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("images.zstd_level"), "{err}");
        let mut config = Config::default();
        config.network.ipv4_subnet = "10.0.0.0/40".into();
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("network.ipv4_subnet"), "{err}");
    }

    #[test]
    fn guest_paths_default_under_state_dir() {
        let config = Config {
            state_dir: "/srv/spore".into(),
            ..Config::default()
        };
        assert_eq!(config.guest_kernel(), Path::new("/srv/spore/guest/kernel"));
        assert_eq!(config.guest_initrd(), Path::new("/srv/spore/guest/initrd"));
    }
}
