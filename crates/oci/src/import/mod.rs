//! `ImageStore::import`: images from the local file system, verified like pulls.
//!
//! - An OCI layout directory (`oci-layout`, `index.json`, `blobs/<alg>/<hex>`).
//! - An oci-archive: the same layout in a tar (optionally gzip/zstd compressed).
//! - A `docker save` tar: `manifest.json` naming a config and layer tars (the old layout with
//!   `<id>/layer.tar`, symlinked duplicates included, and the newer one with `blobs/sha256/`).
//!
//! Every blob is hashed while it is copied into the store: a blob stored under a digest name
//! must hash to it; a docker-save config must hash to its `<hex>.json` name, and each layer
//! to the config's `rootfs.diff_ids` entry (or to its `blobs/` name). A docker-save image gets
//! a synthesised OCI manifest (deterministic, so re-importing gives the same digest).
//!
//! Which image: [`ImportOptions::select`] names one by its name in the archive; without it the
//! archive must hold one image (or, in an OCI layout, one per platform). What is recorded: the
//! names the image has in the archive that are full references, and [`ImportOptions::tag`]
//! (docker's `load`, then `tag`).

mod docker;
mod files;
mod oci;

use std::path::Path;
use std::sync::Arc;

use files::Files;

use crate::error::{OciError, Result};
use crate::platform::Platform;
use crate::progress::{Phase, ProgressSink, Reporter};
use crate::pull::Resolved;
use crate::reference::Reference;
use crate::store::{ImageStore, ImportOptions, Inner, PackedImage};

fn bad(path: &Path, reason: impl Into<String>) -> OciError {
    OciError::Import {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

/// Whether `select` names the archive image called `name`: the same text, or the same
/// reference once normalised (`busybox:1.36` selects `docker.io/library/busybox:1.36`).
fn selects(select: &str, name: &str) -> bool {
    select == name
        || matches!((Reference::parse(select), Reference::parse(name)), (Ok(a), Ok(b)) if a == b)
}

/// The names of an archive's images, for messages.
fn list(names: &[&str]) -> String {
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

/// The error for an archive of several images and no selector.
fn several(path: &Path, count: usize, names: &[&str]) -> OciError {
    bad(
        path,
        format!(
            "it holds {count} images (names: {}): select one by name (sporectl image import --select NAME)",
            list(names)
        ),
    )
}

/// The error for a selector that names none of the archive's images.
fn unselected(path: &Path, select: &str, names: &[&str]) -> OciError {
    bad(
        path,
        format!("no image named {select:?} in it (names: {})", list(names)),
    )
}

/// The references to record: the tag asked for first, then the archive's names that are full
/// references (`registry/repo:tag`, `repo:tag`; a bare `v1` is not), normalised, once each.
fn recorded<'a>(tag: Option<&Reference>, names: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut out: Vec<String> = tag.map(Reference::to_string).into_iter().collect();
    for name in names {
        if (name.contains('/') || name.contains(':'))
            && let Ok(r) = Reference::parse(name)
            && !out.contains(&r.to_string())
        {
            out.push(r.to_string());
        }
    }
    out
}

impl ImageStore {
    /// Imports a `docker save` tar, an oci-archive tar or an OCI layout directory at `path`.
    pub async fn import(
        &self,
        path: &Path,
        opts: &ImportOptions,
        progress: impl ProgressSink,
    ) -> Result<PackedImage> {
        let _shared = self.inner.gc.read().await;
        let reporter = Reporter::new(&progress);
        let (platform, format) = self.inner.choices(opts.platform.as_ref(), opts.format);
        reporter.message(
            Phase::Resolving,
            vec![],
            format!("reading {}", path.display()),
        );
        let (inner, p, o, pl) = (
            self.inner.clone(),
            path.to_owned(),
            opts.clone(),
            platform.clone(),
        );
        let resolved = tokio::task::spawn_blocking(move || resolve(&inner, &p, &o, &pl))
            .await
            .map_err(|_| OciError::Worker {
                doing: "reading an image archive",
            })??;
        reporter.message(
            Phase::Resolving,
            vec![],
            format!("resolved to {}", resolved.manifest_digest),
        );
        self.finish(None, resolved, &platform, format, &reporter)
            .await
    }
}

/// Reads the layout or archive at `path`, stores the chosen image's blobs, and says which
/// manifest to pack. Extracted copies are removed whatever the outcome.
fn resolve(
    inner: &Arc<Inner>,
    path: &Path,
    opts: &ImportOptions,
    platform: &Platform,
) -> Result<Resolved> {
    let files = Files::open(inner, path)?;
    let result = (|| {
        if files.read_small(path, "oci-layout")?.is_some() {
            oci::resolve(inner, &files, path, opts, platform)
        } else if let Some(manifest) = files.read_small(path, "manifest.json")? {
            docker::resolve(inner, &files, path, opts, &manifest)
        } else {
            Err(bad(
                path,
                "neither an OCI layout (no oci-layout file) nor a docker save archive (no manifest.json)",
            ))
        }
    })();
    files.remove();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_match_names_as_written_or_normalised() {
        assert!(selects("v1", "v1"));
        assert!(selects("busybox:1.36", "docker.io/library/busybox:1.36"));
        assert!(selects("docker.io/library/busybox:latest", "busybox"));
        assert!(!selects("busybox:1.36", "busybox:1.37"));
        assert!(!selects("v2", "v1"));
    }

    #[test]
    fn the_tag_is_recorded_first_then_the_archive_names_that_are_references() {
        let tag = Reference::parse("myorg/app:1").unwrap();
        assert_eq!(
            recorded(Some(&tag), ["v1", "busybox:1.36", "docker.io/myorg/app:1"]),
            ["docker.io/myorg/app:1", "docker.io/library/busybox:1.36"]
        );
        assert_eq!(recorded(None, ["v1"]), Vec::<String>::new());
    }
}
