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
