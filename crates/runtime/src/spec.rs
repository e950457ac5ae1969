//! What a backend needs to start a zone's VM.

use std::path::PathBuf;

use uuid::Uuid;

/// The zone's network interface, as reserved by spored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicSpec {
    /// MAC address, `aa:bb:cc:dd:ee:ff`.
    pub mac: String,
}

/// Everything a backend needs to create a zone's VM. Paths are absolute and already exist;
/// the backend owns nothing in here except what it creates under `zone_dir`.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    pub zone_id: Uuid,
    /// The zone's short name (for VM names and logs).
    pub name: String,
    /// Guest kernel (bzImage or ELF) and initrd (with spore-init as `/init`).
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// Kernel command line, already assembled (`console=hvc0 ...`).
    pub kernel_cmdline: String,
    /// The packed root image (read-only disk).
    pub root_image: PathBuf,
    /// The config block (read-only disk carrying launch.json).
    pub config_block: PathBuf,
    pub vcpus: u32,
    pub memory_mib: u64,
    /// The zone's private directory: the backend puts its sockets, pidfiles and logs here.
    pub zone_dir: PathBuf,
    /// `None`: the zone runs without a network interface.
    pub nic: Option<NicSpec>,
}

impl LaunchSpec {
    /// Checks that the files the VM boots from exist, naming the first one that does not.
    pub fn check_files(&self) -> crate::Result<()> {
        for (what, path) in [
            ("kernel", &self.kernel),
            ("initrd", &self.initrd),
            ("root image", &self.root_image),
            ("config block", &self.config_block),
        ] {
            std::fs::metadata(path).map_err(|source| crate::RuntimeError::File {
                what,
                path: path.clone(),
                source,
            })?;
        }
        Ok(())
    }

    /// A name for the VM that is unique per host and says what it is.
    pub fn vm_name(&self) -> String {
        format!("spore-{}", self.zone_id)
    }
}
