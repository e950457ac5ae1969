//! Reading one layer blob: decompress (gzip, zstd or none, sniffed from the bytes, not trusted
//! from the media type), walk the tar, copy file contents to a spool file, and return the entries
//! as [`Op`]s for [`crate::tree::Tree::apply`].
//!
//! Each layer is read on its own blocking thread and into its own spool file, so layers
//! decompress in parallel while the merge itself stays in layer order.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::digest::Digest;
use crate::error::{OciError, Result};
use crate::tree::{Extent, Meta, Op, OpKind};

/// Longest symlink target accepted (Linux PATH_MAX).
const MAX_LINK_TARGET: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compression {
    None,
    Gzip,
    Zstd,
}

pub(crate) fn sniff(head: &[u8]) -> Compression {
    match head {
        [0x1f, 0x8b, ..] => Compression::Gzip,
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Compression::Zstd,
        _ => Compression::None,
    }
}

/// Counts compressed bytes read, for progress.
struct Counting<R> {
    inner: R,
    count: u64,
    report: Box<dyn FnMut(u64) + Send>,
    last: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        if self.count - self.last >= 1 << 20 || n == 0 {
            self.last = self.count;
            (self.report)(self.count);
        }
        Ok(n)
    }
}

/// Bounds shared by the layers of one image.
pub(crate) struct Limits<'a> {
    /// Content bytes unpacked so far, by all layers.
    pub budget: &'a AtomicU64,
    pub max_bytes: u64,
    pub max_entries: usize,
}

/// What reading one layer produced.
#[derive(Debug)]
pub(crate) struct LayerEntries {
    pub ops: Vec<Op>,
}

/// Reads the layer blob at `blob` into entries, writing file contents to `spool` (which becomes
/// spool number `spool_index`). `budget` is the number of content bytes the whole image may
/// still unpack to; `max_entries` bounds the entries of this layer.
pub(crate) fn read_layer(
    blob: &Path,
    digest: &Digest,
    spool: (u32, &Path),
    limits: &Limits<'_>,
    report: Box<dyn FnMut(u64) + Send>,
) -> Result<LayerEntries> {
    let (spool_index, spool) = spool;
    let file = File::open(blob).map_err(OciError::io("open layer blob", blob))?;
    let mut input = BufReader::with_capacity(
        256 << 10,
        Counting {
            inner: file,
            count: 0,
            report,
            last: 0,
        },
    );
    let head = io::BufRead::fill_buf(&mut input).map_err(OciError::io("read layer blob", blob))?;
    let reader: Box<dyn Read> = match sniff(head) {
        Compression::None => Box::new(input),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(input)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(input).map_err(
            |source| OciError::LayerArchive {
                digest: digest.clone(),
                source,
            },
        )?),
    };
    let out = File::create(spool).map_err(OciError::io("create spool file", spool))?;
    let mut out = BufWriter::with_capacity(1 << 20, out);
    let ops = walk_tar(
        reader,
        digest,
        spool_index,
        &mut out,
        limits.budget,
        limits.max_bytes,
        limits.max_entries,
    )?;
    out.flush()
        .map_err(OciError::io("write spool file", spool))?;
    Ok(LayerEntries { ops })
}

fn archive_err(digest: &Digest) -> impl Fn(io::Error) -> OciError + '_ {
    move |source| OciError::LayerArchive {
        digest: digest.clone(),
        source,
    }
}

/// Walks a (decompressed) tar stream. Separate from [`read_layer`] so tests can feed raw tars.
pub(crate) fn walk_tar(
    reader: impl Read,
    digest: &Digest,
    spool_index: u32,
    spool: &mut impl Write,
    budget: &AtomicU64,
    budget_limit: u64,
    max_entries: usize,
) -> Result<Vec<Op>> {
    let mut archive = tar::Archive::new(reader);
    let mut ops = Vec::new();
    let mut offset = 0u64;
    for entry in archive.entries().map_err(archive_err(digest))? {
        let mut entry = entry.map_err(archive_err(digest))?;
        if ops.len() >= max_entries {
            return Err(OciError::Entry {
                digest: digest.clone(),
                entry: String::new(),
                problem: crate::tree::EntryProblem::TooManyEntries(max_entries),
            });
        }
        let path = entry.path_bytes().into_owned();
        let name = || String::from_utf8_lossy(&path).into_owned();
        let header = entry.header();
        // Like Go's archive/tar (which wrote most images), an empty numeric field reads as 0.
        let old = header.as_old();
        let mode =
            blank_is_zero(&old.mode, header.mode().map(u64::from)).map_err(archive_err(digest))?;
        let uid = blank_is_zero(&old.uid, header.uid()).map_err(archive_err(digest))?;
        let gid = blank_is_zero(&old.gid, header.gid()).map_err(archive_err(digest))?;
        let mtime = blank_is_zero(&old.mtime, header.mtime()).map_err(archive_err(digest))?;
        let mut meta = Meta {
            mode: (mode & 0o7777) as u32,
            uid: clamp_id(uid),
            gid: clamp_id(gid),
            mtime: i64::try_from(mtime).unwrap_or(i64::MAX),
        };
        let entry_type = header.entry_type();
        let device = |h: &tar::Header| -> Result<(u32, u32)> {
            let major = h.device_major().map_err(archive_err(digest))?.unwrap_or(0);
            let minor = h.device_minor().map_err(archive_err(digest))?.unwrap_or(0);
            Ok((major, minor))
        };
        let kind = match entry_type {
            tar::EntryType::Regular | tar::EntryType::Continuous => OpKind::File(Extent {
                spool: spool_index,
                offset,
                len: 0,
            }),
            tar::EntryType::Directory => OpKind::Dir,
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .map(|c| c.into_owned())
                    .unwrap_or_default();
                if target.is_empty() || target.len() > MAX_LINK_TARGET {
                    return Err(OciError::Entry {
                        digest: digest.clone(),
                        entry: name(),
                        problem: crate::tree::EntryProblem::PathTooLong,
                    });
                }
                if entry_type == tar::EntryType::Symlink {
                    OpKind::Symlink(target)
                } else {
                    OpKind::Hardlink(target)
                }
            }
            tar::EntryType::Char => {
                let (major, minor) = device(header)?;
                OpKind::CharDevice { major, minor }
            }
            tar::EntryType::Block => {
                let (major, minor) = device(header)?;
                OpKind::BlockDevice { major, minor }
            }
            tar::EntryType::Fifo => OpKind::Fifo,
            // Headers the tar crate already folded into the next entry.
            tar::EntryType::XGlobalHeader => continue,
            other => {
                return Err(OciError::UnsupportedEntry {
                    digest: digest.clone(),
                    entry: name(),
                    kind: other.as_byte() as char,
                });
            }
        };
        let mut xattrs = 0u32;
        if let Some(pax) = entry.pax_extensions().map_err(archive_err(digest))? {
            for ext in pax {
                let ext = ext.map_err(archive_err(digest))?;
                let (key, value) = (ext.key_bytes(), ext.value_bytes());
                let number = || {
                    std::str::from_utf8(value)
                        .ok()
                        .and_then(|v| v.split('.').next()?.parse::<u64>().ok())
                };
                match key {
                    b"uid" => meta.uid = number().map_or(meta.uid, clamp_id),
                    b"gid" => meta.gid = number().map_or(meta.gid, clamp_id),
                    b"mtime" => {
                        meta.mtime =
                            number().map_or(meta.mtime, |n| i64::try_from(n).unwrap_or(i64::MAX))
                    }
                    k if k.starts_with(b"SCHILY.xattr.") => xattrs = xattrs.saturating_add(1),
                    _ => {}
                }
            }
        }
        let kind = match kind {
            OpKind::File(mut extent) => {
                let size = entry.size();
                let before = budget.fetch_add(size, Ordering::Relaxed);
                if before.saturating_add(size) > budget_limit {
                    return Err(OciError::UnpackedTooLarge {
                        limit: budget_limit,
                    });
                }
                let copied = io::copy(&mut entry, spool).map_err(archive_err(digest))?;
                extent.len = copied;
                offset += copied;
                OpKind::File(extent)
            }
            k => k,
        };
        ops.push(Op {
            path,
            meta,
            kind,
            xattrs,
        });
    }
    Ok(ops)
}

fn blank_is_zero(field: &[u8], parsed: io::Result<u64>) -> io::Result<u64> {
    match parsed {
        Err(_) if field.iter().all(|&b| b == 0 || b == b' ') => Ok(0),
        r => r,
    }
}

fn clamp_id(id: u64) -> u32 {
    // Ids above u32 cannot exist on Linux; map them to nobody rather than wrapping.
    u32::try_from(id).unwrap_or(65534)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::EntryProblem;

    fn digest() -> Digest {
        Digest::sha256_of(b"layer")
    }

    fn walk(bytes: &[u8]) -> Result<(Vec<Op>, Vec<u8>)> {
        let mut spool = Vec::new();
        let budget = AtomicU64::new(0);
        let ops = walk_tar(bytes, &digest(), 3, &mut spool, &budget, 1 << 20, 100)?;
        Ok((ops, spool))
    }

    fn header(path: &str, kind: tar::EntryType, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_path(path).unwrap();
        h.set_size(size);
        h.set_mode(0o4755);
        h.set_uid(7);
        h.set_gid(8);
        h.set_mtime(1234);
        h.set_cksum();
        h
    }

    #[test]
    fn reads_every_kind_of_entry() {
        let mut b = tar::Builder::new(Vec::new());
        b.append(&header("a/file", tar::EntryType::Regular, 5), &b"hello"[..])
            .unwrap();
        b.append(&header("a/", tar::EntryType::Directory, 0), &[][..])
            .unwrap();
        let mut h = header("a/link", tar::EntryType::Symlink, 0);
        h.set_link_name("file").unwrap();
        h.set_cksum();
        b.append(&h, &[][..]).unwrap();
        let mut h = header("a/hard", tar::EntryType::Link, 0);
        h.set_link_name("a/file").unwrap();
        h.set_cksum();
        b.append(&h, &[][..]).unwrap();
        let mut h = header("dev/null", tar::EntryType::Char, 0);
        h.set_device_major(1).unwrap();
        h.set_device_minor(3).unwrap();
        h.set_cksum();
        b.append(&h, &[][..]).unwrap();
        b.append(&header("fifo", tar::EntryType::Fifo, 0), &[][..])
            .unwrap();
        b.append(&header("b/second", tar::EntryType::Regular, 3), &b"abc"[..])
            .unwrap();
        let (ops, spool) = walk(&b.into_inner().unwrap()).unwrap();
        assert_eq!(spool, b"helloabc");
        let m = Meta {
            mode: 0o4755,
            uid: 7,
            gid: 8,
            mtime: 1234,
        };
        let kinds: Vec<(&[u8], &OpKind)> =
            ops.iter().map(|o| (o.path.as_slice(), &o.kind)).collect();
        assert_eq!(
            kinds,
            vec![
                (
                    &b"a/file"[..],
                    &OpKind::File(Extent {
                        spool: 3,
                        offset: 0,
                        len: 5
                    })
                ),
                (b"a/", &OpKind::Dir),
                (b"a/link", &OpKind::Symlink(b"file".to_vec())),
                (b"a/hard", &OpKind::Hardlink(b"a/file".to_vec())),
                (b"dev/null", &OpKind::CharDevice { major: 1, minor: 3 }),
                (b"fifo", &OpKind::Fifo),
                (
                    b"b/second",
                    &OpKind::File(Extent {
                        spool: 3,
                        offset: 5,
                        len: 3
                    })
                ),
            ]
        );
        assert!(ops.iter().all(|o| o.meta == m));
    }

    #[test]
    fn long_names_and_pax_ids() {
        let mut b = tar::Builder::new(Vec::new());
        let long = format!("{}/f", "d".repeat(200));
        let mut h = tar::Header::new_gnu();
        h.set_size(0);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, &long, &[][..]).unwrap();
        let pax = [
            ("uid", &b"100000"[..]),
            ("gid", b"200000"),
            ("mtime", b"99.5"),
            ("SCHILY.xattr.security.capability", b"\x01"),
        ];
        b.append_pax_extensions(pax).unwrap();
        b.append(&header("x", tar::EntryType::Regular, 0), &[][..])
            .unwrap();
        let (ops, _) = walk(&b.into_inner().unwrap()).unwrap();
        assert_eq!(ops[0].path, long.as_bytes());
        assert_eq!(
            (
                ops[1].meta.uid,
                ops[1].meta.gid,
                ops[1].meta.mtime,
                ops[1].xattrs
            ),
            (100000, 200000, 99, 1)
        );
    }

    #[test]
    fn hostile_archives_give_exact_errors() {
        // Garbage is not a tar.
        let e = walk(&[0x55; 1024]).unwrap_err();
        assert!(matches!(e, OciError::LayerArchive { .. }), "{e}");
        // A truncated entry body.
        let mut b = tar::Builder::new(Vec::new());
        b.append(
            &header("f", tar::EntryType::Regular, 4000),
            &[0u8; 4000][..],
        )
        .unwrap();
        let bytes = b.into_inner().unwrap();
        let e = walk(&bytes[..1500]).unwrap_err();
        assert!(matches!(e, OciError::LayerArchive { .. }), "{e}");
        // Unsupported entry types are named.
        let mut b = tar::Builder::new(Vec::new());
        b.append(&header("vol", tar::EntryType::new(b'V'), 0), &[][..])
            .unwrap();
        let e = walk(&b.into_inner().unwrap()).unwrap_err();
        assert!(
            matches!(&e, OciError::UnsupportedEntry { entry, kind: 'V', .. } if entry == "vol"),
            "{e}"
        );
        // A symlink without a target.
        let mut b = tar::Builder::new(Vec::new());
        b.append(&header("l", tar::EntryType::Symlink, 0), &[][..])
            .unwrap();
        let e = walk(&b.into_inner().unwrap()).unwrap_err();
        assert!(
            matches!(
                &e,
                OciError::Entry {
                    problem: EntryProblem::PathTooLong,
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn limits_on_size_and_entry_count() {
        let mut b = tar::Builder::new(Vec::new());
        for i in 0..3 {
            b.append(
                &header(&format!("f{i}"), tar::EntryType::Regular, 600),
                &[1u8; 600][..],
            )
            .unwrap();
        }
        let bytes = b.into_inner().unwrap();
        let budget = AtomicU64::new(0);
        let e = walk_tar(
            &bytes[..],
            &digest(),
            0,
            &mut Vec::new(),
            &budget,
            1000,
            100,
        )
        .unwrap_err();
        assert!(
            matches!(e, OciError::UnpackedTooLarge { limit: 1000 }),
            "{e}"
        );
        let budget = AtomicU64::new(0);
        let e = walk_tar(
            &bytes[..],
            &digest(),
            0,
            &mut Vec::new(),
            &budget,
            1 << 20,
            2,
        )
        .unwrap_err();
        assert!(
            matches!(
                e,
                OciError::Entry {
                    problem: EntryProblem::TooManyEntries(2),
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn sniffs_compression() {
        assert_eq!(sniff(&[0x1f, 0x8b, 8]), Compression::Gzip);
        assert_eq!(sniff(&[0x28, 0xb5, 0x2f, 0xfd]), Compression::Zstd);
        assert_eq!(sniff(b"usr/"), Compression::None);
        assert_eq!(sniff(&[]), Compression::None);
    }
}
