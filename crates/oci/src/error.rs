//! The crate's error type. Messages name the thing and, where there is one, the fix; they do
//! not repeat their `#[source]`, which the caller prints as a chain.

use std::path::PathBuf;
use std::sync::Arc;

use crate::digest::{Digest, DigestError};
use crate::platform::PlatformError;
use crate::reference::ReferenceError;
use crate::tree::EntryProblem;

pub type Result<T, E = OciError> = std::result::Result<T, E>;

/// Why an image operation failed.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    #[error(transparent)]
    Digest(#[from] DigestError),
    #[error(transparent)]
    Platform(#[from] PlatformError),

    #[error("{action} {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("image store {} is in use by another process (it holds {})", root.display(), lock.display())]
    StoreLocked { root: PathBuf, lock: PathBuf },

    #[error("registry {registry}: {action} {reference}")]
    Registry {
        registry: String,
        reference: String,
        action: &'static str,
        #[source]
        source: oci_client::errors::OciDistributionError,
    },
    #[error("image {reference} was not found in registry {registry} (check the name and tag)")]
    NotFound { registry: String, reference: String },
    #[error(
        "registry {registry} refused access to {reference}: log in (docker login writes {}) or check the name",
        docker_config.display()
    )]
    Unauthorized {
        registry: String,
        reference: String,
        docker_config: PathBuf,
    },
    #[error("docker config {}: {reason}", path.display())]
    DockerConfig { path: PathBuf, reason: String },

    #[error(
        "blob {digest} failed verification: expected {expected_size} bytes with that digest, got {actual_size} bytes with digest {actual_digest}; nothing was cached"
    )]
    DigestMismatch {
        digest: Digest,
        expected_size: u64,
        actual_size: u64,
        actual_digest: Digest,
    },
    #[error(
        "blob {digest} is larger than the {expected_size} bytes its descriptor announces; nothing was cached"
    )]
    BlobTooLarge { digest: Digest, expected_size: u64 },
    #[error("{what} {digest} is {size} bytes, more than the {limit} bytes allowed")]
    TooLarge {
        what: &'static str,
        digest: String,
        size: u64,
        limit: u64,
    },
    #[error("invalid {what} {digest}: {reason}")]
    InvalidManifest {
        what: &'static str,
        digest: String,
        reason: String,
    },
    #[error("{what} {digest} has media type {media_type:?}, which spore cannot use")]
    UnsupportedMediaType {
        what: &'static str,
        digest: String,
        media_type: String,
    },
    #[error(
        "image index {index} of {reference} has no image for platform {platform} (it has: {available})"
    )]
    PlatformNotFound {
        reference: String,
        index: Digest,
        platform: String,
        available: String,
    },

    #[error("layer {digest}: entry {entry:?}: {problem}")]
    Entry {
        digest: Digest,
        entry: String,
        problem: EntryProblem,
    },
    #[error(
        "layer {digest}: entry {entry:?} has tar type {kind:?}, which is not a file system object"
    )]
    UnsupportedEntry {
        digest: Digest,
        entry: String,
        kind: char,
    },
    #[error("layer {digest} is not a readable (gzip, zstd or plain) tar archive")]
    LayerArchive {
        digest: Digest,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the image unpacks to more than {limit} bytes (limit: StoreOptions::max_unpacked_bytes)"
    )]
    UnpackedTooLarge { limit: u64 },

    #[error("write {format} image for {manifest}")]
    Pack {
        format: &'static str,
        manifest: Digest,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("the erofs format needs mkfs.erofs (Debian package erofs-utils)")]
    ErofsUnavailable,
    #[error("mkfs.erofs failed ({status}) for {manifest}: {stderr}")]
    Mkfs {
        manifest: Digest,
        status: String,
        stderr: String,
    },
    #[error("the erofs format needs root to recreate owners and device nodes ({entry:?})")]
    ErofsNeedsRoot {
        entry: String,
        #[source]
        source: std::io::Error,
    },

    #[error("import {}: {reason}", path.display())]
    Import { path: PathBuf, reason: String },
    #[error("import {}: {what}", path.display())]
    ImportUnreadable {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("root image {manifest} ({format}) is not in the store")]
    NotCached {
        manifest: Digest,
        format: &'static str,
    },

    /// An error of a download or pack this caller shared with others; see [`OciError::unshared`].
    #[error(transparent)]
    Shared(Arc<OciError>),
    #[error("a blocking worker stopped unexpectedly while {doing}")]
    Worker { doing: &'static str },
}

impl OciError {
    /// The underlying error, looking through [`OciError::Shared`].
    pub fn unshared(&self) -> &OciError {
        match self {
            OciError::Shared(e) => e.unshared(),
            e => e,
        }
    }

    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> OciError {
        let path = path.into();
        move |source| OciError::Io {
            action,
            path,
            source,
        }
    }
}

/// The error and all its sources, `: `-joined, for logs.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
