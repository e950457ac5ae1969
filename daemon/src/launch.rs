//! Builds what a backend needs to start a zone: the guest's launch config (`launch.json`,
//! a pure function of the zone record and its image), the config block that carries it, and
//! the [`LaunchSpec`]. The file work (the root image's size, the block's write and fsync) runs
//! on the blocking pool.

use std::path::{Path, PathBuf};

use spore_idm::IdmError;
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
    #[error("root image {path} is unusable: {detail}")]
    RootImage { path: PathBuf, detail: String },
    #[error("cannot read the root image {path}")]
    RootImageUnreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write the config block {path}")]
    ConfigBlock {
        path: PathBuf,
        #[source]
        source: IdmError,
    },
    #[error("cannot create the zone directory {path}")]
    ZoneDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("preparing the launch files stopped")]
    Interrupted(#[source] tokio::task::JoinError),
}

/// Checks the zone's root image, writes its config block into `zone_dir` (on the blocking
/// pool: the block is fsynced) and returns the spec for the backend. The kernel and initrd are
/// checked once, by the backend ([`LaunchSpec::check_files`]).
pub async fn prepare(
    config: &Config,
    record: &ZoneRecord,
    image: &ImageRecord,
    zone_dir: &Path,
) -> Result<LaunchSpec, LaunchError> {
    let files = {
        let (record, image, dir) = (record.clone(), image.clone(), zone_dir.to_path_buf());
        move || {
            let size = root_size(&image.image.path)?;
            write_config_block(&dir, &launch_config(&record, &image, size))
        }
    };
    let block = tokio::task::spawn_blocking(files)
        .await
        .map_err(LaunchError::Interrupted)??;
    Ok(launch_spec(config, record, image, zone_dir, block))
}

/// The root image's size, which must be attachable as a block device.
fn root_size(root: &Path) -> Result<u64, LaunchError> {
    let size = std::fs::metadata(root)
        .map_err(|source| LaunchError::RootImageUnreadable {
            path: root.to_path_buf(),
            source,
        })?
        .len();
    if !spore_oci::attachable_size(size) {
        return Err(LaunchError::RootImage {
            path: root.to_path_buf(),
            detail: format!(
                "its size {size} is not a positive multiple of {} bytes, and spored could not pad it when it started (see its log; or remove the image and pull or import it again)",
                spore_oci::SECTOR_BYTES
            ),
        });
    }
    Ok(size)
}

/// Writes `launch` as the config block in `zone_dir`; returns the block's path.
fn write_config_block(zone_dir: &Path, launch: &LaunchConfig) -> Result<PathBuf, LaunchError> {
    std::fs::create_dir_all(zone_dir).map_err(|source| LaunchError::ZoneDir {
        path: zone_dir.to_path_buf(),
        source,
    })?;
    let block = zone_dir.join(CONFIG_BLOCK);
    spore_idm::config_block::write_to(&block, launch).map_err(|source| {
        LaunchError::ConfigBlock {
            path: block.clone(),
            source,
        }
    })?;
    Ok(block)
}

/// What spore-init is told: the image's config, the spec's overrides, the zone's name as its
/// host name, the root image's format and size.
pub fn launch_config(record: &ZoneRecord, image: &ImageRecord, root_size: u64) -> LaunchConfig {
    let spec = record.spec();
    let image_config = &image.image.config;
    LaunchConfig {
        version: guest::LAUNCH_CONFIG_VERSION,
        zone_id: record.uuid().to_string(),
        hostname: record.zone().name.clone(),
        root: guest::RootImage {
            format: match image.image.format {
                spore_oci::ImageFormat::Squashfs => guest::RootFormat::Squashfs,
                spore_oci::ImageFormat::Erofs => guest::RootFormat::Erofs,
            },
            size_bytes: root_size,
        },
        // tmpfs only takes what is written; this caps the writable layer at half the memory.
        overlay_size_mib: (record.status().memory_mib / 2).max(16),
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
            env: spec.env,
            working_dir: non_empty(&spec.working_dir),
            user: non_empty(&spec.user),
            tty: spec.tty,
        },
        network: None,
        hosts: Vec::new(),
        rlimits: Vec::new(),
        verbose: false,
    }
}

/// The backend's spec: the bundle's (or the spec's) kernel and initrd, the kernel command
/// line, the disks, the resources the zone was created with.
pub fn launch_spec(
    config: &Config,
    record: &ZoneRecord,
    image: &ImageRecord,
    zone_dir: &Path,
    config_block: PathBuf,
) -> LaunchSpec {
    let spec = record.spec();
    let status = record.status();
    let mut cmdline = vec!["console=hvc0".to_string(), "quiet".to_string()];
    cmdline.extend(config.guest.kernel_args.iter().cloned());
    cmdline.extend(spec.kernel_args.iter().cloned());
    LaunchSpec {
        zone_id: record.uuid(),
        name: record.zone().name.clone(),
        kernel: pick(&spec.kernel_path, config.guest_kernel()),
        initrd: pick(&spec.initrd_path, config.guest_initrd()),
        kernel_cmdline: cmdline.join(" "),
        root_image: image.image.path.clone(),
        config_block,
        vcpus: status.vcpus,
        memory_mib: status.memory_mib,
        zone_dir: zone_dir.to_path_buf(),
        nic: None,
    }
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
    use super::*;
    use spore_api::v1;

    fn record() -> ZoneRecord {
        ZoneRecord::new(v1::Zone {
            id: "0f0e0d0c-0b0a-4908-8706-050403020100".into(),
            name: "web-1".into(),
            spec: Some(v1::ZoneSpec {
                image: "demo".into(),
                cmd: Some(v1::StringList {
                    values: vec!["httpd".into(), "-f".into()],
                }),
                env: vec!["A=1".into()],
                working_dir: "/srv".into(),
                tty: true,
                kernel_path: "/k/vmlinuz".into(),
                kernel_args: vec!["loglevel=7".into()],
                ..Default::default()
            }),
            status: Some(v1::ZoneStatus {
                vcpus: 2,
                memory_mib: 512,
                ..Default::default()
            }),
        })
    }

    fn image() -> ImageRecord {
        let digest = |c: char| {
            spore_oci::Digest::parse(&format!("sha256:{}", c.to_string().repeat(64))).unwrap()
        };
        ImageRecord {
            image: spore_oci::PackedImage {
                references: vec!["docker.io/library/demo:latest".into()],
                manifest_digest: digest('a'),
                index_digest: None,
                config_digest: digest('c'),
                platform: spore_oci::Platform::default(),
                format: spore_oci::ImageFormat::Erofs,
                path: "/images/a.erofs".into(),
                size_bytes: 8192,
                layers: Vec::new(),
                config: spore_oci::ImageConfig {
                    entrypoint: vec!["/bin/sh".into(), "-c".into()],
                    cmd: vec!["echo hi".into()],
                    env: vec!["PATH=/bin".into()],
                    user: "www".into(),
                    ..Default::default()
                },
            },
            created_at_ms: 0,
            last_used_ms: 0,
        }
    }

    #[test]
    fn the_launch_config_joins_the_image_and_the_spec() {
        let launch = launch_config(&record(), &image(), 8192);
        assert_eq!(launch.zone_id, "0f0e0d0c-0b0a-4908-8706-050403020100");
        assert_eq!(launch.hostname, "web-1");
        assert_eq!(launch.root.format, guest::RootFormat::Erofs);
        assert_eq!(launch.root.size_bytes, 8192);
        assert_eq!(launch.overlay_size_mib, 256);
        // The image's config as it is; the spec's overrides beside it (the guest merges them
        // with docker's rules, against the image's /etc/passwd).
        assert_eq!(launch.image.entrypoint, ["/bin/sh", "-c"]);
        assert_eq!(launch.image.user, "www");
        assert_eq!(launch.overrides.entrypoint, None);
        assert_eq!(
            launch.overrides.cmd.as_deref(),
            Some(&["httpd".to_string(), "-f".into()][..])
        );
        assert_eq!(launch.overrides.env, ["A=1"]);
        assert_eq!(launch.overrides.working_dir.as_deref(), Some("/srv"));
        assert_eq!(launch.overrides.user, None);
        assert!(launch.overrides.tty);
        // What the host builds, the guest accepts.
        launch.validate().unwrap();
        // A small zone still gets a usable overlay.
        let mut small = record();
        small.status_mut().memory_mib = 20;
        assert_eq!(launch_config(&small, &image(), 8192).overlay_size_mib, 16);
    }

    #[test]
    fn the_launch_spec_takes_the_specs_kernel_and_the_bundles_initrd() {
        let config = Config {
            state_dir: "/var/lib/spore".into(),
            guest: crate::config::GuestConfig {
                kernel_args: vec!["mitigations=off".into()],
                ..Default::default()
            },
            ..Config::default()
        };
        let spec = launch_spec(
            &config,
            &record(),
            &image(),
            Path::new("/var/lib/spore/zones/z"),
            "/var/lib/spore/zones/z/config.blk".into(),
        );
        assert_eq!(spec.kernel, Path::new("/k/vmlinuz"));
        assert_eq!(spec.initrd, Path::new("/var/lib/spore/guest/initrd"));
        assert_eq!(
            spec.kernel_cmdline,
            "console=hvc0 quiet mitigations=off loglevel=7"
        );
        assert_eq!(spec.root_image, Path::new("/images/a.erofs"));
        assert_eq!((spec.vcpus, spec.memory_mib), (2, 512));
        assert_eq!(spec.nic, None);
    }

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
