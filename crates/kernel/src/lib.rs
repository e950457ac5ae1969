//! Guest kernel images, for every backend: a plain ELF or a bzImage whose payload is
//! decompressed to the ELF ([`bzimage`]: gzip, xz, zstd, lz4), parsed for PT_LOAD segments
//! and Xen notes ([`elf`], checked arithmetic on hostile bytes). Extraction is slow under TCG
//! (tens of seconds for xz), so [`KernelImage::load`] and [`cache_elf`] keep the extracted
//! ELF in a cache directory keyed by the input's SHA-256.
//!
//! Nothing here talks to a hypervisor: the Xen builder (`spore-xen`) loads a
//! [`KernelImage`]'s segments into a domain, and the QEMU backend boots the ELF file
//! [`cache_elf`] names.
//!
//! ```no_run
//! # fn main() -> Result<(), spore_kernel::KernelError> {
//! let dir = std::path::Path::new("/var/lib/spore/kernels");
//! let kernel = spore_kernel::KernelImage::load(std::path::Path::new("/boot/vmlinuz"), Some(dir))?;
//! println!("entry {:#x}, {} segments", kernel.info.entry, kernel.info.segments.len());
//! # Ok(()) }
//! ```

pub mod bzimage;
pub mod elf;
pub mod sys;
#[cfg(any(test, feature = "test-util"))]
pub mod test_util;

use std::borrow::Cow;
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

pub use bzimage::Compression;
pub use elf::{ElfKernel, Segment, XenNotes};

/// The crate's result type.
pub type Result<T, E = KernelError> = std::result::Result<T, E>;

/// Upper bound on a decompressed kernel (Debian's vmlinux is ~66 MB).
pub const MAX_KERNEL_SIZE: usize = 256 << 20;

/// A kernel image that could not be used: each variant but `Io` says what is wrong with the
/// file.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("{what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("not a bzImage (no HdrS setup header)")]
    NotBzImage,
    #[error("bzImage boot protocol {0:#x} is older than 2.08 and has no payload fields")]
    OldBootProtocol(u16),
    #[error("truncated {what}")]
    Truncated { what: &'static str },
    #[error("bzImage payload lies outside the file")]
    PayloadOutOfBounds,
    #[error(
        "unknown payload compression (magic {0:02x?}); supported: gzip, xz, zstd, lz4, plain ELF"
    )]
    UnknownCompression(Vec<u8>),
    #[error("{kind:?} payload does not decompress: {reason}")]
    Decompress { kind: Compression, reason: String },
    #[error("decompressed kernel exceeds {limit} bytes")]
    TooLarge { limit: usize },
    #[error("neither an ELF nor a bzImage")]
    UnknownFormat,
    #[error("invalid ELF: {0}")]
    BadElf(String),
    #[error("not an x86_64 little-endian ELF")]
    NotX86_64,
    #[error("no Xen ELF notes: the kernel was built without Xen PV support (CONFIG_XEN_PV)")]
    NoXenNotes,
    #[error("malformed Xen ELF note type {0}")]
    BadNote(u32),
    #[error("no PT_LOAD segments")]
    NoLoadSegments,
    #[error("a PT_LOAD segment lies outside the file")]
    SegmentOutOfBounds,
    #[error("a PT_LOAD segment's address overflows")]
    AddressOverflow,
    #[error("kernel image spans {0} bytes, more than 1 GiB")]
    ImageTooLarge(u64),
    #[error("entry point {0:#x} is outside the loaded image")]
    EntryOutsideImage(u64),
}

/// Returns the kernel ELF inside `data`: `data` itself if it is an ELF, the decompressed
/// payload if it is a bzImage.
pub fn extract_elf(data: &[u8]) -> Result<Cow<'_, [u8]>> {
    if data.starts_with(b"\x7fELF") {
        return Ok(Cow::Borrowed(data));
    }
    if bzimage::is_bzimage(data) {
        let payload = bzimage::payload(data)?;
        return Ok(Cow::Owned(bzimage::decompress(payload, MAX_KERNEL_SIZE)?));
    }
    Err(KernelError::UnknownFormat)
}

/// The kernel ELF's bytes: decompressed in memory, or a read-only mapping of an ELF file
/// (only the PT_LOAD parts are then ever read from disk, as the builder copies them).
#[derive(Debug)]
pub struct KernelBytes(Bytes);

#[derive(Debug)]
enum Bytes {
    Owned(Vec<u8>),
    Mapped(sys::Mmap),
}

impl std::ops::Deref for KernelBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match &self.0 {
            Bytes::Owned(v) => v,
            Bytes::Mapped(m) => m.as_slice(),
        }
    }
}

impl KernelBytes {
    /// Maps an ELF file read-only. The file must not be truncated while mapped (the kernel
    /// files are spore's own, under its state directory).
    fn map(path: &Path) -> Result<Self> {
        let io = |source| KernelError::Io {
            what: "mapping kernel",
            path: path.to_path_buf(),
            source,
        };
        let f = std::fs::File::open(path).map_err(io)?;
        let len = f.metadata().map_err(io)?.len() as usize;
        if len == 0 {
            return Ok(Self(Bytes::Owned(Vec::new())));
        }
        Ok(Self(Bytes::Mapped(
            sys::Mmap::file_readonly(&f, len).map_err(io)?,
        )))
    }
}

/// A kernel ready for the builder: the ELF bytes and what was parsed from them.
#[derive(Debug)]
pub struct KernelImage {
    pub elf: KernelBytes,
    pub info: ElfKernel,
}

impl KernelImage {
    /// Parses an ELF or bzImage held in memory.
    pub fn from_bytes(data: &[u8]) -> Result<Self> {
        let elf = extract_elf(data)?.into_owned();
        let info = elf::parse(&elf)?;
        Ok(Self {
            elf: KernelBytes(Bytes::Owned(elf)),
            info,
        })
    }

    fn from_mapped(elf: KernelBytes) -> Result<Self> {
        let info = elf::parse(&elf)?;
        Ok(Self { elf, info })
    }

    /// Loads a kernel file. With `cache_dir`, an extracted bzImage payload is stored there as
    /// `<sha256 of the file>.elf` and reused on the next load of the same file.
    pub fn load(path: &Path, cache_dir: Option<&Path>) -> Result<Self> {
        let data = KernelBytes::map(path)?;
        if data.starts_with(b"\x7fELF") {
            return Self::from_mapped(data);
        }
        let Some(dir) = cache_dir else {
            return Self::from_bytes(&data);
        };
        let cached = cached_elf_path(dir, &data);
        if let Ok(elf) = KernelBytes::map(&cached)
            && let Ok(image) = Self::from_mapped(elf)
        {
            return Ok(image);
        }
        // Parsed before it is cached, so a bad kernel leaves nothing behind; then mapped from
        // the cache: held in memory, the ELF (60+ MiB for Debian's) would stay anonymous
        // memory of the daemon for as long as the kernel is in use.
        write_atomic(&cached, &Self::from_bytes(&data)?.elf)?;
        Self::from_mapped(KernelBytes::map(&cached)?)
    }
}

/// The ELF file to boot for the kernel file `path`: `path` itself when it is an ELF, else the
/// payload of the bzImage, extracted into `cache_dir` (as [`KernelImage::load`] does) unless
/// it is there already. Callers serialise calls for one `cache_dir`.
pub fn cache_elf(path: &Path, cache_dir: &Path) -> Result<PathBuf> {
    let data = KernelBytes::map(path)?;
    if data.starts_with(b"\x7fELF") {
        return Ok(path.to_path_buf());
    }
    let cached = cached_elf_path(cache_dir, &data);
    if !cached.is_file() {
        write_atomic(&cached, &extract_elf(&data)?)?;
    }
    Ok(cached)
}

/// Where [`KernelImage::load`] caches the ELF extracted from `data`.
pub fn cached_elf_path(dir: &Path, data: &[u8]) -> PathBuf {
    dir.join(format!("{}.elf", hex::encode(Sha256::digest(data))))
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |what: &'static str, source| KernelError::Io {
        what,
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| io("creating the directory of", e))?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut f = std::fs::File::create(&tmp).map_err(|e| io("creating", e))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| io("writing", e))?;
    std::fs::rename(&tmp, path).map_err(|e| io("renaming into", e))
}

#[cfg(test)]
mod tests;
