//! OCI images for spore: references, registry pull, local import, layer merge, root image
//! packing and a content-addressed cache. See `docs/images.md` for the rules it follows.
//!
//! ```no_run
//! # async fn demo() -> spore_oci::Result<()> {
//! use spore_oci::{ImageStore, NoProgress, PullOptions, Reference, StoreOptions};
//!
//! let store = ImageStore::open("/var/lib/spore/images".as_ref(), StoreOptions::default())?;
//! let reference = Reference::parse("busybox")?; // docker.io/library/busybox:latest
//! let image = store.pull(&reference, &PullOptions::default(), NoProgress).await?;
//! println!("{} -> {}", image.manifest_digest, image.path.display());
//! # Ok(())
//! # }
//! ```
//!
//! Modules: [`mod@reference`] (parsing), [`name`] (references or image ids), [`digest`] (verification), [`tree`] (the layer merge and its
//! path-safety rules), [`progress`]; the store (`store`, `pull`, `import`, `assemble`) downloads
//! through `registry` and writes through `pack`.

pub mod digest;
pub mod error;
pub mod name;
pub mod platform;
pub mod progress;
pub mod reference;
pub mod tree;

mod assemble;
mod auth;
mod flight;
mod import;
mod layer;
mod manifest;
mod pack;
mod pull;
mod registry;
mod store;

pub use auth::default_docker_config;
pub use digest::Digest;
pub use error::{OciError, Result, chain};
pub use manifest::ImageConfig;
pub use name::{ImageName, MIN_ID_PREFIX};
pub use pack::{ImageFormat, PAD_BYTES, SECTOR_BYTES, attachable_size, erofs_available};
pub use platform::Platform;
pub use progress::{LayerProgress, NoProgress, Phase, Progress, ProgressSink};
pub use reference::{Reference, ReferenceError};
pub use store::{
    GcReport, ImageStore, ImportOptions, PackedImage, PullOptions, StoreOptions, StoreStats,
};
