//! The image store: content-addressed files under one root directory.
//!
//! ```text
//! <root>/lock                          flock: one process per store
//! <root>/blobs/<alg>/<hex>             verified blobs (manifests, indexes, configs, layers)
//! <root>/images/<format>/<alg>/<hex>.<format>   root images by (manifest digest, format)
//! <root>/tmp/                          downloads, spools and images being written; wiped at open
//! ```
//!
//! Everything enters through `tmp/` and is renamed into place after an fsync, then the directory
//! is fsynced: a crash leaves only `tmp/` debris, which [`ImageStore::open`] removes. Records
//! (which references point at which image, when it was used) belong to the caller's database.

use std::collections::HashSet;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{RwLock, Semaphore};

use crate::digest::{Algorithm, Digest};
use crate::error::{OciError, Result};
use crate::flight::Flights;
use crate::manifest::{Descriptor, ImageConfig, Manifest, Parsed};
use crate::pack::ImageFormat;
use crate::platform::Platform;
use crate::progress::{LayerProgress, Phase, Progress};
use crate::reference::Reference;
use crate::registry::{Registries, Session};

/// Store-wide settings (from `spored.toml`).
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Format used when a pull does not ask for one.
    pub format: ImageFormat,
    /// zstd level for squashfs images (1-22). Default 3: measured 8x faster to write than 15 for
    /// a 6% larger image.
    pub zstd_level: u32,
    /// Registries (`host:port`, exactly as in references) reached over plain HTTP.
    pub insecure_registries: Vec<String>,
    /// Docker config whose `auths` supply credentials.
    pub docker_config: PathBuf,
    /// Blob downloads at once, across all pulls.
    pub max_parallel_downloads: usize,
    /// Platform chosen from image indexes when a pull does not name one.
    pub platform: Platform,
    /// Bound on the unpacked size of one image (file contents), against decompression bombs.
    pub max_unpacked_bytes: u64,
    /// Bound on the number of entries of one image.
    pub max_entries: usize,
    /// Tries per registry request (transient failures only), with doubling backoff from 200 ms.
    pub attempts: u32,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            format: ImageFormat::Squashfs,
            zstd_level: 3,
            insecure_registries: Vec::new(),
            docker_config: crate::auth::default_docker_config(),
            max_parallel_downloads: 3,
            platform: Platform::default(),
            max_unpacked_bytes: 64 << 30,
            max_entries: 4_000_000,
            attempts: 4,
        }
    }
}

/// Per-pull choices.
#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    /// Default: [`StoreOptions::platform`].
    pub platform: Option<Platform>,
    /// Default: [`StoreOptions::format`].
    pub format: Option<ImageFormat>,
    /// Allow plain HTTP to this reference's registry.
    pub insecure: bool,
}

/// Per-import choices.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// A reference to record for the imported image, besides the names it has in the archive
    /// (docker's `load`, then `tag`).
    pub tag: Option<Reference>,
    /// Which image of an archive holding several to import: its name there (an OCI layout's
    /// `org.opencontainers.image.ref.name`, one of a `docker save` image's `RepoTags`), as
    /// written or as the same reference once normalised.
    pub select: Option<String>,
    /// Default: [`StoreOptions::platform`]; picks from an image index.
    pub platform: Option<Platform>,
    /// Default: [`StoreOptions::format`].
    pub format: Option<ImageFormat>,
}

/// A packed image: what the caller records in its database.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PackedImage {
    /// Normalised references this pull or import was asked for (may be empty for an import).
    pub references: Vec<String>,
    pub manifest_digest: Digest,
    /// The index the manifest was chosen from, if any.
    #[serde(default)]
    pub index_digest: Option<Digest>,
    pub config_digest: Digest,
    pub platform: Platform,
    pub format: ImageFormat,
    /// The root image file.
    pub path: PathBuf,
    /// Its size in bytes.
    pub size_bytes: u64,
    /// Layer blob digests, bottom first.
    pub layers: Vec<Digest>,
    pub config: ImageConfig,
}

/// What [`ImageStore::collect_garbage`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    pub removed_blobs: Vec<Digest>,
    pub removed_images: Vec<PathBuf>,
    pub reclaimed_bytes: u64,
}

/// Counters since the store was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Blob downloads started (each digest once per flight).
    pub blob_downloads: u64,
    /// Bytes received for blobs.
    pub downloaded_bytes: u64,
    /// Root images written.
    pub images_packed: u64,
}

#[derive(Debug, Clone)]
pub(crate) struct BlobState {
    pub phase: Phase,
    pub current: u64,
}

/// Progress of one build, shared with every waiter.
#[derive(Debug, Clone)]
pub(crate) struct PackState {
    pub phase: Phase,
    pub layers: Vec<LayerProgress>,
    pub message: String,
}

impl PackState {
    pub fn new(manifest: &Manifest) -> PackState {
        let layers = manifest
            .layers
            .iter()
            .map(|l| LayerProgress {
                digest: l.digest.clone(),
                phase: Phase::Downloading,
                current_bytes: 0,
                total_bytes: l.size,
            })
            .collect();
        PackState {
            phase: Phase::Downloading,
            layers,
            message: String::new(),
        }
    }

    pub fn progress(&self) -> Progress {
        Progress {
            phase: self.phase,
            layers: self.layers.clone(),
            message: self.message.clone(),
        }
    }
}

/// A root image that was just written, or found.
#[derive(Debug, Clone)]
pub(crate) struct Packed {
    pub path: PathBuf,
    pub size: u64,
    pub dropped_xattrs: u64,
}

pub(crate) struct Inner {
    pub root: PathBuf,
    pub options: StoreOptions,
    pub registries: Arc<Registries>,
    pub downloads: Semaphore,
    pub cpus: Semaphore,
    pub blob_flights: Flights<Digest, BlobState, ()>,
    pub pack_flights: Flights<(Digest, ImageFormat), PackState, Packed>,
    /// Pulls and imports hold it shared; garbage collection exclusively.
    pub gc: RwLock<()>,
    next_temp: AtomicU64,
    pub blob_downloads: AtomicU64,
    pub downloaded_bytes: AtomicU64,
    pub images_packed: AtomicU64,
    _lock: File,
}

/// The image store. Cheap to clone; clones share downloads and packs in flight.
#[derive(Clone)]
pub struct ImageStore {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for ImageStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageStore")
            .field("root", &self.inner.root)
            .finish_non_exhaustive()
    }
}

fn mkdir(path: &Path) -> Result<()> {
    fs::create_dir_all(path).map_err(OciError::io("create directory", path))
}

/// fsyncs a directory so a rename into it survives a crash.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(OciError::io("sync directory", dir))
}

impl ImageStore {
    /// Opens (creating) the store at `root`, locks it against other processes, and removes what
    /// a crash left behind (partial downloads, spools, unfinished root images).
    pub fn open(root: &Path, options: StoreOptions) -> Result<ImageStore> {
        mkdir(root)?;
        let lock_path = root.join("lock");
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(OciError::io("open lock file", &lock_path))?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(
            |_| OciError::StoreLocked {
                root: root.to_owned(),
                lock: lock_path.clone(),
            },
        )?;
        let tmp = root.join("tmp");
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(OciError::io("clean leftovers in", &tmp))?;
        }
        for dir in [tmp.clone(), root.join("blobs"), root.join("images")] {
            mkdir(&dir)?;
        }
        pad_unattachable_images(root);
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        let registries = Registries::new(
            options.insecure_registries.clone(),
            options.docker_config.clone(),
            options.attempts,
        );
        let inner = Inner {
            root: root.to_owned(),
            downloads: Semaphore::new(options.max_parallel_downloads.max(1)),
            cpus: Semaphore::new(cpus),
            options,
            registries,
            blob_flights: Flights::default(),
            pack_flights: Flights::default(),
            gc: RwLock::new(()),
            next_temp: AtomicU64::new(0),
            blob_downloads: AtomicU64::new(0),
            downloaded_bytes: AtomicU64::new(0),
            images_packed: AtomicU64::new(0),
            _lock: lock,
        };
        Ok(ImageStore {
            inner: Arc::new(inner),
        })
    }

    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    pub fn options(&self) -> &StoreOptions {
        &self.inner.options
    }

    pub fn stats(&self) -> StoreStats {
        StoreStats {
            blob_downloads: self.inner.blob_downloads.load(Ordering::Relaxed),
            downloaded_bytes: self.inner.downloaded_bytes.load(Ordering::Relaxed),
            images_packed: self.inner.images_packed.load(Ordering::Relaxed),
        }
    }

    /// The root image for (manifest, format), if it is in the store.
    pub fn root_image(&self, manifest_digest: &Digest, format: ImageFormat) -> Option<PathBuf> {
        let path = self.inner.image_path(manifest_digest, format);
        path.is_file().then_some(path)
    }

    /// Whether the blob is in the store.
    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.inner.blob_path(digest).is_file()
    }

    /// Removes the root image for (manifest, format); returns the bytes freed (0 if it was not
    /// there). Its blobs stay until [`ImageStore::collect_garbage`].
    pub async fn remove(&self, manifest_digest: &Digest, format: ImageFormat) -> Result<u64> {
        let path = self.inner.image_path(manifest_digest, format);
        let _shared = self.inner.gc.read().await;
        match tokio::fs::metadata(&path).await {
            Ok(meta) => {
                tokio::fs::remove_file(&path)
                    .await
                    .map_err(OciError::io("remove root image", &path))?;
                Ok(meta.len())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(OciError::io("inspect root image", &path)(e)),
        }
    }

    /// Removes root images of manifests not in `keep`, and blobs that no kept manifest (or
    /// index) references. Pass every manifest digest and index digest the caller still records.
    /// Waits for pulls and imports in progress to finish first.
    pub async fn collect_garbage(&self, keep: &[Digest]) -> Result<GcReport> {
        let _exclusive = self.inner.gc.write().await;
        let inner = self.inner.clone();
        let keep = keep.to_vec();
        tokio::task::spawn_blocking(move || inner.collect_garbage(&keep))
            .await
            .map_err(|_| OciError::Worker {
                doing: "collecting garbage",
            })?
    }
}

fn alg_dir(d: &Digest) -> &'static str {
    match d.algorithm() {
        Algorithm::Sha256 => "sha256",
        Algorithm::Sha512 => "sha512",
    }
}

impl Inner {
    /// The platform and format a pull or import uses: its own, else the store's.
    pub fn choices(
        &self,
        platform: Option<&Platform>,
        format: Option<ImageFormat>,
    ) -> (Platform, ImageFormat) {
        (
            platform.unwrap_or(&self.options.platform).clone(),
            format.unwrap_or(self.options.format),
        )
    }

    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root.join("blobs").join(alg_dir(d)).join(d.hex())
    }

    pub fn image_path(&self, d: &Digest, format: ImageFormat) -> PathBuf {
        self.root
            .join("images")
            .join(format.name())
            .join(alg_dir(d))
            .join(format!("{}.{}", d.hex(), format.extension()))
    }

    /// A fresh path under `tmp/`.
    pub fn temp_path(&self, prefix: &str) -> PathBuf {
        let n = self.next_temp.fetch_add(1, Ordering::Relaxed);
        self.root.join("tmp").join(format!("{prefix}-{n}"))
    }

    /// Moves a finished, fsynced temp file to `dest` and makes the rename durable.
    pub fn commit(&self, tmp: &Path, dest: &Path) -> Result<()> {
        let dir = dest.parent().expect("store paths have parents");
        mkdir(dir)?;
        fs::rename(tmp, dest).map_err(OciError::io("move into the store", dest))?;
        sync_dir(dir)
    }

    /// Writes small verified content (a manifest) as a blob if it is not there yet.
    pub fn put_blob(&self, digest: &Digest, bytes: &[u8]) -> Result<()> {
        let dest = self.blob_path(digest);
        if dest.is_file() {
            return Ok(());
        }
        let tmp = self.temp_path("put");
        let write = || -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            std::io::Write::write_all(&mut f, bytes)?;
            f.sync_all()
        };
        write().map_err(OciError::io("write", &tmp))?;
        self.commit(&tmp, &dest)
    }

    /// [`Inner::put_blob`] on a blocking thread (it fsyncs).
    pub async fn put_blob_async(self: &Arc<Self>, digest: &Digest, bytes: &[u8]) -> Result<()> {
        if self.blob_path(digest).is_file() {
            return Ok(());
        }
        let (inner, digest, bytes) = (self.clone(), digest.clone(), bytes.to_vec());
        tokio::task::spawn_blocking(move || inner.put_blob(&digest, &bytes))
            .await
            .map_err(|_| OciError::Worker {
                doing: "storing a manifest",
            })?
    }

    /// Reads a small blob (manifest, config), bounded by `limit`.
    pub fn read_blob(&self, digest: &Digest, limit: u64) -> Result<Option<Vec<u8>>> {
        let path = self.blob_path(digest);
        let f = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(OciError::io("open blob", &path)(e)),
        };
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut std::io::Read::take(f, limit + 1), &mut buf)
            .map_err(OciError::io("read blob", &path))?;
        if buf.len() as u64 > limit {
            return Err(OciError::TooLarge {
                what: "blob",
                digest: digest.to_string(),
                size: buf.len() as u64,
                limit,
            });
        }
        Ok(Some(buf))
    }

    /// Makes sure blob `desc` is in the store: already there, or downloaded through `session`
    /// (one download per digest however many callers want it). `on` sees download progress.
    pub async fn ensure_blob(
        self: &Arc<Self>,
        session: Option<&Session>,
        desc: &Descriptor,
        mut on: impl FnMut(&BlobState),
    ) -> Result<()> {
        let path = self.blob_path(&desc.digest);
        match fs::metadata(&path) {
            Ok(m) if m.len() == desc.size => return Ok(()),
            Ok(m) => {
                // Same content, so the descriptor's size is wrong.
                return Err(OciError::DigestMismatch {
                    digest: desc.digest.clone(),
                    expected_size: desc.size,
                    actual_size: m.len(),
                    actual_digest: desc.digest.clone(),
                });
            }
            Err(_) => {}
        }
        let Some(session) = session else {
            return Err(OciError::Import {
                path: self.root.clone(),
                reason: format!("blob {} is missing", desc.digest),
            });
        };
        let start = BlobState {
            phase: Phase::Downloading,
            current: 0,
        };
        let (inner, session, d) = (self.clone(), session.clone(), desc.clone());
        let rx = self
            .blob_flights
            .join(desc.digest.clone(), start, move |tx| async move {
                let _permit = inner
                    .downloads
                    .acquire()
                    .await
                    .map_err(|_| OciError::Worker {
                        doing: "waiting for a download slot",
                    })?;
                let dest = inner.blob_path(&d.digest);
                if fs::metadata(&dest).is_ok_and(|m| m.len() == d.size) {
                    return Ok(());
                }
                inner.blob_downloads.fetch_add(1, Ordering::Relaxed);
                let tmp = inner.temp_path(&format!("blob-{}", d.digest.hex()));
                let counted = AtomicU64::new(0);
                let progress = |n: u64| {
                    let before = counted.swap(n, Ordering::Relaxed);
                    inner
                        .downloaded_bytes
                        .fetch_add(n.saturating_sub(before), Ordering::Relaxed);
                    tx.send_modify(|s| {
                        if let crate::flight::State::Running(b) = s {
                            b.current = n;
                        }
                    });
                };
                session.download(&d, &tmp, &progress).await?;
                tx.send_modify(|s| {
                    if let crate::flight::State::Running(b) = s {
                        b.phase = Phase::Verifying;
                    }
                });
                let inner2 = inner.clone();
                tokio::task::spawn_blocking(move || inner2.commit(&tmp, &dest))
                    .await
                    .map_err(|_| OciError::Worker {
                        doing: "storing a blob",
                    })?
            });
        crate::flight::wait(rx, |s| on(s)).await
    }

    fn collect_garbage(&self, keep: &[Digest]) -> Result<GcReport> {
        let mut referenced: HashSet<Digest> = HashSet::new();
        let mut todo: Vec<Digest> = keep.to_vec();
        while let Some(d) = todo.pop() {
            if !referenced.insert(d.clone()) {
                continue;
            }
            let Some(bytes) = self
                .read_blob(&d, crate::manifest::MAX_MANIFEST_BYTES)
                .ok()
                .flatten()
            else {
                continue;
            };
            match crate::manifest::parse(&bytes, &d) {
                Ok(Parsed::Manifest(m)) => {
                    referenced.insert(m.config.digest);
                    referenced.extend(m.layers.into_iter().map(|l| l.digest));
                }
                Ok(Parsed::Index(entries)) => {
                    todo.extend(entries.into_iter().map(|e| e.descriptor.digest))
                }
                Err(_) => {}
            }
        }
        let keep: HashSet<&Digest> = keep.iter().collect();
        let mut report = GcReport::default();
        for alg in ["sha256", "sha512"] {
            let dir = self.root.join("blobs").join(alg);
            for entry in read_dir(&dir)? {
                let digest =
                    Digest::parse(&format!("{alg}:{}", entry.file_name().to_string_lossy())).ok();
                if digest.as_ref().is_some_and(|d| referenced.contains(d)) {
                    continue;
                }
                report.reclaimed_bytes += remove_file(&entry.path())?;
                report.removed_blobs.extend(digest);
            }
        }
        for format in [ImageFormat::Squashfs, ImageFormat::Erofs] {
            for alg in ["sha256", "sha512"] {
                let dir = self.root.join("images").join(format.name()).join(alg);
                for entry in read_dir(&dir)? {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    let hex = name
                        .strip_suffix(&format!(".{}", format.extension()))
                        .unwrap_or("");
                    let digest = Digest::parse(&format!("{alg}:{hex}")).ok();
                    if digest.as_ref().is_some_and(|d| keep.contains(d)) {
                        continue;
                    }
                    report.reclaimed_bytes += remove_file(&entry.path())?;
                    report.removed_images.push(entry.path());
                }
            }
        }
        Ok(report)
    }
}

/// Root images written before every image was padded can be a size no block device takes
/// (spore <= 0.1 when the last data written was a duplicate). Padding them in place is safe:
/// both formats ignore trailing zeros, and no zone can be using an image it could not attach.
/// A failure only leaves that image as it was, for the launch check to report.
fn pad_unattachable_images(root: &Path) {
    for format in [ImageFormat::Squashfs, ImageFormat::Erofs] {
        for alg in ["sha256", "sha512"] {
            let dir = root.join("images").join(format.name()).join(alg);
            for entry in read_dir(&dir).unwrap_or_default() {
                let path = entry.path();
                let padded = File::options()
                    .write(true)
                    .open(&path)
                    .map_err(OciError::io("open root image", &path))
                    .and_then(|f| {
                        let old = f.metadata().map_err(OciError::io("inspect", &path))?.len();
                        if crate::pack::attachable_size(old) {
                            return Ok(None);
                        }
                        let new = crate::pack::pad(&f, &path)?;
                        f.sync_all()
                            .map_err(OciError::io("sync root image", &path))?;
                        Ok(Some((old, new)))
                    });
                match padded {
                    Ok(Some((old, new))) => {
                        tracing::info!(image = %path.display(), old, new, "padded a root image to whole sectors")
                    }
                    Ok(None) => {}
                    Err(e) => tracing::warn!(
                        image = %path.display(),
                        "cannot pad a root image to whole sectors: {}",
                        crate::error::chain(&e)
                    ),
                }
            }
        }
    }
}

fn read_dir(dir: &Path) -> Result<Vec<fs::DirEntry>> {
    match fs::read_dir(dir) {
        Ok(rd) => rd
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(OciError::io("list", dir)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(OciError::io("list", dir)(e)),
    }
}

fn remove_file(path: &Path) -> Result<u64> {
    let len = fs::symlink_metadata(path).map(|m| m.len()).unwrap_or(0);
    fs::remove_file(path).map_err(OciError::io("remove", path))?;
    Ok(len)
}
