//! Raw ABI: the Xen ELF note types a PV kernel carries, and the read-only file mapping the
//! kernel bytes are read through.

use std::os::fd::AsRawFd;
use std::ptr::NonNull;

/// Xen ELF note types. Source: `xen/include/public/elfnote.h`.
pub mod elfnote {
    pub const ENTRY: u32 = 1;
    pub const HYPERCALL_PAGE: u32 = 2;
    pub const VIRT_BASE: u32 = 3;
    pub const PADDR_OFFSET: u32 = 4;
    pub const XEN_VERSION: u32 = 5;
    pub const GUEST_OS: u32 = 6;
    pub const LOADER: u32 = 8;
    pub const PAE_MODE: u32 = 9;
    pub const FEATURES: u32 = 10;
    pub const INIT_P2M: u32 = 15;
    pub const MOD_START_PFN: u32 = 16;
    pub const SUPPORTED_FEATURES: u32 = 17;
    pub const PHYS32_ENTRY: u32 = 18;
}

/// A private read-only mapping of a whole file, unmapped on drop.
#[derive(Debug)]
pub(crate) struct Mmap {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is read-only memory owned by this value; it can move between threads
// and be read from several at once.
unsafe impl Send for Mmap {}
// SAFETY: as above; `&Mmap` only allows reads.
unsafe impl Sync for Mmap {}

impl Mmap {
    /// Maps the first `len` (> 0) bytes of `file`.
    pub(crate) fn file_readonly(file: &std::fs::File, len: usize) -> std::io::Result<Self> {
        // SAFETY: a fresh read-only private mapping of an open file; no existing memory is
        // affected.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                file.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let ptr = NonNull::new(p.cast::<u8>())
            .ok_or_else(|| std::io::Error::other("mmap returned a null mapping"))?;
        Ok(Self { ptr, len })
    }

    pub(crate) fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr` maps `len` readable bytes for as long as `self` lives.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for Mmap {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the region this value mapped; nothing borrows it any more.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}
