//! The image cache as the daemon sees it: `spore_oci::ImageStore` for the files, the state
//! database for the records (references, when added, when last used), and ImageChanged events.

use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use spore_api::v1;
use spore_oci::{
    Digest, ImageFormat, ImageName, ImageStore, ImportOptions, OciError, Platform, ProgressSink,
    PullOptions, Reference, StoreOptions,
};

use crate::config::Config;
use crate::store::{ImageRecord, StoreError, ZoneImage, ZoneRecord};
use crate::zones::{ZoneError, Zones, now};

/// Why an image operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(transparent)]
    Oci(#[from] spore_oci::OciError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Zone(#[from] ZoneError),
    #[error("image {0} is not in the cache (pull or import it first)")]
    NotFound(String),
    #[error(
        "no image in the cache has the id {0} (ids are manifest digests, as sporectl image list shows)"
    )]
    NoSuchId(String),
    #[error("{query:?} matches more than one image: {candidates}")]
    Ambiguous { query: String, candidates: String },
    #[error("image {image} is used by zone(s) {zones}: destroy them first")]
    InUse { image: String, zones: String },
}

/// What an image name found among the records.
enum Lookup {
    /// A recorded image, found by a reference (`by_id` false) or by its id.
    Found {
        record: Box<ImageRecord>,
        by_id: bool,
    },
    /// A reference with no image recorded under it (a pull fetches it).
    Unrecorded(Reference),
}

/// What a zone boots, resolved from its spec's image at CreateZone.
#[derive(Debug, Clone)]
pub enum ZoneTarget {
    /// A reference: the image recorded under it when the zone launches, else a pull.
    Reference(Reference),
    /// A cached image, named by its id.
    Cached(Box<ImageRecord>),
}

impl std::fmt::Display for ZoneTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ZoneTarget::Reference(r) => write!(f, "{r}"),
            ZoneTarget::Cached(record) => write!(f, "{}", record.image.manifest_digest),
        }
    }
}

/// The daemon's image service.
#[derive(Clone)]
pub struct Images {
    oci: ImageStore,
    zones: Arc<Zones>,
    default_format: ImageFormat,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Images {
    /// Opens the cache under `<state_dir>/images` (cleaning what a crash left behind).
    pub fn open(config: &Config, zones: Arc<Zones>) -> Result<Images, ImageError> {
        let default_format = config.images_format().unwrap_or_default();
        let mut options = StoreOptions {
            format: default_format,
            zstd_level: config.images.zstd_level as u32,
            insecure_registries: config.images.insecure_registries.clone(),
            max_parallel_downloads: config.images.max_parallel_downloads.max(1),
            ..StoreOptions::default()
        };
        if let Some(path) = &config.images.docker_config {
            options.docker_config = path.clone();
        }
        let oci = ImageStore::open(&config.state_dir.join("images"), options)?;
        Ok(Images {
            oci,
            zones,
            default_format,
        })
    }

    pub fn default_format(&self) -> ImageFormat {
        self.default_format
    }

    /// The image a zone boots: the cached record for `reference` when its root image is still
    /// there, else a pull. Marks it used.
    pub async fn ensure(
        &self,
        reference: &Reference,
        format: ImageFormat,
        progress: impl ProgressSink + 'static,
    ) -> Result<ImageRecord, ImageError> {
        if let Some(record) = self.cached(reference, format).await? {
            return Ok(record);
        }
        let opts = PullOptions {
            platform: None,
            format: Some(format),
            insecure: false,
        };
        self.pull(reference, &opts, progress).await
    }

    /// The image already recorded for `reference` in `format` (its last use updated), without
    /// asking the registry.
    pub async fn cached(
        &self,
        reference: &Reference,
        format: ImageFormat,
    ) -> Result<Option<ImageRecord>, ImageError> {
        let name = reference.to_string();
        let cached = self
            .zones
            .store()
            .run(move |s| s.image_by_reference(&name))
            .await?;
        match cached {
            Some(record) if record.image.format == format && record.image.path.exists() => {
                self.touch(record).await.map(Some)
            }
            _ => Ok(None),
        }
    }

    /// Pulls (always asking the registry for a tag's manifest) and records the image.
    pub async fn pull(
        &self,
        reference: &Reference,
        opts: &PullOptions,
        progress: impl ProgressSink + 'static,
    ) -> Result<ImageRecord, ImageError> {
        let packed = self.oci.pull(reference, opts, progress).await?;
        self.record(packed).await
    }

    /// Imports an archive or layout directory and records the image.
    pub async fn import(
        &self,
        path: &Path,
        opts: &ImportOptions,
        progress: impl ProgressSink + 'static,
    ) -> Result<ImageRecord, ImageError> {
        let packed = self.oci.import(path, opts, progress).await?;
        self.record(packed).await
    }

    async fn record(&self, packed: spore_oci::PackedImage) -> Result<ImageRecord, ImageError> {
        let key = crate::store::image_key(&packed.manifest_digest.to_string(), packed.format);
        let existing = self.zones.store().run(move |s| s.image(&key)).await?;
        let now = now_ms();
        let is_new = existing.is_none();
        let record = match existing {
            Some(mut old) => {
                for r in &packed.references {
                    if !old.image.references.contains(r) {
                        old.image.references.push(r.clone());
                    }
                }
                old.image.path = packed.path;
                old.image.size_bytes = packed.size_bytes;
                old.last_used_ms = now;
                old
            }
            None => ImageRecord {
                image: packed,
                created_at_ms: now,
                last_used_ms: now,
            },
        };
        let stored = record.clone();
        self.zones
            .store()
            .run(move |s| s.put_image(&stored))
            .await?;
        if is_new {
            self.event(v1::image_changed::Change::Added, &record)
                .await?;
        }
        Ok(record)
    }

    async fn touch(&self, mut record: ImageRecord) -> Result<ImageRecord, ImageError> {
        record.last_used_ms = now_ms();
        let stored = record.clone();
        self.zones
            .store()
            .run(move |s| s.put_image(&stored))
            .await?;
        Ok(record)
    }

    pub async fn list(&self) -> Result<Vec<ImageRecord>, ImageError> {
        Ok(self.zones.store().run(|s| s.images()).await?)
    }

    /// Up to `limit` records after the record key `after`, in key order (paged listing).
    pub async fn list_after(
        &self,
        after: Option<String>,
        limit: usize,
    ) -> Result<Vec<ImageRecord>, ImageError> {
        Ok(self
            .zones
            .store()
            .run(move |s| s.images_after(after.as_deref(), limit))
            .await?)
    }

    /// The recorded image `query` names (a reference, an id or a unique id prefix; see
    /// [`ImageName`]), for RemoveImage and the like.
    pub async fn find(&self, query: &str) -> Result<ImageRecord, ImageError> {
        let name = ImageName::parse(query).map_err(OciError::from)?;
        match self.lookup(&name).await? {
            Lookup::Found { record, .. } => Ok(*record),
            Lookup::Unrecorded(r) => Err(ImageError::NotFound(r.to_string())),
        }
    }

    /// Resolves a zone's image once, at CreateZone: an id must name a cached image (it cannot
    /// be pulled); a reference is kept to be looked up, or pulled, at launch.
    pub async fn resolve_for_zone(&self, name: &ImageName) -> Result<ZoneTarget, ImageError> {
        Ok(match self.lookup(name).await? {
            Lookup::Found {
                record,
                by_id: true,
            } => ZoneTarget::Cached(record),
            Lookup::Found { record, .. } => {
                // Found under this reference; the zone follows the reference, as docker does.
                let reference = name.reference().cloned().ok_or_else(|| {
                    ImageError::NotFound(record.image.manifest_digest.to_string())
                })?;
                ZoneTarget::Reference(reference)
            }
            Lookup::Unrecorded(r) => ZoneTarget::Reference(r),
        })
    }

    /// What the zone `record` boots, as CreateZone resolved it (records written before the
    /// daemon resolved images are resolved now, once).
    pub async fn zone_target(&self, record: &ZoneRecord) -> Result<ZoneTarget, ImageError> {
        match &record.image {
            Some(ZoneImage::Reference(r)) => Ok(ZoneTarget::Reference(
                Reference::parse(r).map_err(OciError::from)?,
            )),
            Some(ZoneImage::Id(id)) => self
                .by_key(&record.image_key, id)
                .await
                .map(|r| ZoneTarget::Cached(Box::new(r))),
            None => {
                let name = ImageName::parse(&record.spec().image).map_err(OciError::from)?;
                self.resolve_for_zone(&name).await
            }
        }
    }

    /// The image record for a zone's target: a cached image as it is, a reference through
    /// [`Images::ensure`].
    pub async fn ensure_target(
        &self,
        target: &ZoneTarget,
        format: ImageFormat,
        progress: impl ProgressSink + 'static,
    ) -> Result<ImageRecord, ImageError> {
        match target {
            ZoneTarget::Reference(r) => self.ensure(r, format, progress).await,
            ZoneTarget::Cached(record) => Ok((**record).clone()),
        }
    }

    /// The record `key` a zone was resolved to by id (its last use updated).
    pub async fn by_key(&self, key: &str, id: &str) -> Result<ImageRecord, ImageError> {
        let k = key.to_owned();
        match self.zones.store().run(move |s| s.image(&k)).await? {
            Some(record) if record.image.path.exists() => self.touch(record).await,
            _ => Err(ImageError::NoSuchId(id.to_owned())),
        }
    }

    /// Docker's order: an image recorded under the name; then a whole id or a unique id
    /// prefix; then the name as a reference to pull. One image in several formats is one match
    /// (the default format is preferred).
    async fn lookup(&self, name: &ImageName) -> Result<Lookup, ImageError> {
        let images = self.list().await?;
        if let Some(reference) = name.reference() {
            let normalised = reference.to_string();
            let named: Vec<&ImageRecord> = images
                .iter()
                .filter(|r| r.image.references.contains(&normalised))
                .collect();
            if let Some(record) = self.pick(&named, &name.to_string())? {
                return Ok(Lookup::Found {
                    record: Box::new(record),
                    by_id: false,
                });
            }
        }
        let by_id: Vec<&ImageRecord> = images
            .iter()
            .filter(|r| name.matches_id(&r.image.manifest_digest))
            .collect();
        if let Some(record) = self.pick(&by_id, &name.to_string())? {
            return Ok(Lookup::Found {
                record: Box::new(record),
                by_id: true,
            });
        }
        match name {
            ImageName::Reference(r)
            | ImageName::IdPrefix {
                reference: Some(r), ..
            } => Ok(Lookup::Unrecorded(r.clone())),
            _ => Err(ImageError::NoSuchId(name.to_string())),
        }
    }

    /// One image among `candidates` (records of one manifest in several formats are one
    /// image: the default format's is taken); several images are ambiguous.
    fn pick(
        &self,
        candidates: &[&ImageRecord],
        query: &str,
    ) -> Result<Option<ImageRecord>, ImageError> {
        let mut digests: Vec<&Digest> = candidates
            .iter()
            .map(|r| &r.image.manifest_digest)
            .collect();
        digests.sort();
        digests.dedup();
        match digests.as_slice() {
            [] => Ok(None),
            [_] => Ok(candidates
                .iter()
                .find(|r| r.image.format == self.default_format)
                .or(candidates.first())
                .map(|r| (*r).clone())),
            many => Err(ImageError::Ambiguous {
                query: query.into(),
                candidates: many
                    .iter()
                    .map(|d| {
                        let names = candidates
                            .iter()
                            .find(|r| r.image.manifest_digest == **d)
                            .and_then(|r| r.image.references.first())
                            .map(|n| format!(" ({n})"))
                            .unwrap_or_default();
                        format!("{d}{names}")
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }

    /// Zones (names) that use the image with this key.
    pub fn users(&self, key: &str) -> Vec<String> {
        self.zones
            .list()
            .into_iter()
            .filter(|z| z.image_key == key)
            .map(|z| z.zone().name.clone())
            .collect()
    }

    /// Removes one image (refused while a zone uses it); returns the bytes reclaimed.
    pub async fn remove(&self, record: &ImageRecord) -> Result<u64, ImageError> {
        let key = record.key();
        let users = self.users(&key);
        if !users.is_empty() {
            return Err(ImageError::InUse {
                image: record
                    .image
                    .references
                    .first()
                    .cloned()
                    .unwrap_or_else(|| record.image.manifest_digest.to_string()),
                zones: users.join(", "),
            });
        }
        let mut reclaimed = self
            .oci
            .remove(&record.image.manifest_digest, record.image.format)
            .await?;
        let k = key.clone();
        self.zones.store().run(move |s| s.delete_image(&k)).await?;
        reclaimed += self.collect_garbage().await?;
        self.event(v1::image_changed::Change::Removed, record)
            .await?;
        Ok(reclaimed)
    }

    /// Removes every image no zone uses; returns what went and the bytes reclaimed.
    pub async fn prune(&self) -> Result<(Vec<ImageRecord>, u64), ImageError> {
        let mut removed = Vec::new();
        let mut reclaimed = 0;
        for record in self.list().await? {
            if self.users(&record.key()).is_empty() {
                reclaimed += self
                    .oci
                    .remove(&record.image.manifest_digest, record.image.format)
                    .await?;
                let k = record.key();
                self.zones.store().run(move |s| s.delete_image(&k)).await?;
                self.event(v1::image_changed::Change::Removed, &record)
                    .await?;
                removed.push(record);
            }
        }
        reclaimed += self.collect_garbage().await?;
        Ok((removed, reclaimed))
    }

    /// Deletes blobs that no recorded image references.
    async fn collect_garbage(&self) -> Result<u64, ImageError> {
        let mut keep: Vec<Digest> = Vec::new();
        for record in self.list().await? {
            keep.push(record.image.manifest_digest.clone());
            if let Some(index) = &record.image.index_digest {
                keep.push(index.clone());
            }
        }
        Ok(self.oci.collect_garbage(&keep).await?.reclaimed_bytes)
    }

    async fn event(
        &self,
        change: v1::image_changed::Change,
        record: &ImageRecord,
    ) -> Result<(), ImageError> {
        self.zones
            .record_event(v1::Event {
                sequence: 0,
                time: Some(now()),
                kind: Some(v1::event::Kind::ImageChanged(v1::ImageChanged {
                    change: change as i32,
                    manifest_digest: record.image.manifest_digest.to_string(),
                    references: record.image.references.clone(),
                })),
            })
            .await?;
        Ok(())
    }
}

/// Parses the API's format field (unspecified: the daemon's default).
pub fn format_from_api(format: v1::ImageFormat, default: ImageFormat) -> ImageFormat {
    match format {
        v1::ImageFormat::Squashfs => ImageFormat::Squashfs,
        v1::ImageFormat::Erofs => ImageFormat::Erofs,
        v1::ImageFormat::Unspecified => default,
    }
}

pub fn format_to_api(format: ImageFormat) -> v1::ImageFormat {
    match format {
        ImageFormat::Squashfs => v1::ImageFormat::Squashfs,
        ImageFormat::Erofs => v1::ImageFormat::Erofs,
    }
}

/// Parses `os/arch[/variant]`.
pub fn platform(s: &str) -> Result<Option<Platform>, spore_oci::OciError> {
    if s.is_empty() {
        return Ok(None);
    }
    Ok(Some(Platform::parse(s)?))
}
