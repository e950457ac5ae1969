//! squashfs through backhand.
//!
//! backhand has no hard-link API: every hard link becomes its own inode (link count 1). Its data
//! blocks are shared, because backhand stores identical file contents once. The root directory
//! gets the image's `./` metadata, or 0755 root:root (backhand's default would be 000).
//!
//! backhand leaves the file longer than the image when the last data it wrote duplicated
//! earlier data (a hard link's or a copy's contents): it seeks back over the duplicate, writes
//! the smaller tables there, and never truncates. The file is cut to the length backhand
//! reports and padded to [`super::PAD_BYTES`].

use std::ffi::OsStr;
use std::fs::File;
use std::io::BufWriter;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use backhand::compression::{CompressionOptions, Compressor, Zstd};
use backhand::{FilesystemCompressor, FilesystemWriter, NodeHeader};

use super::{ExtentReader, PAD_BYTES, PackJob, mtime32, open_spools, pad};
use crate::error::{OciError, Result};
use crate::tree::Kind;

/// squashfs data block size: the kernel's and mksquashfs's default.
const BLOCK_SIZE: u32 = 128 * 1024;

/// Linux's `new_encode_dev`, the form squashfs stores device numbers in.
fn encode_dev(major: u32, minor: u32) -> u32 {
    (minor & 0xff) | ((major & 0xfff) << 8) | ((minor & !0xff) << 12)
}

pub(super) fn write(job: &PackJob<'_>, out: &Path) -> Result<()> {
    let err = |source: Box<dyn std::error::Error + Send + Sync>| OciError::Pack {
        format: "squashfs",
        manifest: job.manifest.clone(),
        source,
    };
    let spools = open_spools(job.spools)?;
    let mut fs = FilesystemWriter::default();
    fs.set_block_size(BLOCK_SIZE);
    fs.set_time(0);
    let options = CompressionOptions::Zstd(Zstd {
        compression_level: job.zstd_level,
    });
    let compressor =
        FilesystemCompressor::new(Compressor::Zstd, Some(options)).map_err(|e| err(e.into()))?;
    fs.set_compressor(compressor);
    fs.set_emit_compression_options(true);
    fs.set_kib_padding((PAD_BYTES / 1024) as u32);

    let mut failure: Option<backhand::BackhandError> = None;
    job.tree.walk(|path, node| {
        if failure.is_some() {
            return;
        }
        let m = node.meta;
        if path.is_empty() {
            fs.set_root_mode(m.mode as u16);
            fs.set_root_uid(m.uid);
            fs.set_root_gid(m.gid);
            return;
        }
        let header = NodeHeader::new(m.mode as u16, m.uid, m.gid, mtime32(m.mtime));
        let path = Path::new(OsStr::from_bytes(path));
        let result = match &node.kind {
            Kind::Dir(_) => fs.push_dir(path, header),
            Kind::File { data, .. } => {
                let reader =
                    ExtentReader::new(spools[data.spool as usize].clone(), data.offset, data.len);
                fs.push_file(reader, path, header)
            }
            Kind::Symlink(target) => {
                fs.push_symlink(Path::new(OsStr::from_bytes(target)), path, header)
            }
            Kind::CharDevice { major, minor } => {
                fs.push_char_device(encode_dev(*major, *minor), path, header)
            }
            Kind::BlockDevice { major, minor } => {
                fs.push_block_device(encode_dev(*major, *minor), path, header)
            }
            Kind::Fifo => fs.push_fifo(path, header),
        };
        if let Err(e) = result {
            failure = Some(e);
        }
    });
    if let Some(e) = failure {
        return Err(err(e.into()));
    }
    let file = File::create(out).map_err(OciError::io("create root image", out))?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let (_, written) = fs.write(&mut w).map_err(|e| err(e.into()))?;
    let file = w
        .into_inner()
        .map_err(|e| OciError::io("write root image", out)(e.into_error()))?;
    file.set_len(written)
        .map_err(OciError::io("truncate root image", out))?;
    pad(&file, out)?;
    file.sync_all()
        .map_err(OciError::io("sync root image", out))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn device_numbers_use_the_kernel_encoding() {
        assert_eq!(super::encode_dev(1, 3), 0x103);
        assert_eq!(
            super::encode_dev(8, 0x1234),
            0x34 | (8 << 8) | (0x1200 << 12)
        );
    }
}
