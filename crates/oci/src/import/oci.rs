//! OCI layouts (a directory, or an oci-archive tar of one): `index.json` names the images; one
//! is chosen, then resolved to a manifest for the platform when it is an index.

use std::path::Path;

use super::bad;
use super::files::Files;
use crate::digest::Digest;
use crate::error::{OciError, Result};
use crate::manifest::{self, IndexEntry, Parsed};
use crate::platform::Platform;
use crate::pull::Resolved;
use crate::store::{ImportOptions, Inner};

pub(super) fn resolve(
    inner: &Inner,
    files: &Files,
    path: &Path,
    opts: &ImportOptions,
    platform: &Platform,
) -> Result<Resolved> {
    let index_bytes = files
        .read_small(path, "index.json")?
        .ok_or_else(|| bad(path, "index.json is missing"))?;
    let index_digest = Digest::sha256_of(&index_bytes);
    let Parsed::Index(entries) = manifest::parse(&index_bytes, &index_digest)? else {
        return Err(bad(path, "index.json is not an image index"));
    };
    let chosen = choose(&entries, &index_digest, path, opts, platform)?;
    let references = super::recorded(opts.tag.as_ref(), chosen.ref_name.as_deref());
    files.ingest(inner, path, &chosen.descriptor)?;
    let (manifest_digest, manifest, index_digest) =
        manifest_for(inner, files, path, &chosen.descriptor.digest, platform)?;
    files.ingest(inner, path, &manifest.config)?;
    for layer in &manifest.layers {
        files.ingest(inner, path, layer)?;
    }
    Ok(Resolved {
        references,
        manifest_digest,
        manifest,
        index_digest,
    })
}

/// The `index.json` entry to import: the one [`ImportOptions::select`] names, or the only one.
/// Several entries under one name (or none) are one image for several platforms.
fn choose(
    entries: &[IndexEntry],
    index_digest: &Digest,
    path: &Path,
    opts: &ImportOptions,
    platform: &Platform,
) -> Result<IndexEntry> {
    let names: Vec<&str> = entries
        .iter()
        .filter_map(|e| e.ref_name.as_deref())
        .collect();
    let candidates: Vec<IndexEntry> = match &opts.select {
        Some(select) => entries
            .iter()
            .filter(|e| {
                e.ref_name
                    .as_deref()
                    .is_some_and(|n| super::selects(select, n))
            })
            .cloned()
            .collect(),
        None => entries.to_vec(),
    };
    match candidates.as_slice() {
        [] => Err(super::unselected(
            path,
            opts.select.as_deref().unwrap_or_default(),
            &names,
        )),
        [one] => Ok(one.clone()),
        [first, rest @ ..] if rest.iter().all(|e| e.ref_name == first.ref_name) => {
            manifest::choose(&candidates, platform)
                .cloned()
                .ok_or_else(|| OciError::PlatformNotFound {
                    reference: path.display().to_string(),
                    index: index_digest.clone(),
                    platform: platform.to_string(),
                    available: manifest::available(&candidates),
                })
        }
        many => Err(super::several(path, many.len(), &names)),
    }
}

fn parsed_manifest(inner: &Inner, path: &Path, digest: &Digest) -> Result<Parsed> {
    let bytes = inner
        .read_blob(digest, manifest::MAX_MANIFEST_BYTES)?
        .ok_or_else(|| bad(path, format!("blob {digest} is missing")))?;
    manifest::parse(&bytes, digest)
}

/// The manifest `top` names: itself, or its index's entry for `platform`.
fn manifest_for(
    inner: &Inner,
    files: &Files,
    path: &Path,
    top: &Digest,
    platform: &Platform,
) -> Result<(Digest, manifest::Manifest, Option<Digest>)> {
    let children = match parsed_manifest(inner, path, top)? {
        Parsed::Manifest(m) => return Ok((top.clone(), m, None)),
        Parsed::Index(children) => children,
    };
    let entry =
        manifest::choose(&children, platform).ok_or_else(|| OciError::PlatformNotFound {
            reference: path.display().to_string(),
            index: top.clone(),
            platform: platform.to_string(),
            available: manifest::available(&children),
        })?;
    files.ingest(inner, path, &entry.descriptor)?;
    let child = entry.descriptor.digest.clone();
    match parsed_manifest(inner, path, &child)? {
        Parsed::Manifest(m) => Ok((child, m, Some(top.clone()))),
        Parsed::Index(_) => Err(bad(
            path,
            format!("{child} is a nested index, which is not supported"),
        )),
    }
}
