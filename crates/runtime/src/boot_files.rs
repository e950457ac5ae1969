//! Guest kernels and initrds, loaded once per file version and shared by every zone that
//! boots them, for both backends. A bzImage's payload is extracted once into the kernel cache
//! (`<sha256>.elf`, by `spore_kernel`): the Xen builder maps that ELF and loads its segments,
//! QEMU boots the file.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use spore_kernel::{KernelError, KernelImage};

use crate::sync::lock;

/// Identifies one version of a file: a replaced or rewritten file is loaded again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
}

impl FileId {
    pub fn of(path: &Path) -> std::io::Result<FileId> {
        let m = std::fs::metadata(path)?;
        Ok(FileId {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        })
    }
}

/// Why a kernel or initrd could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum BootFileError {
    #[error("{path} is not readable")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("kernel {path} is not bootable")]
    Kernel {
        path: PathBuf,
        #[source]
        source: KernelError,
    },
}

impl BootFileError {
    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BootFileError {
        let path = path.to_path_buf();
        move |source| BootFileError::Io { path, source }
    }

    fn kernel(path: &Path) -> impl FnOnce(KernelError) -> BootFileError {
        let path = path.to_path_buf();
        move |source| BootFileError::Kernel { path, source }
    }
}

/// Loaded files by path, each with the version it was loaded from.
type Loaded<T> = Mutex<HashMap<PathBuf, (FileId, T)>>;

/// Kernels and initrds by path, with the kernel cache directory.
#[derive(Debug)]
pub struct BootFiles {
    cache_dir: PathBuf,
    /// Parsed and mapped, for the Xen builder.
    kernels: Loaded<Arc<KernelImage>>,
    /// The ELF file to boot, for QEMU.
    elfs: Loaded<PathBuf>,
    initrds: Loaded<Arc<Vec<u8>>>,
    /// One kernel load at a time: extracting a bzImage takes seconds of CPU, and two zones
    /// launched together need it once.
    loading: Mutex<()>,
}

/// Where a backend keeps derived kernel files by default: `<state>/kernels`, beside its zones
/// root `<state>/zones`.
pub fn default_cache_dir(zones_root: &Path) -> PathBuf {
    zones_root
        .parent()
        .unwrap_or(Path::new("/"))
        .join("kernels")
}

impl BootFiles {
    pub fn new(cache_dir: PathBuf) -> BootFiles {
        BootFiles {
            cache_dir,
            kernels: Mutex::default(),
            elfs: Mutex::default(),
            initrds: Mutex::default(),
            loading: Mutex::default(),
        }
    }

    /// The kernel at `path`, parsed and mapped (blocking).
    pub fn kernel(&self, path: &Path) -> Result<Arc<KernelImage>, BootFileError> {
        let _one = lock(&self.loading);
        load(&self.kernels, path, |p| {
            KernelImage::load(p, Some(&self.cache_dir))
                .map(Arc::new)
                .map_err(BootFileError::kernel(p))
        })
    }

    /// The ELF file to boot for the kernel at `path`: the file itself when it is an ELF,
    /// else its payload extracted into the cache (blocking: may hash and decompress it).
    pub fn kernel_elf(&self, path: &Path) -> Result<PathBuf, BootFileError> {
        let _one = lock(&self.loading);
        let elf = load(&self.elfs, path, |p| {
            spore_kernel::cache_elf(p, &self.cache_dir).map_err(BootFileError::kernel(p))
        })?;
        if elf.is_file() {
            return Ok(elf);
        }
        // The cached ELF was removed behind our back: extract it again.
        lock(&self.elfs).remove(path);
        load(&self.elfs, path, |p| {
            spore_kernel::cache_elf(p, &self.cache_dir).map_err(BootFileError::kernel(p))
        })
    }

    /// The initrd at `path` (blocking).
    pub fn initrd(&self, path: &Path) -> Result<Arc<Vec<u8>>, BootFileError> {
        load(&self.initrds, path, |p| {
            std::fs::read(p).map(Arc::new).map_err(BootFileError::io(p))
        })
    }
}

/// The entry for `path` if it was loaded from the file's current version, else `read`'s.
fn load<T: Clone>(
    loaded: &Loaded<T>,
    path: &Path,
    read: impl FnOnce(&Path) -> Result<T, BootFileError>,
) -> Result<T, BootFileError> {
    let id = FileId::of(path).map_err(BootFileError::io(path))?;
    if let Some((known, value)) = lock(loaded).get(path)
        && *known == id
    {
        return Ok(value.clone());
    }
    let value = read(path)?;
    lock(loaded).insert(path.to_path_buf(), (id, value.clone()));
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_initrd_is_read_once_per_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("initrd");
        std::fs::write(&path, b"first").unwrap();
        let files = BootFiles::new(dir.path().join("kernels"));
        let a = files.initrd(&path).unwrap();
        let b = files.initrd(&path).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        // A new file in its place (new inode) is read again.
        let tmp = dir.path().join("initrd.new");
        std::fs::write(&tmp, b"second!").unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        assert_eq!(files.initrd(&path).unwrap().as_slice(), b"second!");
        assert!(matches!(
            files.initrd(&dir.path().join("missing")),
            Err(BootFileError::Io { .. })
        ));
    }

    #[test]
    fn a_file_that_is_no_kernel_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kernel");
        std::fs::write(&path, vec![0x42; 4096]).unwrap();
        let files = BootFiles::new(dir.path().join("kernels"));
        match files.kernel(&path) {
            Err(e @ BootFileError::Kernel { .. }) => {
                let BootFileError::Kernel { path: p, .. } = &e else {
                    unreachable!()
                };
                assert_eq!(*p, path);
                assert!(e.to_string().contains("kernel"), "{e}");
            }
            other => panic!("expected a kernel error, got {other:?}"),
        }
    }

    #[test]
    fn an_elf_is_used_as_it_is_and_garbage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let files = BootFiles::new(dir.path().join("kernels"));
        let elf = dir.path().join("vmlinux");
        std::fs::write(&elf, b"\x7fELF and the rest").unwrap();
        assert_eq!(files.kernel_elf(&elf).unwrap(), elf);
        let junk = dir.path().join("junk");
        std::fs::write(&junk, b"not a kernel").unwrap();
        let e = files.kernel_elf(&junk).unwrap_err();
        assert!(e.to_string().contains("is not bootable"), "{e}");
        let e = files.kernel_elf(&dir.path().join("missing")).unwrap_err();
        assert!(e.to_string().contains("missing"), "{e}");
    }

    #[test]
    fn a_bzimage_is_extracted_once_and_again_when_its_elf_goes() {
        use spore_kernel::test_util::{elf, make_bzimage};
        use std::io::Write;
        let kernel = elf::build(
            0,
            &elf::linux_notes(0xffff_ffff_8100_0000, 0xffff_ffff_8100_1000),
            &[elf::Seg {
                paddr: 0x100_0000,
                data: vec![0x90; 0x2000],
                memsz: 0x2000,
            }],
        );
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&kernel).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vmlinuz");
        std::fs::write(&path, make_bzimage(&gz.finish().unwrap())).unwrap();
        let files = BootFiles::new(dir.path().join("kernels"));
        let cached = files.kernel_elf(&path).unwrap();
        assert!(cached.starts_with(dir.path().join("kernels")));
        assert_eq!(std::fs::read(&cached).unwrap(), kernel);
        // The Xen view of the same file maps that cached ELF.
        assert_eq!(*files.kernel(&path).unwrap().elf, *kernel);
        std::fs::remove_file(&cached).unwrap();
        assert_eq!(files.kernel_elf(&path).unwrap(), cached);
        assert!(cached.is_file());
    }
}
