//! Finds the config disk and the root image disk by what they contain, never by probe order:
//! the config disk starts with `SPORECFG`; the root disk has a squashfs (`hsqs` at 0) or erofs
//! (0xE0F5E1E2 at 1024) superblock and exactly the size the launch config names. The same
//! logic finds xvda/xvdb under Xen and vda/vdb under virtio. Xen's block frontend attaches
//! disks asynchronously, so the scan repeats until both are there or the timeout passes.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use spore_idm::LaunchConfig;
use spore_idm::config_block;
use spore_idm::launch::RootFormat;

use crate::console::info;

const PROBE_LEN: usize = 4096;
const EROFS_MAGIC: u32 = 0xE0F5_E1E2;
const EROFS_MAGIC_OFFSET: usize = 1024;

/// What a block device holds, judged from its first 4 KiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Content {
    ConfigBlock,
    Image(RootFormat),
    Other,
}

pub fn classify(head: &[u8]) -> Content {
    if config_block::has_magic(head) {
        return Content::ConfigBlock;
    }
    if head.starts_with(b"hsqs") {
        return Content::Image(RootFormat::Squashfs);
    }
    let erofs = head
        .get(EROFS_MAGIC_OFFSET..EROFS_MAGIC_OFFSET + 4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_le_bytes);
    if erofs == Some(EROFS_MAGIC) {
        return Content::Image(RootFormat::Erofs);
    }
    Content::Other
}

#[derive(Debug, Clone)]
struct Device {
    name: String,
    size: u64,
    content: Content,
}

fn describe(devices: &[Device]) -> String {
    if devices.is_empty() {
        return "no block devices".into();
    }
    devices
        .iter()
        .map(|d| {
            let what = match d.content {
                Content::ConfigBlock => "config block".to_string(),
                Content::Image(f) => f.fs_type().to_string(),
                Content::Other => "unknown content".to_string(),
            };
            format!("{} ({what}, {} bytes)", d.name, d.size)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn scan() -> Vec<Device> {
    let mut names: Vec<String> = match std::fs::read_dir("/sys/block") {
        Ok(dir) => dir
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect(),
        Err(_) => return Vec::new(),
    };
    names.sort();
    let mut devices = Vec::new();
    for name in names {
        let sectors: u64 = std::fs::read_to_string(format!("/sys/block/{name}/size"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        if sectors == 0 {
            continue;
        }
        let Ok(file) = File::open(format!("/dev/{name}")) else {
            continue;
        };
        let mut head = vec![0u8; PROBE_LEN];
        let n = file.read_at(&mut head, 0).unwrap_or(0);
        head.truncate(n);
        devices.push(Device {
            name,
            size: sectors.saturating_mul(512),
            content: classify(&head),
        });
    }
    devices
}

fn read_config(device: &Device) -> Result<LaunchConfig> {
    let path = format!("/dev/{}", device.name);
    let file = File::open(&path).with_context(|| format!("cannot open config disk {path}"))?;
    let mut header = [0u8; config_block::HEADER_LEN];
    file.read_exact_at(&mut header, 0)
        .with_context(|| format!("cannot read config disk {path}"))?;
    let parsed = config_block::parse_header(&header, device.size)
        .with_context(|| format!("config disk {path}"))?;
    let mut block = vec![0u8; parsed.total_len()];
    file.read_exact_at(&mut block, 0)
        .with_context(|| format!("cannot read config disk {path}"))?;
    config_block::decode(&block).with_context(|| format!("config disk {path}"))
}

/// The launch config and the root image's device path.
pub fn find(timeout: Duration) -> Result<(LaunchConfig, String)> {
    let deadline = Instant::now() + timeout;
    let mut config: Option<(String, LaunchConfig)> = None;
    loop {
        let devices = scan();
        if config.is_none() {
            let blocks: Vec<&Device> = devices
                .iter()
                .filter(|d| d.content == Content::ConfigBlock)
                .collect();
            if blocks.len() > 1 {
                bail!(
                    "more than one config disk: {} (a zone has exactly one)",
                    describe(&devices)
                );
            }
            if let Some(dev) = blocks.first() {
                config = Some((dev.name.clone(), read_config(dev)?));
            }
        }
        if let Some((config_dev, cfg)) = &config {
            let want = cfg.root;
            let roots: Vec<&Device> = devices
                .iter()
                .filter(|d| d.size == want.size_bytes && d.content != Content::ConfigBlock)
                .filter(|d| matches!(d.content, Content::Image(_)))
                .collect();
            match roots.as_slice() {
                [root] => {
                    if root.content != Content::Image(want.format) {
                        bail!(
                            "root disk {} holds {} but the launch config says {}",
                            root.name,
                            describe(std::slice::from_ref(root)),
                            want.format.fs_type()
                        );
                    }
                    info!(
                        "config disk /dev/{config_dev}, root image /dev/{}",
                        root.name
                    );
                    return Ok((cfg.clone(), format!("/dev/{}", root.name)));
                }
                [] => {}
                _ => bail!(
                    "several disks could be the root image ({} bytes): {}",
                    want.size_bytes,
                    describe(&devices)
                ),
            }
        }
        if Instant::now() >= deadline {
            return Err(match &config {
                None => anyhow::anyhow!(
                    "no config disk (a block device starting with SPORECFG) appeared within {} s; found {}",
                    timeout.as_secs(),
                    describe(&devices)
                ),
                Some((_, cfg)) => anyhow::anyhow!(
                    "no root image disk ({} of exactly {} bytes) appeared within {} s; found {}",
                    cfg.root.format.fs_type(),
                    cfg.root.size_bytes,
                    timeout.as_secs(),
                    describe(&devices)
                ),
            });
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_by_magic() {
        let mut b = vec![0u8; 4096];
        assert_eq!(classify(&b), Content::Other);
        b[..8].copy_from_slice(b"SPORECFG");
        assert_eq!(classify(&b), Content::ConfigBlock);
        b[..8].copy_from_slice(b"hsqs\0\0\0\0");
        assert_eq!(classify(&b), Content::Image(RootFormat::Squashfs));
        b[..4].fill(0);
        b[1024..1028].copy_from_slice(&EROFS_MAGIC.to_le_bytes());
        assert_eq!(classify(&b), Content::Image(RootFormat::Erofs));
        // Short reads (tiny devices) are not a crash.
        assert_eq!(classify(&b[..1026]), Content::Other);
        assert_eq!(classify(&[]), Content::Other);
        assert_eq!(classify(b"hsq"), Content::Other);
    }

    #[test]
    fn describe_lists_what_was_seen() {
        let devices = vec![
            Device {
                name: "vda".into(),
                size: 8192,
                content: Content::Image(RootFormat::Squashfs),
            },
            Device {
                name: "vdb".into(),
                size: 4096,
                content: Content::Other,
            },
        ];
        assert_eq!(
            describe(&devices),
            "vda (squashfs, 8192 bytes), vdb (unknown content, 4096 bytes)"
        );
        assert_eq!(describe(&[]), "no block devices");
    }
}
