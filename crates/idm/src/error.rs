//! The crate's error type.

use std::io;

/// Why bytes of an IDM stream were skipped while looking for the next frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// The length prefix was 0..=4 (too short for the magic) or over [`crate::MAX_FRAME_LEN`].
    BadLength(u32),
    /// A plausible length was not followed by the packet magic.
    NoMagic,
    /// The frame had the magic but its bytes are not a valid `IdmPacket` encoding.
    Undecodable(String),
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SkipReason::BadLength(len) => write!(
                f,
                "length prefix {len} is outside 5..={}",
                crate::MAX_FRAME_LEN
            ),
            SkipReason::NoMagic => f.write_str("no packet magic after the length prefix"),
            SkipReason::Undecodable(why) => write!(f, "frame does not decode: {why}"),
        }
    }
}

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum IdmError {
    /// Encoding: the packet does not fit in one frame.
    #[error(
        "IDM packet of {len} bytes is over the {max}-byte frame limit; send large data in chunks"
    )]
    PacketTooLarge { len: usize, max: usize },

    /// Encoding: `magic` was set to something other than 0 or [`crate::MAGIC`].
    #[error("IDM packet has magic {found:#010x}; leave it 0 or set it to MAGIC")]
    BadMagic { found: u32 },

    /// Decoding: bytes that did not form a valid frame were dropped. Not fatal: the decoder
    /// has moved past them and the next call continues with the stream.
    #[error("skipped {bytes} bytes of IDM stream that were not a valid frame ({reason})")]
    Skipped { bytes: usize, reason: SkipReason },

    /// Decoding: the stream ended inside a frame.
    #[error("IDM stream ended in the middle of a frame ({buffered} bytes left undecoded)")]
    Truncated { buffered: usize },

    /// Reading or writing the underlying byte stream failed.
    #[error("IDM {op} failed")]
    Io {
        op: &'static str,
        #[source]
        source: io::Error,
    },

    /// `launch.json` is not valid JSON for the launch config schema.
    #[error("launch config is not valid JSON for this schema")]
    LaunchJson(#[source] serde_json::Error),

    /// `launch.json` has a version this build does not read.
    #[error(
        "launch config version {found} is not supported (this build reads version {supported}); \
         install a guest bundle from the same spore release as the host"
    )]
    LaunchVersion { found: u32, supported: u32 },

    /// `launch.json` parsed but breaks a rule (the message names the field).
    #[error("launch config is invalid: {0}")]
    LaunchInvalid(String),

    /// The config block is shorter than its header.
    #[error("config block is {len} bytes, shorter than its {need}-byte header")]
    ConfigShort { len: usize, need: usize },

    /// The config block does not start with `SPORECFG`.
    #[error("config block does not start with the SPORECFG magic")]
    ConfigBadMagic,

    /// The config block uses a format version this build does not read.
    #[error(
        "config block format version {found} is not supported (this build reads {supported}); \
         host and guest bundle are from different spore releases"
    )]
    ConfigVersion { found: u32, supported: u32 },

    /// The payload length in the header is over the limit or runs past the end of the data.
    #[error(
        "config block payload length {len} is invalid: {available} bytes follow the header, \
         limit {max}"
    )]
    ConfigLength {
        len: u64,
        available: usize,
        max: usize,
    },

    /// Writing the config block file failed.
    #[error("cannot write config block {path}")]
    ConfigWrite {
        path: String,
        #[source]
        source: io::Error,
    },
}

/// `Result` with this crate's [`IdmError`].
pub type Result<T, E = IdmError> = std::result::Result<T, E>;
