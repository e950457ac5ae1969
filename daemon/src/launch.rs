//! Builds what a backend needs to start a zone: the kernel command line, the config block
//! (`launch.json` for spore-init) and the [`LaunchSpec`].

use std::path::{Path, PathBuf};

use spore_idm::launch::{self as guest, LaunchConfig};
use spore_runtime::LaunchSpec;
use uuid::Uuid;

use crate::config::Config;
use crate::store::{ImageRecord, ZoneRecord};

/// The config block's file name in the zone directory.
pub const CONFIG_BLOCK: &str = "config.blk";

/// Why a launch could not be prepared (the message says what to do).
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error(
        "guest {what} {path} is missing: install the guest bundle (kernel/build-bundle.sh, then copy it to {dir}) or set guest.{what} in spored.toml"
    )]
    MissingBundle {
        what: &'static str,
        path: PathBuf,
        dir: PathBuf,
    },
    #[error("root image {path} is unusable: {detail}")]
    RootImage { path: PathBuf, detail: String },
    #[error("cannot write the config block {path}")]
    ConfigBlock {
        path: PathBuf,
        #[source]
        source: spore_idm::Error,
    },
    #[error("cannot create the zone directory {path}")]
    ZoneDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Writes the config block into `zone_dir` and returns the spec for the backend.
pub fn prepare(
    config: &Config,
    record: &ZoneRecord,
    image: &ImageRecord,
    zone_dir: &Path,
) -> Result<LaunchSpec, LaunchError> {
    let spec = record.spec();
    let status = record.status();
    let zone_id = record.uuid();
    let kernel = pick(&spec.kernel_path, config.guest_kernel());
    let initrd = pick(&spec.initrd_path, config.guest_initrd());
    for (what, path) in [("kernel", &kernel), ("initrd", &initrd)] {
        if !path.is_file() {
            return Err(LaunchError::MissingBundle {
                what,
                path: path.clone(),
                dir: config.state_dir.join("guest"),
            });
        }
    }
    let root = &image.image.path;
    let size = std::fs::metadata(root)
        .map_err(|e| LaunchError::RootImage {
            path: root.clone(),
            detail: e.to_string(),
        })?
        .len();
    if !spore_oci::attachable_size(size) {
        return Err(LaunchError::RootImage {
            path: root.clone(),
            detail: format!(
                "its size {size} is not a positive multiple of {} bytes, and spored could not pad it when it started (see its log; or remove the image and pull or import it again)",
                spore_oci::SECTOR_BYTES
            ),
        });
    }
    let guest_format = match image.image.format {
        spore_oci::ImageFormat::Squashfs => guest::RootFormat::Squashfs,
        spore_oci::ImageFormat::Erofs => guest::RootFormat::Erofs,
    };
    std::fs::create_dir_all(zone_dir).map_err(|source| LaunchError::ZoneDir {
        path: zone_dir.to_path_buf(),
        source,
    })?;
    let image_config = &image.image.config;
    let launch = LaunchConfig {
        version: guest::LAUNCH_CONFIG_VERSION,
        zone_id: zone_id.to_string(),
        hostname: record.zone().name.clone(),
        root: guest::RootImage {
            format: guest_format,
            size_bytes: size,
        },
        // tmpfs only takes what is written; this caps the writable layer at half the memory.
        overlay_size_mib: (status.memory_mib / 2).max(16),
        image: guest::ImageConfig {
            entrypoint: image_config.entrypoint.clone(),
            cmd: image_config.cmd.clone(),
            env: image_config.env.clone(),
            working_dir: image_config.working_dir.clone(),
            user: image_config.user.clone(),
        },
        overrides: guest::Overrides {
            entrypoint: spec.entrypoint.as_ref().map(|l| l.values.clone()),
            cmd: spec.cmd.as_ref().map(|l| l.values.clone()),
            env: spec.env.clone(),
            working_dir: non_empty(&spec.working_dir),
            user: non_empty(&spec.user),
            tty: spec.tty,
        },
        network: None,
        hosts: Vec::new(),
        rlimits: Vec::new(),
        verbose: false,
    };
    let block = zone_dir.join(CONFIG_BLOCK);
    spore_idm::config_block::write_to(&block, &launch).map_err(|source| {
        LaunchError::ConfigBlock {
            path: block.clone(),
            source,
        }
    })?;
    let mut cmdline = vec!["console=hvc0".to_string(), "quiet".to_string()];
    cmdline.extend(config.guest.kernel_args.iter().cloned());
    cmdline.extend(spec.kernel_args.iter().cloned());
    Ok(LaunchSpec {
        zone_id,
        name: record.zone().name.clone(),
        kernel,
        initrd,
        kernel_cmdline: cmdline.join(" "),
        root_image: root.clone(),
        config_block: block,
        vcpus: status.vcpus,
        memory_mib: status.memory_mib,
        zone_dir: zone_dir.to_path_buf(),
        nic: None,
    })
}

fn pick(requested: &str, default: PathBuf) -> PathBuf {
    if requested.is_empty() {
        default
    } else {
        PathBuf::from(requested)
    }
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

/// `<state_dir>/zones/<id>`.
pub fn zone_dir(config: &Config, id: Uuid) -> PathBuf {
    config.state_dir.join("zones").join(id.to_string())
}

#[cfg(test)]
mod tests {
    /// The host's packer rule and the guest contract's rule must accept the same sizes.
    #[test]
    fn root_image_rule_matches_the_guest_contract() {
        assert_eq!(
            spore_oci::SECTOR_BYTES,
            spore_idm::launch::ROOT_SECTOR_BYTES
        );
        for size in [0, 1, 511, 512, 513, 4095, 4096, 2_221_954, 2_224_128] {
            let guest = size > 0 && size % spore_idm::launch::ROOT_SECTOR_BYTES == 0;
            assert_eq!(spore_oci::attachable_size(size), guest, "{size}");
        }
    }
}
