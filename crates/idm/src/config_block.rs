//! The config disk: a raw block image (no filesystem, so the guest needs no mount) carrying the
//! zone's `launch.json`.
//!
//! Layout, all integers little-endian:
//! ```text
//! offset 0   8 bytes  "SPORECFG"
//! offset 8   u32      format version (1)
//! offset 12  u32      payload length N (at most 1 MiB)
//! offset 16  N bytes  launch.json (UTF-8 JSON, see `launch`)
//! then zeros up to a multiple of 4096 bytes, at least 8192
//! ```
//! The guest recognises the disk by the magic at offset 0 (not by probe order), so the same
//! image works as Xen's xvdb and virtio's vdb.

use std::io::Write;
use std::path::Path;

use crate::error::{IdmError, Result};
use crate::launch::LaunchConfig;

/// The first eight bytes of a config block.
pub const MAGIC: &[u8; 8] = b"SPORECFG";

/// The format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// Magic + version + length.
pub const HEADER_LEN: usize = 16;

/// The block is padded to a multiple of this (a page; also a multiple of any sector size).
pub const ALIGN: usize = 4096;

/// The smallest block written: Linux scans the first 16 sectors of every disk for partition
/// tables, and the Amiga RDB scan prints an error on the zone's console for each sector it
/// cannot read.
pub const MIN_LEN: usize = 16 * 512;

/// Largest payload accepted in either direction.
pub const MAX_PAYLOAD: usize = 1024 * 1024;

/// The decoded header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub version: u32,
    pub payload_len: usize,
}

impl Header {
    /// Bytes from the start of the block to the end of the payload.
    pub fn total_len(&self) -> usize {
        HEADER_LEN + self.payload_len
    }
}

/// `true` if `bytes` starts with the config block magic (the guest's disk probe).
pub fn has_magic(bytes: &[u8]) -> bool {
    bytes.starts_with(MAGIC)
}

/// Parses the header. `device_len` is the size of the whole device or file, so a length that
/// runs past its end is refused before anything is read.
pub fn parse_header(bytes: &[u8], device_len: u64) -> Result<Header> {
    let Some(header) = bytes.first_chunk::<HEADER_LEN>() else {
        return Err(IdmError::ConfigShort {
            len: bytes.len(),
            need: HEADER_LEN,
        });
    };
    if !has_magic(header) {
        return Err(IdmError::ConfigBadMagic);
    }
    let word = |at: usize| {
        u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
    };
    let version = word(8);
    if version != FORMAT_VERSION {
        return Err(IdmError::ConfigVersion {
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    let len = word(12);
    let available =
        usize::try_from(device_len.saturating_sub(HEADER_LEN as u64)).unwrap_or(usize::MAX);
    let payload_len = len as usize;
    if payload_len == 0 || payload_len > MAX_PAYLOAD || payload_len > available {
        return Err(IdmError::ConfigLength {
            len: len.into(),
            available,
            max: MAX_PAYLOAD,
        });
    }
    Ok(Header {
        version,
        payload_len,
    })
}

/// Decodes a config block (the device's bytes, at least up to the end of the payload).
pub fn decode(bytes: &[u8]) -> Result<LaunchConfig> {
    let header = parse_header(bytes, bytes.len() as u64)?;
    LaunchConfig::from_json(&bytes[HEADER_LEN..header.total_len()])
}

/// Encodes `config` as a padded config block.
pub fn encode(config: &LaunchConfig) -> Result<Vec<u8>> {
    let json = config.to_json()?;
    if json.len() > MAX_PAYLOAD {
        return Err(IdmError::ConfigLength {
            len: json.len() as u64,
            available: json.len(),
            max: MAX_PAYLOAD,
        });
    }
    let total = (HEADER_LEN + json.len())
        .next_multiple_of(ALIGN)
        .max(MIN_LEN);
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    // Checked against MAX_PAYLOAD above.
    out.extend_from_slice(&(json.len() as u32).to_le_bytes());
    out.extend_from_slice(&json);
    out.resize(total, 0);
    Ok(out)
}

/// Encodes `config` and writes it to `path` (created or truncated), synced to disk.
pub fn write_to(path: &Path, config: &LaunchConfig) -> Result<()> {
    let bytes = encode(config)?;
    let wrap = |source| IdmError::ConfigWrite {
        path: path.display().to_string(),
        source,
    };
    let mut file = std::fs::File::create(path).map_err(wrap)?;
    file.write_all(&bytes).map_err(wrap)?;
    file.sync_all().map_err(wrap)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::launch::tests::sample;

    #[test]
    fn round_trip_is_padded_and_exact() {
        let cfg = sample();
        let block = encode(&cfg).unwrap();
        assert_eq!(block.len() % ALIGN, 0);
        assert!(block.len() >= MIN_LEN);
        assert_eq!(&block[..8], b"SPORECFG");
        assert_eq!(u32::from_le_bytes(block[8..12].try_into().unwrap()), 1);
        let len = u32::from_le_bytes(block[12..16].try_into().unwrap()) as usize;
        assert!(block[HEADER_LEN + len..].iter().all(|&b| b == 0));
        assert_eq!(decode(&block).unwrap(), cfg);
    }

    #[test]
    fn write_to_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.img");
        write_to(&path, &sample()).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(decode(&bytes).unwrap(), sample());
    }

    #[test]
    fn short() {
        for len in [0, 1, 8, 15] {
            let block = encode(&sample()).unwrap();
            match decode(&block[..len]) {
                Err(IdmError::ConfigShort { len: l, need: 16 }) => assert_eq!(l, len),
                other => panic!("len {len}: {other:?}"),
            }
        }
    }

    #[test]
    fn bad_magic() {
        let mut block = encode(&sample()).unwrap();
        block[0] = b's';
        assert!(matches!(decode(&block), Err(IdmError::ConfigBadMagic)));
        // An all-zero disk (say, a blank scratch disk) is not a config block either.
        assert!(matches!(decode(&[0; 4096]), Err(IdmError::ConfigBadMagic)));
    }

    #[test]
    fn unknown_version() {
        let mut block = encode(&sample()).unwrap();
        block[8..12].copy_from_slice(&7u32.to_le_bytes());
        assert!(matches!(
            decode(&block),
            Err(IdmError::ConfigVersion {
                found: 7,
                supported: 1
            })
        ));
    }

    #[test]
    fn length_beyond_device() {
        let block = encode(&sample()).unwrap();
        let mut cut = block[..64].to_vec();
        match decode(&cut) {
            Err(IdmError::ConfigLength { available: 48, .. }) => {}
            other => panic!("{other:?}"),
        }
        cut[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            parse_header(&cut, u64::MAX),
            Err(IdmError::ConfigLength { len, .. }) if len == u64::from(u32::MAX)
        ));
        cut[12..16].copy_from_slice(&0u32.to_le_bytes());
        assert!(matches!(
            decode(&cut),
            Err(IdmError::ConfigLength { len: 0, .. })
        ));
    }

    #[test]
    fn bad_json() {
        let mut block = vec![0u8; 4096];
        block[..8].copy_from_slice(MAGIC);
        block[8..12].copy_from_slice(&1u32.to_le_bytes());
        block[12..16].copy_from_slice(&5u32.to_le_bytes());
        block[16..21].copy_from_slice(b"{oops");
        assert!(matches!(decode(&block), Err(IdmError::LaunchJson(_))));
        // Valid JSON, invalid config.
        let json = br#"{"version":1,"zone_id":"","hostname":"h","root":{"format":"squashfs","size_bytes":512},"overlay_size_mib":1,"image":{}}"#;
        block[12..16].copy_from_slice(&(json.len() as u32).to_le_bytes());
        block[16..16 + json.len()].copy_from_slice(json);
        assert!(matches!(decode(&block), Err(IdmError::LaunchInvalid(m)) if m.contains("zone_id")));
    }
}
