//! Guest kernels and initrds, loaded once per file version and shared by every zone that
//! boots them. An ELF kernel is mapped, not read; a bzImage's payload is extracted once into
//! the kernel cache (`<sha256>.elf`, by `spore_xen::kernel`) and mapped from there.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use spore_xen::kernel::KernelImage;

/// Identifies one version of a file: a replaced or rewritten file is loaded again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
}

impl FileId {
    fn of(path: &Path) -> std::io::Result<FileId> {
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
#[derive(Debug)]
pub enum LoadError {
    Io(PathBuf, std::io::Error),
    Kernel(PathBuf, spore_xen::XenError),
}

/// Loaded files by path, each with the version it was loaded from.
type Loaded<T> = Mutex<HashMap<PathBuf, (FileId, Arc<T>)>>;

/// Loaded kernels and initrds by path.
#[derive(Debug)]
pub struct Images {
    cache_dir: PathBuf,
    kernels: Loaded<KernelImage>,
    initrds: Loaded<Vec<u8>>,
    /// One load at a time: extracting a bzImage takes seconds of CPU, and two zones
    /// launched together need it once.
    loading: Mutex<()>,
}

impl Images {
    pub fn new(cache_dir: PathBuf) -> Images {
        Images {
            cache_dir,
            kernels: Mutex::default(),
            initrds: Mutex::default(),
            loading: Mutex::default(),
        }
    }

    /// The kernel at `path` (blocking).
    pub fn kernel(&self, path: &Path) -> Result<Arc<KernelImage>, LoadError> {
        let _one = self.loading.lock().unwrap_or_else(|p| p.into_inner());
        let id = FileId::of(path).map_err(|e| LoadError::Io(path.to_path_buf(), e))?;
        if let Some((known, k)) = self.kernels.lock().unwrap().get(path)
            && *known == id
        {
            return Ok(k.clone());
        }
        let kernel = KernelImage::load(path, Some(&self.cache_dir))
            .map_err(|e| LoadError::Kernel(path.to_path_buf(), e))?;
        let kernel = Arc::new(kernel);
        self.kernels
            .lock()
            .unwrap()
            .insert(path.to_path_buf(), (id, kernel.clone()));
        Ok(kernel)
    }

    /// The initrd at `path` (blocking).
    pub fn initrd(&self, path: &Path) -> Result<Arc<Vec<u8>>, LoadError> {
        let id = FileId::of(path).map_err(|e| LoadError::Io(path.to_path_buf(), e))?;
        if let Some((known, i)) = self.initrds.lock().unwrap().get(path)
            && *known == id
        {
            return Ok(i.clone());
        }
        let bytes =
            Arc::new(std::fs::read(path).map_err(|e| LoadError::Io(path.to_path_buf(), e))?);
        self.initrds
            .lock()
            .unwrap()
            .insert(path.to_path_buf(), (id, bytes.clone()));
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_initrd_is_read_once_per_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("initrd");
        std::fs::write(&path, b"first").unwrap();
        let images = Images::new(dir.path().join("kernels"));
        let a = images.initrd(&path).unwrap();
        let b = images.initrd(&path).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        // A new file in its place (new inode) is read again.
        let tmp = dir.path().join("initrd.new");
        std::fs::write(&tmp, b"second!").unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        assert_eq!(images.initrd(&path).unwrap().as_slice(), b"second!");
        assert!(matches!(
            images.initrd(&dir.path().join("missing")),
            Err(LoadError::Io(..))
        ));
    }

    #[test]
    fn a_file_that_is_no_kernel_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kernel");
        std::fs::write(&path, vec![0x42; 4096]).unwrap();
        let images = Images::new(dir.path().join("kernels"));
        match images.kernel(&path) {
            Err(LoadError::Kernel(p, e)) => {
                assert_eq!(p, path);
                assert!(e.to_string().contains("kernel image"), "{e}");
            }
            other => panic!("expected a kernel error, got {other:?}"),
        }
    }
}
