//! Writes OCI image layouts with hand-made layers: any entry a tar can hold, including the
//! hostile ones no image tool would produce.

use std::io::Write;
use std::path::Path;

use sha2::{Digest as _, Sha256};

pub const MTIME: u64 = 1_700_000_000;

#[derive(Clone, Debug)]
pub enum Kind {
    Dir,
    File(Vec<u8>),
    Symlink(String),
    Hardlink(String),
    Char(u32, u32),
    Block(u32, u32),
    Fifo,
}

#[derive(Clone, Debug)]
pub struct Entry {
    pub path: String,
    pub kind: Kind,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
}

impl Entry {
    pub fn owner(mut self, uid: u64, gid: u64) -> Entry {
        self.uid = uid;
        self.gid = gid;
        self
    }
    pub fn mode(mut self, mode: u32) -> Entry {
        self.mode = mode;
        self
    }
}

fn entry(path: &str, kind: Kind, mode: u32) -> Entry {
    Entry {
        path: path.to_owned(),
        kind,
        mode,
        uid: 0,
        gid: 0,
        mtime: MTIME,
    }
}
pub fn dir(path: &str) -> Entry {
    entry(path, Kind::Dir, 0o755)
}
pub fn file(path: &str, content: impl AsRef<[u8]>) -> Entry {
    entry(path, Kind::File(content.as_ref().to_vec()), 0o644)
}
pub fn symlink(path: &str, target: &str) -> Entry {
    entry(path, Kind::Symlink(target.to_owned()), 0o777)
}
pub fn hardlink(path: &str, target: &str) -> Entry {
    entry(path, Kind::Hardlink(target.to_owned()), 0o644)
}
pub fn chardev(path: &str, major: u32, minor: u32) -> Entry {
    entry(path, Kind::Char(major, minor), 0o666)
}
pub fn blockdev(path: &str, major: u32, minor: u32) -> Entry {
    entry(path, Kind::Block(major, minor), 0o660)
}
pub fn fifo(path: &str) -> Entry {
    entry(path, Kind::Fifo, 0o600)
}
/// `.wh.NAME` next to `path`'s name.
pub fn whiteout(path: &str) -> Entry {
    let (parent, name) = path.rsplit_once('/').map_or(("", path), |(p, n)| (p, n));
    let wh = if parent.is_empty() {
        format!(".wh.{name}")
    } else {
        format!("{parent}/.wh.{name}")
    };
    file(&wh, b"")
}
pub fn opaque(dir: &str) -> Entry {
    file(&format!("{dir}/.wh..wh..opq"), b"")
}

fn set_raw(field: &mut [u8], value: &[u8]) {
    assert!(value.len() <= field.len(), "raw tar field too long");
    field.fill(0);
    field[..value.len()].copy_from_slice(value);
}

/// An uncompressed tar of `entries`, paths written exactly as given (no validation).
pub fn tar(entries: &[Entry]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        let (ty, data): (tar::EntryType, &[u8]) = match &e.kind {
            Kind::Dir => (tar::EntryType::Directory, b""),
            Kind::File(d) => (tar::EntryType::Regular, d),
            Kind::Symlink(_) => (tar::EntryType::Symlink, b""),
            Kind::Hardlink(_) => (tar::EntryType::Link, b""),
            Kind::Char(..) => (tar::EntryType::Char, b""),
            Kind::Block(..) => (tar::EntryType::Block, b""),
            Kind::Fifo => (tar::EntryType::Fifo, b""),
        };
        h.set_entry_type(ty);
        h.set_size(data.len() as u64);
        h.set_mode(e.mode);
        h.set_uid(e.uid);
        h.set_gid(e.gid);
        h.set_mtime(e.mtime);
        if let Kind::Char(ma, mi) | Kind::Block(ma, mi) = e.kind {
            h.set_device_major(ma).unwrap();
            h.set_device_minor(mi).unwrap();
        }
        if let Kind::Symlink(t) | Kind::Hardlink(t) = &e.kind {
            set_raw(&mut h.as_gnu_mut().unwrap().linkname, t.as_bytes());
        }
        if e.path.len() < 100 {
            set_raw(&mut h.as_gnu_mut().unwrap().name, e.path.as_bytes());
            h.set_cksum();
            b.append(&h, data).unwrap();
        } else {
            b.append_data(&mut h, &e.path, data).unwrap();
        }
    }
    b.into_inner().unwrap()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    Zstd,
    None,
}

pub struct Layer {
    pub entries: Vec<Entry>,
    pub compression: Compression,
}

pub fn layer(entries: Vec<Entry>) -> Layer {
    Layer {
        entries,
        compression: Compression::Gzip,
    }
}

pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// Writes a blob into `layout`'s blob directory; returns its digest.
pub fn write_blob(layout: &Path, data: &[u8]) -> String {
    let d = sha256(data);
    let dir = layout.join("blobs/sha256");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(d.strip_prefix("sha256:").unwrap()), data).unwrap();
    d
}

pub struct Image {
    pub layers: Vec<Layer>,
    pub architecture: &'static str,
    pub variant: Option<&'static str>,
    /// Merged into the config's `config` object.
    pub config: serde_json::Value,
}

impl Image {
    pub fn new(layers: Vec<Layer>) -> Image {
        Image {
            layers,
            architecture: "amd64",
            variant: None,
            config: serde_json::json!({"Env": ["PATH=/usr/bin:/bin"], "Cmd": ["/bin/sh"]}),
        }
    }
}

/// What was written.
#[derive(Clone, Debug)]
pub struct Written {
    pub manifest_digest: String,
    pub manifest_size: usize,
    pub config_digest: String,
    pub layer_digests: Vec<String>,
    pub platform: String,
}

/// Writes an image's blobs (layers, config, manifest) into `layout`.
pub fn write_image(layout: &Path, image: &Image) -> Written {
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    let mut layer_digests = Vec::new();
    for l in &image.layers {
        let raw = tar(&l.entries);
        diff_ids.push(sha256(&raw));
        let (data, media_type) = match l.compression {
            Compression::None => (raw, "application/vnd.oci.image.layer.v1.tar"),
            Compression::Gzip => {
                let mut enc =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                enc.write_all(&raw).unwrap();
                (
                    enc.finish().unwrap(),
                    "application/vnd.oci.image.layer.v1.tar+gzip",
                )
            }
            Compression::Zstd => (
                zstd::encode_all(&raw[..], 3).unwrap(),
                "application/vnd.oci.image.layer.v1.tar+zstd",
            ),
        };
        let d = write_blob(layout, &data);
        layers.push(serde_json::json!({"mediaType": media_type, "digest": d, "size": data.len()}));
        layer_digests.push(d);
    }
    let mut config = serde_json::json!({
        "architecture": image.architecture,
        "os": "linux",
        "config": image.config,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    if let Some(v) = image.variant {
        config["variant"] = v.into();
    }
    let config = serde_json::to_vec(&config).unwrap();
    let config_digest = write_blob(layout, &config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": layers,
    }))
    .unwrap();
    let manifest_digest = write_blob(layout, &manifest);
    let platform = match image.variant {
        Some(v) => format!("linux/{}/{v}", image.architecture),
        None => format!("linux/{}", image.architecture),
    };
    Written {
        manifest_digest,
        manifest_size: manifest.len(),
        config_digest,
        layer_digests,
        platform,
    }
}

fn platform_json(p: &str) -> serde_json::Value {
    let parts: Vec<&str> = p.split('/').collect();
    let mut v = serde_json::json!({"os": parts[0], "architecture": parts[1]});
    if let Some(var) = parts.get(2) {
        v["variant"] = (*var).into();
    }
    v
}

/// Writes `oci-layout` and an `index.json` naming one manifest as `tag`.
pub fn write_layout(layout: &Path, tag: &str, image: &Written) {
    std::fs::write(
        layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": image.manifest_digest, "size": image.manifest_size,
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }],
    });
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
}

/// Writes an image index blob over `images` and an `index.json` naming it as `tag`; returns the
/// index digest.
pub fn write_index_layout(layout: &Path, tag: &str, images: &[Written]) -> String {
    let manifests: Vec<_> = images
        .iter()
        .map(|w| {
            serde_json::json!({
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": w.manifest_digest, "size": w.manifest_size, "platform": platform_json(&w.platform),
            })
        })
        .collect();
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": manifests,
    }))
    .unwrap();
    let digest = write_blob(layout, &index);
    std::fs::write(
        layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let top = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.index.v1+json", "digest": digest, "size": index.len(),
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }],
    });
    std::fs::write(layout.join("index.json"), serde_json::to_vec(&top).unwrap()).unwrap();
    digest
}
