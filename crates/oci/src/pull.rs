//! `ImageStore::pull`: resolve a reference (tag -> manifest, index -> the platform's manifest),
//! fetch and verify the config, then assemble the root image.

use crate::digest::Digest;
use crate::error::{OciError, Result};
use crate::manifest::{self, Manifest, Parsed};
use crate::pack::ImageFormat;
use crate::platform::Platform;
use crate::progress::{Phase, ProgressSink, Reporter};
use crate::reference::Reference;
use crate::registry::Session;
use crate::store::{ImageStore, PackedImage, PullOptions};

/// What a pull or an import resolved to: the manifest to pack and the references to record.
pub(crate) struct Resolved {
    pub references: Vec<String>,
    pub manifest_digest: Digest,
    pub manifest: Manifest,
    /// The index the manifest was chosen from, if any.
    pub index_digest: Option<Digest>,
}

impl ImageStore {
    /// Pulls `reference` and packs it; returns the packed image (found in the store if it was
    /// already packed). A tag is always resolved with the registry (one manifest request); a
    /// digest reference whose manifest and root image are in the store needs no network.
    pub async fn pull(
        &self,
        reference: &Reference,
        opts: &PullOptions,
        progress: impl ProgressSink,
    ) -> Result<PackedImage> {
        let _shared = self.inner.gc.read().await;
        let reporter = Reporter::new(&progress);
        let (platform, format) = self.inner.choices(opts.platform.as_ref(), opts.format);
        reporter.message(Phase::Resolving, vec![], format!("resolving {reference}"));

        let session = self.inner.registries.session(reference, opts.insecure)?;
        let (bytes, digest) = self.manifest_bytes(&session, reference.digest()).await?;
        let (manifest_digest, manifest, index_digest) = match manifest::parse(&bytes, &digest)? {
            Parsed::Manifest(m) => (digest, m, None),
            Parsed::Index(entries) => {
                let entry = manifest::choose(&entries, &platform).ok_or_else(|| {
                    OciError::PlatformNotFound {
                        reference: reference.to_string(),
                        index: digest.clone(),
                        platform: platform.to_string(),
                        available: manifest::available(&entries),
                    }
                })?;
                let child = entry.descriptor.digest.clone();
                let (child_bytes, _) = self.manifest_bytes(&session, Some(&child)).await?;
                self.inner.put_blob_async(&digest, &bytes).await?;
                match manifest::parse(&child_bytes, &child)? {
                    Parsed::Manifest(m) => (child, m, Some(digest)),
                    Parsed::Index(_) => {
                        return Err(OciError::InvalidManifest {
                            what: "image index",
                            digest: digest.to_string(),
                            reason: format!(
                                "entry {child} for {platform} is another index (nested indexes are not supported)"
                            ),
                        });
                    }
                }
            }
        };
        reporter.message(
            Phase::Resolving,
            vec![],
            format!("resolved to {manifest_digest}"),
        );
        let resolved = Resolved {
            references: vec![reference.to_string()],
            manifest_digest,
            manifest,
            index_digest,
        };
        self.finish(Some(&session), resolved, &platform, format, &reporter)
            .await
    }

    /// A manifest's bytes: from the store when pinned by digest and present, else the registry.
    /// Verified manifests are kept as blobs.
    async fn manifest_bytes(
        &self,
        session: &Session,
        digest: Option<&Digest>,
    ) -> Result<(Vec<u8>, Digest)> {
        if let Some(d) = digest
            && let Some(bytes) = self.inner.read_blob(d, manifest::MAX_MANIFEST_BYTES)?
        {
            return Ok((bytes, d.clone()));
        }
        let (bytes, d) = session.manifest(digest).await?;
        self.inner.put_blob_async(&d, &bytes).await?;
        Ok((bytes, d))
    }

    /// Shared by pull and import: config, platform check, root image, record.
    pub(crate) async fn finish(
        &self,
        session: Option<&Session>,
        resolved: Resolved,
        platform: &Platform,
        format: ImageFormat,
        reporter: &Reporter<'_>,
    ) -> Result<PackedImage> {
        let Resolved {
            references,
            manifest_digest,
            manifest,
            index_digest,
        } = resolved;
        self.inner
            .ensure_blob(session, &manifest.config, |_| {})
            .await?;
        let config_bytes = self
            .inner
            .read_blob(&manifest.config.digest, manifest::MAX_CONFIG_BYTES)?
            .ok_or_else(|| OciError::NotCached {
                manifest: manifest.config.digest.clone(),
                format: "config blob",
            })?;
        let (config, image_platform, _diff_ids) =
            manifest::parse_config(&config_bytes, &manifest.config.digest)?;
        if platform.score(&image_platform).is_none() && !image_platform.architecture.is_empty() {
            return Err(OciError::PlatformNotFound {
                reference: references
                    .first()
                    .cloned()
                    .unwrap_or_else(|| manifest_digest.to_string()),
                index: manifest_digest.clone(),
                platform: platform.to_string(),
                available: image_platform.to_string(),
            });
        }
        let cached = self.root_image(&manifest_digest, format).is_some();
        let packed = crate::assemble::assemble(
            &self.inner,
            session,
            &manifest_digest,
            &manifest,
            format,
            |p| reporter.report(p),
        )
        .await?;
        let done: Vec<_> = manifest
            .layers
            .iter()
            .map(|l| crate::progress::LayerProgress {
                digest: l.digest.clone(),
                phase: Phase::Done,
                current_bytes: l.size,
                total_bytes: l.size,
            })
            .collect();
        let mut message = if cached {
            format!("cache hit: {}", packed.path.display())
        } else {
            format!("packed {}", packed.path.display())
        };
        if packed.dropped_xattrs > 0 {
            message.push_str(&format!(
                " ({} extended attributes, e.g. file capabilities, were not kept: {format} images carry none)",
                packed.dropped_xattrs
            ));
        }
        reporter.message(Phase::Done, done, message);
        Ok(PackedImage {
            references,
            manifest_digest,
            index_digest,
            config_digest: manifest.config.digest.clone(),
            platform: image_platform,
            format,
            path: packed.path,
            size_bytes: packed.size,
            layers: manifest.layers.iter().map(|l| l.digest.clone()).collect(),
            config,
        })
    }
}
