//! OCI images for spore: references, registry pull, local import, layer merge, root image
//! packing and a content-addressed cache.

pub mod digest;
pub mod platform;
pub mod reference;
pub mod tree;

pub use digest::Digest;
pub use platform::Platform;
pub use reference::{Reference, ReferenceError};
pub mod error;
mod layer;
pub use error::{Error, Result};
mod pack;
pub use pack::{ImageFormat, erofs_available};
mod flight;
pub mod progress;
pub use progress::{LayerProgress, NoProgress, Phase, Progress, ProgressSink};
mod manifest;
pub use manifest::ImageConfig;
mod auth;
mod registry;
pub use auth::default_docker_config;
pub use error::chain;
mod assemble;
mod pull;
mod store;
pub use store::{
    GcReport, ImageStore, ImportOptions, PackedImage, PullOptions, StoreOptions, StoreStats,
};
mod import;
