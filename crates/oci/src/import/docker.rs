//! `docker save` archives: `manifest.json` names each image's config (`<hex>.json`) and layer
//! tars. Each is verified against the name or `rootfs.diff_ids` entry that identifies it, and
//! an OCI manifest is synthesised (deterministically, so importing twice gives one digest).

use std::fs::File;
use std::io::Read;
use std::path::Path;

use super::bad;
use super::files::{Extracted, Files, normalise};
use crate::digest::Digest;
use crate::error::{OciError, Result};
use crate::layer::{Compression, sniff};
use crate::manifest::{self, Parsed};
use crate::pull::Resolved;
use crate::store::{ImportOptions, Inner};

/// One image in `manifest.json`.
#[derive(serde::Deserialize)]
struct DockerEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

impl DockerEntry {
    fn tags(&self) -> &[String] {
        self.repo_tags.as_deref().unwrap_or_default()
    }
}

pub(super) fn resolve(
    inner: &Inner,
    files: &Files,
    path: &Path,
    opts: &ImportOptions,
    manifest_json: &[u8],
) -> Result<Resolved> {
    let Files::Extracted(map) = files else {
        return Err(bad(path, "a docker save image must be a tar archive"));
    };
    let entries: Vec<DockerEntry> =
        serde_json::from_slice(manifest_json).map_err(|e| OciError::ImportUnreadable {
            path: path.to_owned(),
            what: "manifest.json is not valid",
            source: Box::new(e),
        })?;
    let entry = choose(&entries, path, opts)?;
    let references = super::recorded(opts.tag.as_ref(), entry.tags().iter().map(String::as_str));
    let file = |name: &str| {
        map.get(&normalise(name))
            .ok_or_else(|| bad(path, format!("{name} is missing from the archive")))
    };
    let config = file(&entry.config)?;
    verify_name(&entry.config, config)?;
    let config_bytes = std::fs::read(&config.tmp).map_err(OciError::io("read", &config.tmp))?;
    let (_, _, diff_ids) = manifest::parse_config(&config_bytes, &config.digest)?;
    if diff_ids.len() != entry.layers.len() {
        return Err(bad(
            path,
            format!(
                "the config lists {} layers, manifest.json {}",
                diff_ids.len(),
                entry.layers.len()
            ),
        ));
    }
    let mut layers = Vec::new();
    for (name, diff_id) in entry.layers.iter().zip(&diff_ids) {
        layers.push(ingest_layer(inner, name, file(name)?, diff_id)?);
    }
    inner.put_blob(&config.digest, &config_bytes)?;
    let synthesised = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": manifest::OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.digest.to_string(), "size": config.size},
        "layers": layers,
    }))
    .expect("serialisable");
    let manifest_digest = Digest::sha256_of(&synthesised);
    inner.put_blob(&manifest_digest, &synthesised)?;
    let Parsed::Manifest(manifest) = manifest::parse(&synthesised, &manifest_digest)? else {
        unreachable!("a manifest was written");
    };
    Ok(Resolved {
        references,
        manifest_digest,
        manifest,
        index_digest: None,
    })
}

/// The `manifest.json` entry to import: the one [`ImportOptions::select`] names (by one of its
/// `RepoTags`), or the only one.
fn choose<'a>(
    entries: &'a [DockerEntry],
    path: &Path,
    opts: &ImportOptions,
) -> Result<&'a DockerEntry> {
    let names: Vec<&str> = entries
        .iter()
        .flat_map(|e| e.tags().iter().map(String::as_str))
        .collect();
    match (&opts.select, entries) {
        (Some(select), _) => entries
            .iter()
            .find(|e| e.tags().iter().any(|t| super::selects(select, t)))
            .ok_or_else(|| super::unselected(path, select, &names)),
        (None, [one]) => Ok(one),
        (None, many) => Err(super::several(path, many.len(), &names)),
    }
}

/// The digest an archive path names: `<hex>.json`, `<hex>/layer.tar` or
/// `blobs/<alg>/<hex>`; None when it names none.
fn named_digest(name: &str) -> Option<Digest> {
    let base = name
        .rsplit('/')
        .next()?
        .trim_end_matches(".json")
        .trim_end_matches(".tar");
    let dir = name
        .rsplit_once('/')
        .map(|(d, _)| d.rsplit('/').next().unwrap_or(d));
    let alg = match dir {
        Some("sha512") => "sha512",
        _ => "sha256",
    };
    Digest::parse(&format!("{alg}:{base}")).ok()
}

/// A config must hash to the digest its name carries.
fn verify_name(name: &str, file: &Extracted) -> Result<()> {
    match named_digest(name) {
        Some(named) if named != file.digest => Err(OciError::DigestMismatch {
            digest: named,
            expected_size: file.size,
            actual_size: file.size,
            actual_digest: file.digest.clone(),
        }),
        _ => Ok(()),
    }
}

/// Verifies a layer tar against its diff_id (or its `blobs/` name), stores it as a blob, and
/// returns its descriptor for the synthesised manifest.
fn ingest_layer(
    inner: &Inner,
    name: &str,
    file: &Extracted,
    diff_id: &Digest,
) -> Result<serde_json::Value> {
    if file.digest != *diff_id && named_digest(name).as_ref() != Some(&file.digest) {
        return Err(OciError::DigestMismatch {
            digest: diff_id.clone(),
            expected_size: file.size,
            actual_size: file.size,
            actual_digest: file.digest.clone(),
        });
    }
    let mut head = [0u8; 4];
    let n = File::open(&file.tmp)
        .and_then(|mut f| f.read(&mut head))
        .map_err(OciError::io("read", &file.tmp))?;
    let media_type = match sniff(&head[..n]) {
        Compression::None => manifest::OCI_LAYER_TAR.to_owned(),
        Compression::Gzip => format!("{}+gzip", manifest::OCI_LAYER_TAR),
        Compression::Zstd => format!("{}+zstd", manifest::OCI_LAYER_TAR),
    };
    let blob = inner.blob_path(&file.digest);
    if !blob.is_file() {
        // A link, not a move: an aliased layer (docker save's symlinks) shares the file.
        let copy = inner.temp_path("import");
        std::fs::hard_link(&file.tmp, &copy).map_err(OciError::io("link", &copy))?;
        File::open(&copy)
            .and_then(|f| f.sync_all())
            .map_err(OciError::io("sync", &copy))?;
        inner.commit(&copy, &blob)?;
    }
    Ok(
        serde_json::json!({"mediaType": media_type, "digest": file.digest.to_string(), "size": file.size}),
    )
}

#[cfg(test)]
mod tests {
    use super::named_digest;

    #[test]
    fn archive_names_carry_digests() {
        let hex = "ab".repeat(32);
        let want = Some(crate::Digest::parse(&format!("sha256:{hex}")).unwrap());
        assert_eq!(named_digest(&format!("{hex}.json")), want);
        assert_eq!(named_digest(&format!("{hex}/layer.tar")), None);
        assert_eq!(named_digest(&format!("blobs/sha256/{hex}")), want);
        assert_eq!(named_digest("manifest.json"), None);
    }
}
