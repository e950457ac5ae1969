//! IDM: the protocol between the host and a zone's guest init (spore-init), plus the launch
//! configuration the host hands the guest.
//!
//! - [`proto`]: the messages of `proto/spore/idm/v1/idm.proto` (prost, no gRPC).
//! - framing ([`encode_frame`], [`FrameDecoder`]): `u32` LE length + one [`IdmPacket`], at most
//!   [`MAX_FRAME_LEN`] bytes, with resynchronisation after garbage;
//! - [`IdmReader`]/[`IdmWriter`]: blocking `std::io` wrappers (what the guest uses);
//! - `IdmCodec` (feature `tokio`): the `tokio_util::codec` codec for the host;
//! - [`launch`]: `launch.json` ([`LaunchConfig`]); [`config_block`]: the raw disk carrying it.
//!
//! The guest is untrusted: decoding never panics and never buffers more than one frame.
//!
//! ```
//! use spore_idm::{IdmReader, IdmWriter, IdmPacket, proto::{Pong, idm_packet::Body}};
//! let mut wire = Vec::new();
//! IdmWriter::new(&mut wire)
//!     .write_packet(&IdmPacket::request(3, Body::Pong(Pong { nonce: 5, guest_time_ns: 0 })))
//!     .unwrap();
//! let mut reader = IdmReader::new(&wire[..]);
//! let packet = reader.read_packet().unwrap().unwrap();
//! assert!(matches!(packet.body, Some(Body::Pong(Pong { nonce: 5, .. }))));
//! assert!(reader.read_packet().unwrap().is_none());
//! ```

#[cfg(feature = "tokio")]
mod codec;
pub mod config_block;
mod error;
mod frame;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod launch;
mod packet;
mod sync;

/// Generated message types (`spore.idm.v1`).
#[allow(clippy::all, missing_docs)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/spore.idm.v1.rs"));
}

#[cfg(feature = "tokio")]
pub use codec::IdmCodec;
/// The error's name before it was [`IdmError`]; kept while callers move to the new name.
pub use error::{IdmError, Result, SkipReason};
pub use frame::{FrameDecoder, HEADER_LEN, MAGIC, MAX_FRAME_LEN, encode_frame, frame};
pub use launch::LaunchConfig;
pub use packet::ExitStatus;
pub use proto::IdmPacket;
pub use sync::{IdmReader, IdmWriter};

#[cfg(test)]
mod hostile_tests;
#[cfg(test)]
mod tests;
