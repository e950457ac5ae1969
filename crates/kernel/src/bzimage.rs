//! x86 bzImage: find the compressed payload through the boot protocol's setup header
//! (Linux `Documentation/arch/x86/boot.rst`) and decompress it, bounded.

use std::io::Read;

use super::KernelError;

/// Offset of `setup_sects` in the boot sector.
pub(crate) const SETUP_SECTS: usize = 0x1f1;
/// Offset of the `HdrS` magic.
pub(crate) const HEADER_MAGIC: usize = 0x202;
/// Offset of the boot protocol version.
pub(crate) const VERSION: usize = 0x206;
/// Offset of `payload_offset` (protocol 2.08+), relative to the protected-mode code.
pub(crate) const PAYLOAD_OFFSET: usize = 0x248;
/// Offset of `payload_length`.
pub(crate) const PAYLOAD_LENGTH: usize = 0x24c;

/// The compression of a bzImage payload, from its magic bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    Xz,
    Zstd,
    Lz4Legacy,
    /// Payload is an uncompressed ELF.
    None,
}

/// Identifies a payload's compression from its first bytes.
pub fn detect(payload: &[u8]) -> Option<Compression> {
    if payload.starts_with(&[0x1f, 0x8b]) {
        Some(Compression::Gzip)
    } else if payload.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Some(Compression::Xz)
    } else if payload.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Some(Compression::Zstd)
    } else if payload.starts_with(&[0x02, 0x21, 0x4c, 0x18]) {
        Some(Compression::Lz4Legacy)
    } else if payload.starts_with(b"\x7fELF") {
        Some(Compression::None)
    } else {
        None
    }
}

/// True if `data` carries the bzImage setup header.
pub fn is_bzimage(data: &[u8]) -> bool {
    data.get(HEADER_MAGIC..HEADER_MAGIC + 4) == Some(b"HdrS")
}

fn u32_at(d: &[u8], off: usize) -> Result<u32, KernelError> {
    d.get(off..off + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or(KernelError::Truncated {
            what: "setup header",
        })
}

/// The compressed payload inside a bzImage.
pub fn payload(data: &[u8]) -> Result<&[u8], KernelError> {
    if !is_bzimage(data) {
        return Err(KernelError::NotBzImage);
    }
    let version = data
        .get(VERSION..VERSION + 2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .ok_or(KernelError::Truncated {
            what: "setup header",
        })?;
    if version < 0x0208 {
        return Err(KernelError::OldBootProtocol(version));
    }
    let sects = match *data.get(SETUP_SECTS).ok_or(KernelError::Truncated {
        what: "setup header",
    })? {
        0 => 4,
        n => n as usize,
    };
    let pm_start = (sects + 1) * 512;
    let off = u32_at(data, PAYLOAD_OFFSET)? as usize;
    let len = u32_at(data, PAYLOAD_LENGTH)? as usize;
    let start = pm_start
        .checked_add(off)
        .ok_or(KernelError::PayloadOutOfBounds)?;
    let end = start
        .checked_add(len)
        .ok_or(KernelError::PayloadOutOfBounds)?;
    data.get(start..end).ok_or(KernelError::PayloadOutOfBounds)
}

/// Decompresses `payload` into at most `max_out` bytes.
pub fn decompress(payload: &[u8], max_out: usize) -> Result<Vec<u8>, KernelError> {
    let kind = detect(payload).ok_or_else(|| {
        KernelError::UnknownCompression(payload.iter().take(4).copied().collect())
    })?;
    let limit = max_out as u64 + 1;
    let mut out = Vec::new();
    let res = match kind {
        Compression::None => {
            out.extend_from_slice(payload);
            Ok(())
        }
        Compression::Gzip => flate2::read::GzDecoder::new(payload)
            .take(limit)
            .read_to_end(&mut out)
            .map(drop),
        Compression::Xz => return xz_single_stream(payload, max_out),
        Compression::Zstd => zstd::stream::read::Decoder::new(payload)
            .and_then(|d| d.single_frame().take(limit).read_to_end(&mut out))
            .map(drop),
        Compression::Lz4Legacy => return lz4_legacy(payload, max_out),
    };
    // Each decoder reads exactly one stream/frame/member: the kernel build appends the
    // uncompressed size after it, which must not be parsed as a second stream.
    if let Err(e) = res {
        return Err(KernelError::Decompress {
            kind,
            reason: e.to_string(),
        });
    }
    if out.len() > max_out {
        return Err(KernelError::TooLarge { limit: max_out });
    }
    Ok(out)
}

/// One xz stream, stopping at its end: xz2's reader treats the size word the kernel build
/// appends after the stream as a corrupt second stream.
fn xz_single_stream(payload: &[u8], max_out: usize) -> Result<Vec<u8>, KernelError> {
    use xz2::stream::{Action, Status, Stream};
    let err = |reason: String| KernelError::Decompress {
        kind: Compression::Xz,
        reason,
    };
    let mut stream = Stream::new_stream_decoder(u64::MAX, 0).map_err(|e| err(e.to_string()))?;
    let mut out: Vec<u8> = Vec::with_capacity(payload.len().saturating_mul(4).min(max_out));
    loop {
        if out.len() == out.capacity() {
            if out.len() >= max_out {
                return Err(KernelError::TooLarge { limit: max_out });
            }
            out.reserve((out.len().max(1 << 20)).min(max_out - out.len() + 1));
        }
        let consumed = stream.total_in() as usize;
        let input = payload.get(consumed..).unwrap_or_default();
        let before = (stream.total_in(), stream.total_out());
        let status = stream
            .process_vec(input, &mut out, Action::Run)
            .map_err(|e| err(e.to_string()))?;
        if out.len() > max_out {
            return Err(KernelError::TooLarge { limit: max_out });
        }
        match status {
            Status::StreamEnd => return Ok(out),
            _ if (stream.total_in(), stream.total_out()) == before
                && out.len() < out.capacity() =>
            {
                return Err(err("stream ends before its end marker".into()));
            }
            _ => {}
        }
    }
}

/// The kernel's "legacy" lz4 format: magic 0x184c2102, then blocks of
/// `u32 compressed length` + data, each decompressing to at most 8 MiB; a length equal to the
/// magic starts a new stream, and the trailing uncompressed size ends it.
fn lz4_legacy(payload: &[u8], max_out: usize) -> Result<Vec<u8>, KernelError> {
    const MAGIC: u32 = 0x184c_2102;
    const BLOCK_MAX: usize = 8 << 20;
    let bad = |reason: &str| KernelError::Decompress {
        kind: Compression::Lz4Legacy,
        reason: reason.to_string(),
    };
    let mut out = Vec::new();
    let mut pos = 4;
    let mut block = vec![0u8; BLOCK_MAX];
    while let Some(b) = payload.get(pos..pos + 4) {
        let len = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        pos += 4;
        if len == MAGIC {
            continue;
        }
        let len = len as usize;
        let Some(data) = payload.get(pos..pos.saturating_add(len)) else {
            // The final u32 is the total uncompressed size, not a block.
            if !out.is_empty() {
                break;
            }
            return Err(bad("block past end of payload"));
        };
        if len > lz4_flex::block::get_maximum_output_size(BLOCK_MAX) {
            if !out.is_empty() {
                break;
            }
            return Err(bad("block larger than the format allows"));
        }
        let n =
            lz4_flex::block::decompress_into(data, &mut block).map_err(|e| bad(&e.to_string()))?;
        if out.len() + n > max_out {
            return Err(KernelError::TooLarge { limit: max_out });
        }
        out.extend_from_slice(&block[..n]);
        pos += len;
    }
    if out.is_empty() {
        return Err(bad("no blocks"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::make_bzimage;
    use std::io::Write;

    fn data() -> Vec<u8> {
        let mut d = b"\x7fELF".to_vec();
        d.extend((0..100_000u32).map(|i| (i % 251) as u8));
        d
    }

    #[test]
    fn extracts_each_compression() {
        let d = data();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&d).unwrap();
        let gz = gz.finish().unwrap();
        let mut xz = xz2::write::XzEncoder::new(Vec::new(), 1);
        xz.write_all(&d).unwrap();
        let xz = xz.finish().unwrap();
        let zs = zstd::encode_all(&d[..], 3).unwrap();
        let mut lz = 0x184c_2102u32.to_le_bytes().to_vec();
        let block = lz4_flex::block::compress(&d);
        lz.extend_from_slice(&(block.len() as u32).to_le_bytes());
        lz.extend_from_slice(&block);
        lz.extend_from_slice(&(d.len() as u32).to_le_bytes());
        for (name, p) in [("gzip", gz), ("xz", xz), ("zstd", zs), ("lz4", lz)] {
            let img = make_bzimage(&p);
            let got = decompress(payload(&img).unwrap(), 1 << 20).unwrap();
            assert_eq!(got, d, "{name}");
        }
    }

    #[test]
    fn hostile_headers() {
        assert!(matches!(payload(b"short"), Err(KernelError::NotBzImage)));
        let mut img = make_bzimage(b"\x1f\x8babc");
        img[PAYLOAD_LENGTH..PAYLOAD_LENGTH + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            payload(&img),
            Err(KernelError::PayloadOutOfBounds)
        ));
        let mut img = make_bzimage(b"x");
        img[PAYLOAD_OFFSET..PAYLOAD_OFFSET + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            payload(&img),
            Err(KernelError::PayloadOutOfBounds)
        ));
        let mut img = make_bzimage(b"x");
        img[VERSION..VERSION + 2].copy_from_slice(&0x0204u16.to_le_bytes());
        assert!(matches!(
            payload(&img),
            Err(KernelError::OldBootProtocol(0x0204))
        ));
        let mut img = make_bzimage(b"x");
        img.truncate(0x250);
        img[PAYLOAD_LENGTH - 4..].fill(0);
        assert!(payload(&img).is_err());
    }

    #[test]
    fn hostile_payloads() {
        assert!(matches!(
            decompress(b"\x00\x01\x02\x03junk", 100),
            Err(KernelError::UnknownCompression(m)) if m == [0, 1, 2, 3]
        ));
        assert!(matches!(
            decompress(b"\x1f\x8b\x08\x00garbage", 100),
            Err(KernelError::Decompress {
                kind: Compression::Gzip,
                ..
            })
        ));
        assert!(matches!(
            decompress(b"\xfd7zXZ\x00broken", 100),
            Err(KernelError::Decompress {
                kind: Compression::Xz,
                ..
            })
        ));
        let mut lz = 0x184c_2102u32.to_le_bytes().to_vec();
        lz.extend_from_slice(&1000u32.to_le_bytes());
        lz.extend_from_slice(b"\xff\xff");
        assert!(matches!(
            decompress(&lz, 100),
            Err(KernelError::Decompress {
                kind: Compression::Lz4Legacy,
                ..
            })
        ));
        // A decompression bomb is cut at the limit.
        let zeros = vec![0u8; 4 << 20];
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&zeros).unwrap();
        let gz = gz.finish().unwrap();
        assert!(matches!(
            decompress(&gz, 1 << 20),
            Err(KernelError::TooLarge { limit: 1048576 })
        ));
    }
}
