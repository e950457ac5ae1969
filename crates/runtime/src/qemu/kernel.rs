//! The kernel QEMU boots: an uncompressed ELF. Given a bzImage (the guest bundle's `kernel`,
//! which Xen needs anyway), its payload is extracted once into the kernel cache and the ELF
//! booted instead: under TCG, decompressing the kernel inside the guest costs ~3 s per boot.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use spore_xen::kernel::cache_elf;

/// Extracted kernels by source file identity.
#[derive(Debug)]
pub struct KernelCache {
    dir: PathBuf,
    known: Mutex<HashMap<(PathBuf, u64, SystemTime), PathBuf>>,
    /// One extraction at a time: concurrent launches of a new kernel wait for the first.
    extracting: Mutex<()>,
}

impl KernelCache {
    pub fn new(dir: PathBuf) -> KernelCache {
        KernelCache {
            dir,
            known: Mutex::new(HashMap::new()),
            extracting: Mutex::new(()),
        }
    }

    /// The ELF to boot for `kernel` (blocking: may hash and decompress the file).
    pub fn elf_for(&self, kernel: &Path) -> Result<PathBuf, String> {
        let meta =
            std::fs::metadata(kernel).map_err(|e| format!("kernel {}: {e}", kernel.display()))?;
        let key = (
            kernel.to_path_buf(),
            meta.len(),
            meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        );
        if let Some(elf) = self.known.lock().unwrap().get(&key)
            && elf.is_file()
        {
            return Ok(elf.clone());
        }
        let cached = {
            let _one_at_a_time = self.extracting.lock().unwrap();
            cache_elf(kernel, &self.dir)
                .map_err(|e| format!("kernel {} is not bootable: {e}", kernel.display()))?
        };
        self.known.lock().unwrap().insert(key, cached.clone());
        Ok(cached)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_elf_is_used_as_it_is_and_garbage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let cache = KernelCache::new(dir.path().join("kernels"));
        let elf = dir.path().join("vmlinux");
        std::fs::write(&elf, b"\x7fELF and the rest").unwrap();
        assert_eq!(cache.elf_for(&elf).unwrap(), elf);
        let junk = dir.path().join("junk");
        std::fs::write(&junk, b"not a kernel").unwrap();
        let e = cache.elf_for(&junk).unwrap_err();
        assert!(e.contains("is not bootable"), "{e}");
        let e = cache.elf_for(&dir.path().join("missing")).unwrap_err();
        assert!(e.contains("missing"), "{e}");
    }
}
