//! Parsing and validating manifests, image indexes and image configs (OCI and Docker schema 2),
//! with oci-spec's types, into the few facts the store needs. Everything here is untrusted:
//! sizes are bounded, digests validated, and unusable media types rejected by name.

use std::collections::BTreeMap;

use oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest};

use crate::digest::Digest;
use crate::error::{OciError, Result};
use crate::platform::Platform;

pub(crate) const MAX_MANIFEST_BYTES: u64 = 4 << 20;
pub(crate) const MAX_CONFIG_BYTES: u64 = 16 << 20;
const MAX_LAYERS: usize = 1000;
const MAX_INDEX_ENTRIES: usize = 1000;

pub(crate) const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub(crate) const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub(crate) const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub(crate) const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub(crate) const MANIFEST_TYPES: &[&str] = &[OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST];

const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub(crate) const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
const LAYER_TYPES: &[&str] = &[
    OCI_LAYER_TAR,
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.diff.tar.zstd",
];

/// A content descriptor with a validated digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
}

/// An image manifest: the config and the layers, bottom first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Manifest {
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    pub descriptor: Descriptor,
    pub platform: Option<Platform>,
    /// `org.opencontainers.image.ref.name`, in OCI layouts.
    pub ref_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Parsed {
    Manifest(Manifest),
    Index(Vec<IndexEntry>),
}

/// The image config fields a zone needs.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: String,
    pub user: String,
    /// `"80/tcp"`, `"53/udp"`.
    pub exposed_ports: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub stop_signal: String,
}

fn invalid(what: &'static str, digest: &Digest, reason: impl Into<String>) -> OciError {
    OciError::InvalidManifest {
        what,
        digest: digest.to_string(),
        reason: reason.into(),
    }
}

fn descriptor(
    what: &'static str,
    owner: &Digest,
    d: &oci_spec::image::Descriptor,
) -> Result<Descriptor> {
    let digest =
        Digest::parse(d.digest().as_ref()).map_err(|e| invalid(what, owner, e.to_string()))?;
    Ok(Descriptor {
        media_type: d.media_type().to_string(),
        digest,
        size: d.size(),
    })
}

#[derive(serde::Deserialize)]
struct Probe {
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    #[serde(rename = "schemaVersion", default)]
    schema_version: Option<i64>,
    #[serde(default)]
    manifests: Option<serde::de::IgnoredAny>,
}

/// Parses a manifest or an index whose bytes hash to `digest`.
pub(crate) fn parse(bytes: &[u8], digest: &Digest) -> Result<Parsed> {
    if bytes.len() as u64 > MAX_MANIFEST_BYTES {
        return Err(OciError::TooLarge {
            what: "manifest",
            digest: digest.to_string(),
            size: bytes.len() as u64,
            limit: MAX_MANIFEST_BYTES,
        });
    }
    let probe: Probe =
        serde_json::from_slice(bytes).map_err(|e| invalid("manifest", digest, e.to_string()))?;
    if probe.schema_version != Some(2) {
        return Err(invalid(
            "manifest",
            digest,
            format!(
                "schemaVersion {:?} is not supported (Docker schema 1 images must be converted)",
                probe.schema_version
            ),
        ));
    }
    let is_index = match probe.media_type.as_deref() {
        Some(OCI_INDEX | DOCKER_LIST) => true,
        Some(OCI_MANIFEST | DOCKER_MANIFEST) => false,
        None => probe.manifests.is_some(),
        Some(other) => {
            return Err(OciError::UnsupportedMediaType {
                what: "manifest",
                digest: digest.to_string(),
                media_type: other.to_owned(),
            });
        }
    };
    if is_index {
        let index = ImageIndex::from_reader(bytes)
            .map_err(|e| invalid("image index", digest, e.to_string()))?;
        if index.manifests().len() > MAX_INDEX_ENTRIES {
            return Err(invalid(
                "image index",
                digest,
                format!("more than {MAX_INDEX_ENTRIES} entries"),
            ));
        }
        let entries = index
            .manifests()
            .iter()
            .map(|d| {
                let platform = d.platform().as_ref().map(|p| {
                    Platform::new(
                        &p.os().to_string(),
                        &p.architecture().to_string(),
                        p.variant().as_deref(),
                    )
                });
                let ref_name = d
                    .annotations()
                    .as_ref()
                    .and_then(|a| a.get("org.opencontainers.image.ref.name").cloned());
                Ok(IndexEntry {
                    descriptor: descriptor("image index", digest, d)?,
                    platform,
                    ref_name,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        return Ok(Parsed::Index(entries));
    }
    let m = ImageManifest::from_reader(bytes)
        .map_err(|e| invalid("manifest", digest, e.to_string()))?;
    let config = descriptor("manifest", digest, m.config())?;
    if config.media_type != OCI_CONFIG && config.media_type != DOCKER_CONFIG {
        return Err(OciError::UnsupportedMediaType {
            what: "image config (this is not a container image)",
            digest: config.digest.to_string(),
            media_type: config.media_type,
        });
    }
    if config.size > MAX_CONFIG_BYTES {
        return Err(OciError::TooLarge {
            what: "image config",
            digest: config.digest.to_string(),
            size: config.size,
            limit: MAX_CONFIG_BYTES,
        });
    }
    if m.layers().len() > MAX_LAYERS {
        return Err(invalid(
            "manifest",
            digest,
            format!("more than {MAX_LAYERS} layers"),
        ));
    }
    let layers = m
        .layers()
        .iter()
        .map(|l| {
            let d = descriptor("manifest", digest, l)?;
            if !LAYER_TYPES.contains(&d.media_type.as_str()) {
                let hint = if d.media_type.contains("foreign")
                    || d.media_type.contains("nondistributable")
                {
                    " (foreign layers are fetched from other URLs; spore does not follow them)"
                } else {
                    ""
                };
                return Err(OciError::UnsupportedMediaType {
                    what: if hint.is_empty() {
                        "layer"
                    } else {
                        "foreign layer"
                    },
                    digest: format!("{}{hint}", d.digest),
                    media_type: d.media_type,
                });
            }
            Ok(d)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Parsed::Manifest(Manifest { config, layers }))
}

/// Picks the best entry of an index for `platform`.
pub(crate) fn choose<'a>(entries: &'a [IndexEntry], platform: &Platform) -> Option<&'a IndexEntry> {
    entries
        .iter()
        .filter(|e| MANIFEST_TYPES.contains(&e.descriptor.media_type.as_str()))
        .filter_map(|e| Some((platform.score(e.platform.as_ref()?)?, e)))
        // Highest score; the first listed among equals.
        .fold(None, |best: Option<(u8, &IndexEntry)>, (s, e)| match best {
            Some((bs, _)) if bs >= s => best,
            _ => Some((s, e)),
        })
        .map(|(_, e)| e)
}

pub(crate) fn available(entries: &[IndexEntry]) -> String {
    let v: Vec<String> = entries
        .iter()
        .filter_map(|e| e.platform.as_ref().map(|p| p.to_string()))
        .collect();
    if v.is_empty() {
        "no platforms".into()
    } else {
        v.join(", ")
    }
}

/// Parses an image config; returns it with the platform it declares.
pub(crate) fn parse_config(
    bytes: &[u8],
    digest: &Digest,
) -> Result<(ImageConfig, Platform, Vec<Digest>)> {
    let c = ImageConfiguration::from_reader(bytes)
        .map_err(|e| invalid("image config", digest, e.to_string()))?;
    let platform = Platform::new(
        &c.os().to_string(),
        &c.architecture().to_string(),
        c.variant().as_deref(),
    );
    let diff_ids = c
        .rootfs()
        .diff_ids()
        .iter()
        .map(|d| Digest::parse(d).map_err(|e| invalid("image config", digest, e.to_string())))
        .collect::<Result<Vec<_>>>()?;
    let mut out = ImageConfig::default();
    if let Some(cfg) = c.config() {
        out.entrypoint = cfg.entrypoint().clone().unwrap_or_default();
        out.cmd = cfg.cmd().clone().unwrap_or_default();
        out.env = cfg.env().clone().unwrap_or_default();
        out.working_dir = cfg.working_dir().clone().unwrap_or_default();
        out.user = cfg.user().clone().unwrap_or_default();
        out.exposed_ports = cfg.exposed_ports().clone().unwrap_or_default();
        out.exposed_ports.sort();
        out.labels = cfg
            .labels()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect();
        out.stop_signal = cfg.stop_signal().clone().unwrap_or_default();
    }
    Ok((out, platform, diff_ids))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d() -> Digest {
        Digest::sha256_of(b"m")
    }
    const H: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn manifest(layer_type: &str, config_type: &str) -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}","config":{{"mediaType":"{config_type}","digest":"{H}","size":2}},
            "layers":[{{"mediaType":"{layer_type}","digest":"{H}","size":10}}]}}"#
        )
    }

    #[test]
    fn parses_docker_and_oci_manifests() {
        let m = parse(
            manifest(
                "application/vnd.docker.image.rootfs.diff.tar.gzip",
                DOCKER_CONFIG,
            )
            .as_bytes(),
            &d(),
        )
        .unwrap();
        let Parsed::Manifest(m) = m else { panic!() };
        assert_eq!(m.layers.len(), 1);
        assert_eq!(m.layers[0].size, 10);
        assert_eq!(m.config.digest.to_string(), H);
    }

    #[test]
    fn rejects_what_it_cannot_use() {
        let e = parse(
            manifest(
                "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
                DOCKER_CONFIG,
            )
            .as_bytes(),
            &d(),
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("foreign layers are fetched from other URLs"),
            "{e}"
        );
        let e = parse(
            manifest(OCI_LAYER_TAR, "application/vnd.cncf.helm.config.v1+json").as_bytes(),
            &d(),
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("this is not a container image"),
            "{e}"
        );
        let e = parse(br#"{"schemaVersion":1,"name":"x"}"#, &d()).unwrap_err();
        assert!(e.to_string().contains("Docker schema 1"), "{e}");
        let e = parse(b"{not json", &d()).unwrap_err();
        assert!(
            matches!(
                e,
                OciError::InvalidManifest {
                    what: "manifest",
                    ..
                }
            ),
            "{e}"
        );
        let e = parse(&vec![b' '; 5 << 20], &d()).unwrap_err();
        assert!(
            matches!(
                e,
                OciError::TooLarge {
                    what: "manifest",
                    ..
                }
            ),
            "{e}"
        );
        let bad_digest = manifest(OCI_LAYER_TAR, OCI_CONFIG).replacen(H, "sha256:1234", 2);
        let e = parse(bad_digest.as_bytes(), &d()).unwrap_err();
        assert!(matches!(e, OciError::InvalidManifest { .. }), "{e}");
        let e = parse(br#"{"schemaVersion":2,"mediaType":"text/html"}"#, &d()).unwrap_err();
        assert!(matches!(e, OciError::UnsupportedMediaType { .. }), "{e}");
    }

    #[test]
    fn index_platform_choice_is_variant_aware() {
        let entry = |p: &str| {
            let parts: Vec<&str> = p.split('/').collect();
            let variant = parts
                .get(2)
                .map(|v| format!(r#","variant":"{v}""#))
                .unwrap_or_default();
            format!(
                r#"{{"mediaType":"{OCI_MANIFEST}","digest":"{H}","size":1,"platform":{{"os":"{}","architecture":"{}"{variant}}}}}"#,
                parts[0], parts[1]
            )
        };
        let index = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{},{},{},{}]}}"#,
            entry("linux/arm/v6"),
            entry("linux/arm/v7"),
            entry("linux/arm64/v8"),
            entry("linux/amd64")
        );
        let Parsed::Index(entries) = parse(index.as_bytes(), &d()).unwrap() else {
            panic!()
        };
        let pick = |p: &str| {
            choose(&entries, &Platform::parse(p).unwrap())
                .map(|e| e.platform.clone().unwrap().to_string())
        };
        assert_eq!(pick("linux/amd64").as_deref(), Some("linux/amd64"));
        assert_eq!(pick("linux/arm/v7").as_deref(), Some("linux/arm/v7"));
        assert_eq!(pick("linux/arm64").as_deref(), Some("linux/arm64/v8"));
        assert_eq!(pick("linux/arm").as_deref(), Some("linux/arm/v6"));
        assert_eq!(pick("linux/riscv64"), None);
        assert_eq!(
            available(&entries),
            "linux/arm/v6, linux/arm/v7, linux/arm64/v8, linux/amd64"
        );
    }

    #[test]
    fn config_subset() {
        let cfg = br#"{"architecture":"amd64","os":"linux","config":{"Entrypoint":["/bin/sh"],"Cmd":["-c","x"],
            "Env":["A=1"],"WorkingDir":"/w","User":"1000:1000","ExposedPorts":{"80/tcp":{},"53/udp":{}},
            "Labels":{"k":"v"},"StopSignal":"SIGTERM"},"rootfs":{"type":"layers","diff_ids":[]}}"#;
        let (c, p, diff) = parse_config(cfg, &d()).unwrap();
        assert_eq!(p.to_string(), "linux/amd64");
        assert!(diff.is_empty());
        assert_eq!(c.entrypoint, ["/bin/sh"]);
        assert_eq!(c.cmd, ["-c", "x"]);
        assert_eq!(c.exposed_ports, ["53/udp", "80/tcp"]);
        assert_eq!(c.labels.get("k").map(String::as_str), Some("v"));
        assert_eq!(
            (
                c.working_dir.as_str(),
                c.user.as_str(),
                c.stop_signal.as_str()
            ),
            ("/w", "1000:1000", "SIGTERM")
        );
        assert!(parse_config(b"[]", &d()).is_err());
    }
}
