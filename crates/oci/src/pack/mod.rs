//! Writing the merged tree as a root image: squashfs through backhand (default) or erofs through
//! `mkfs.erofs`.
//!
//! What no format here keeps: extended attributes (file capabilities such as `cap_net_raw` on
//! `ping`, SELinux labels). Such files keep their contents, owners and modes; the count of
//! dropped xattrs is returned so the caller can say so.
//!
//! Every root image written here satisfies [`attachable_size`]: the backends attach it as a
//! block device, which only takes whole sectors.

mod erofs;
mod squashfs;

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::digest::Digest;
use crate::error::{OciError, Result};
use crate::tree::Tree;

pub use erofs::erofs_available;

/// The sector size of the block devices root images are attached as (loop devices, Xen vbd,
/// virtio-blk): a device only has whole sectors.
pub const SECTOR_BYTES: u64 = 512;

/// What the writers pad every root image to: mksquashfs's default, erofs's block size, and a
/// multiple of [`SECTOR_BYTES`]. Both formats ignore bytes past their end.
pub const PAD_BYTES: u64 = 4096;

/// The one rule a root image file must meet to be attached: a positive multiple of
/// [`SECTOR_BYTES`]. Every image this crate writes meets it; the daemon checks it before a
/// launch (and the guest's launch config states the same rule).
pub fn attachable_size(size: u64) -> bool {
    size > 0 && size.is_multiple_of(SECTOR_BYTES)
}

/// Extends `file` with zeros to a multiple of [`PAD_BYTES`]; returns the new size.
pub(crate) fn pad(file: &File, path: &Path) -> Result<u64> {
    let len = file
        .metadata()
        .map_err(OciError::io("inspect root image", path))?
        .len();
    let padded = len.max(1).next_multiple_of(PAD_BYTES);
    if padded != len {
        file.set_len(padded)
            .map_err(OciError::io("pad root image", path))?;
    }
    Ok(padded)
}

/// The file system a root image is written in.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum ImageFormat {
    /// squashfs, zstd-compressed (backhand).
    #[default]
    Squashfs,
    /// erofs, lz4hc-compressed (`mkfs.erofs`; Debian 12's erofs-utils 1.5 has no zstd).
    Erofs,
}

impl ImageFormat {
    pub fn name(self) -> &'static str {
        match self {
            ImageFormat::Squashfs => "squashfs",
            ImageFormat::Erofs => "erofs",
        }
    }

    /// The file extension of root images in the store.
    pub fn extension(self) -> &'static str {
        self.name()
    }
}

impl std::fmt::Display for ImageFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How to write a root image.
#[derive(Debug, Clone)]
pub(crate) struct PackJob<'a> {
    pub tree: &'a Tree,
    /// Spool file `i` holds the contents of extents with `spool == i`.
    pub spools: &'a [PathBuf],
    pub format: ImageFormat,
    pub zstd_level: u32,
    pub manifest: &'a Digest,
    /// A scratch directory (erofs builds a staging tree there).
    pub scratch: &'a Path,
}

/// What packing reports back.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PackStats {
    pub entries: usize,
    pub dropped_xattrs: u64,
}

/// Writes the image to `out` (which the caller then fsyncs and renames into place).
pub(crate) fn pack(job: &PackJob<'_>, out: &Path) -> Result<PackStats> {
    let mut dropped_xattrs = 0u64;
    job.tree.walk(|_, n| dropped_xattrs += u64::from(n.xattrs));
    match job.format {
        ImageFormat::Squashfs => squashfs::write(job, out)?,
        ImageFormat::Erofs => erofs::write(job, out)?,
    }
    Ok(PackStats {
        entries: job.tree.len(),
        dropped_xattrs,
    })
}

/// Reads one extent of a spool file with positional reads, so thousands of files share one
/// open descriptor per spool.
pub(crate) struct ExtentReader {
    file: Arc<File>,
    pos: u64,
    end: u64,
}

impl ExtentReader {
    pub fn new(file: Arc<File>, offset: u64, len: u64) -> ExtentReader {
        ExtentReader {
            file,
            pos: offset,
            end: offset + len,
        }
    }
}

impl io::Read for ExtentReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = usize::try_from(self.end - self.pos)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "spool file shorter than its extents",
            ));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

/// Opens every spool file once.
pub(crate) fn open_spools(spools: &[PathBuf]) -> Result<Vec<Arc<File>>> {
    spools
        .iter()
        .map(|p| {
            File::open(p)
                .map(Arc::new)
                .map_err(crate::OciError::io("open spool file", p))
        })
        .collect()
}

/// mtime as squashfs and erofs store it: seconds in `u32`.
pub(crate) fn mtime32(mtime: i64) -> u32 {
    u32::try_from(mtime.max(0)).unwrap_or(u32::MAX)
}
