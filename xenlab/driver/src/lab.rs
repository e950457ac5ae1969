//! The lab's inputs (the guest bundle, a busybox root image, a work directory) and the zones
//! made from them.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use spore_idm::launch::{
    ImageConfig, LAUNCH_CONFIG_VERSION, LaunchConfig, Overrides, RootFormat, RootImage,
};
use spore_runtime::LaunchSpec;
use spore_runtime::xen::XenConfig;
use uuid::Uuid;

/// How long a guest may take to boot (or do anything) under TCG.
pub const BOOT: Duration = Duration::from_secs(240);
/// The guest kernel's line when it starts the initrd's /init (its boot is done).
pub const RUN_INIT: &str = "Run /init as init process";
/// The timed runs boot without `quiet`: the first console byte is the kernel's first line,
/// under spore and under xl alike.
pub const TIMED_CMDLINE: &str = "console=hvc0";
/// A workload that runs until destroyed, printing once a second.
pub const TICKER: &str = "echo up; while true; do echo tick; sleep 1; done";

pub struct Lab {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    root: PathBuf,
    root_size: u64,
    zones: PathBuf,
    kernels: PathBuf,
}

impl Lab {
    /// From `KERNEL INITRD ROOT_SQUASHFS WORK_DIR`.
    pub fn new(a: &[String]) -> Lab {
        let work = PathBuf::from(&a[3]);
        let root = PathBuf::from(&a[2]);
        let root_size = std::fs::metadata(&root).map(|m| m.len()).unwrap_or(0);
        Lab {
            kernel: a[0].clone().into(),
            initrd: a[1].clone().into(),
            root,
            root_size,
            zones: work.join("zones"),
            kernels: work.join("kernels"),
        }
    }

    pub fn config(&self) -> XenConfig {
        XenConfig {
            guest_kernel: Some(self.kernel.clone()),
            guest_initrd: Some(self.initrd.clone()),
            kernel_cache: self.kernels.clone(),
            idm_timeout: BOOT,
            ..XenConfig::new(&self.zones)
        }
    }

    /// A zone running `sh -c script`, its config block written into its zone directory.
    pub fn spec(&self, name: &str, script: &str) -> Result<LaunchSpec> {
        let zone_id = Uuid::new_v4();
        let zone_dir = self.zones.join(zone_id.to_string());
        std::fs::create_dir_all(&zone_dir)?;
        let launch = LaunchConfig {
            version: LAUNCH_CONFIG_VERSION,
            zone_id: zone_id.to_string(),
            hostname: name.into(),
            root: RootImage {
                format: RootFormat::Squashfs,
                size_bytes: self.root_size,
            },
            overlay_size_mib: 16,
            image: ImageConfig {
                cmd: vec!["/bin/sh".into(), "-c".into(), script.into()],
                env: vec!["PATH=/bin".into()],
                ..Default::default()
            },
            overrides: Overrides::default(),
            network: None,
            hosts: vec![],
            rlimits: vec![],
            verbose: false,
        };
        let config_block = zone_dir.join("config.blk");
        spore_idm::config_block::write_to(&config_block, &launch)?;
        Ok(LaunchSpec {
            zone_id,
            name: name.into(),
            kernel: self.kernel.clone(),
            initrd: self.initrd.clone(),
            kernel_cmdline: "console=hvc0 quiet".into(),
            root_image: self.root.clone(),
            config_block,
            vcpus: 1,
            memory_mib: 128,
            zone_dir,
            nic: None,
        })
    }
}

/// A MAC address per timed run.
pub fn mac(run: u32) -> String {
    format!("00:16:3e:5b:{:02x}:{:02x}", (run >> 8) & 0xff, run & 0xff)
}
