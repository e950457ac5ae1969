//! `/dev/xen/privcmd`: hypercalls and foreign memory mappings.
//!
//! Hypercall arguments that Xen reads or writes through pointers live in [`HypercallBuffer`]s:
//! locked, pre-faulted anonymous pages, because Xen's copy from/to guest memory fails with
//! EFAULT on a page that is not present rather than faulting it in.

use std::fs::OpenOptions;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::ptr::NonNull;

use crate::sys::{Abi, hyper, ioctl};
use crate::version::XenVersion;
use crate::{DomId, Result, XenError};

/// The page size of x86 Xen guests.
pub const PAGE_SIZE: usize = 4096;
pub(crate) const PRIVCMD_PATH: &str = "/dev/xen/privcmd";

/// An open privcmd handle and the hypervisor version it talks to.
#[derive(Debug)]
pub struct PrivCmd {
    fd: OwnedFd,
    version: XenVersion,
}

impl PrivCmd {
    /// Opens `/dev/xen/privcmd` and reads the hypervisor version; refuses a release whose
    /// interface versions are not in [`XenVersion`]'s table.
    pub fn open() -> Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(PRIVCMD_PATH)
            .map_err(|source| XenError::Open {
                path: PRIVCMD_PATH.into(),
                source,
            })?;
        let fd = OwnedFd::from(file);
        let raw = raw_hypercall(
            &fd,
            hyper::HYPERVISOR_XEN_VERSION,
            [hyper::XENVER_VERSION, 0, 0, 0, 0],
        )
        .map_err(|source| XenError::Hypercall {
            what: "xen_version".into(),
            source,
        })?;
        let version = XenVersion::from_raw(raw as u64)?;
        tracing::debug!(
            major = version.major,
            minor = version.minor,
            "xen hypervisor"
        );
        Ok(Self { fd, version })
    }

    /// The hypervisor's version and interface versions.
    pub fn version(&self) -> XenVersion {
        self.version
    }

    /// Issues one hypercall. `what` names it in the error.
    pub fn hypercall(&self, what: &str, op: u64, args: [u64; 5]) -> Result<i64> {
        raw_hypercall(&self.fd, op, args).map_err(|source| XenError::Hypercall {
            what: what.into(),
            source,
        })
    }

    /// Maps `mfns` of domain `domid` into our address space, read-write, with
    /// `IOCTL_PRIVCMD_MMAPBATCH_V2`. Fails as a whole if any frame fails.
    pub fn map_foreign(&self, domid: DomId, mfns: &[u64]) -> Result<ForeignMapping> {
        if mfns.is_empty() {
            return Err(XenError::InvalidArgument(
                "map_foreign of zero frames".into(),
            ));
        }
        let len = mfns.len().checked_mul(PAGE_SIZE).ok_or_else(|| {
            XenError::InvalidArgument(format!("map_foreign of {} frames overflows", mfns.len()))
        })?;
        let map = Mmap::shared(&self.fd, len, 0)?;
        let mut errs = vec![0i32; mfns.len()];
        let mut arg = ioctl::PrivcmdMmapBatchV2 {
            num: u32::try_from(mfns.len())
                .map_err(|_| XenError::InvalidArgument("too many frames to map".into()))?,
            dom: domid,
            addr: map.ptr.as_ptr() as u64,
            arr: mfns.as_ptr(),
            err: errs.as_mut_ptr(),
        };
        // SAFETY: `arg` points at `mfns` and `errs`, both alive and `num` entries long, and at
        // our own mapping of exactly `num` pages made on this fd, which the driver fills.
        let rc = unsafe {
            libc::ioctl(
                self.fd.as_raw_fd(),
                ioctl::IOCTL_PRIVCMD_MMAPBATCH_V2,
                &mut arg,
            )
        };
        if rc < 0 {
            let source = std::io::Error::last_os_error();
            let bad = errs.iter().position(|&e| e != 0);
            return Err(XenError::MapForeign {
                domid,
                frame: bad.map(|i| mfns[i]),
                source,
            });
        }
        if let Some(i) = errs.iter().position(|&e| e != 0) {
            return Err(XenError::MapForeign {
                domid,
                frame: Some(mfns[i]),
                source: std::io::Error::from_raw_os_error(-errs[i]),
            });
        }
        Ok(ForeignMapping { map })
    }

    /// Maps `count` frames of a domain resource (`XENMEM_acquire_resource` through
    /// `IOCTL_PRIVCMD_MMAP_RESOURCE`), e.g. the grant table.
    pub fn map_resource(
        &self,
        domid: DomId,
        ty: u32,
        id: u32,
        idx: u32,
        count: usize,
    ) -> Result<ForeignMapping> {
        let map = Mmap::shared(&self.fd, count * PAGE_SIZE, 0)?;
        let mut arg = ioctl::PrivcmdMmapResource {
            dom: domid,
            ty,
            id,
            idx,
            num: count as u64,
            addr: map.ptr.as_ptr() as u64,
        };
        // SAFETY: `arg` is a valid privcmd_mmap_resource naming our own mapping of `count`
        // pages made on this fd.
        let rc = unsafe {
            libc::ioctl(
                self.fd.as_raw_fd(),
                ioctl::IOCTL_PRIVCMD_MMAP_RESOURCE,
                &mut arg,
            )
        };
        if rc < 0 {
            return Err(XenError::MapResource {
                domid,
                ty,
                id,
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(ForeignMapping { map })
    }
}

fn raw_hypercall(fd: &OwnedFd, op: u64, arg: [u64; 5]) -> std::io::Result<i64> {
    let mut call = ioctl::PrivcmdHypercall { op, arg };
    // SAFETY: IOCTL_PRIVCMD_HYPERCALL reads a privcmd_hypercall; any pointers inside `arg`
    // are the caller's HypercallBuffers, alive for the duration of this call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), ioctl::IOCTL_PRIVCMD_HYPERCALL, &mut call) };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc as i64)
    }
}

/// An anonymous or device mapping, unmapped on drop.
#[derive(Debug)]
pub(crate) struct Mmap {
    pub(crate) ptr: NonNull<u8>,
    pub(crate) len: usize,
}

// SAFETY: the mapping is plain memory owned by this value; moving it between threads is fine
// and shared access goes through &/&mut like any buffer.
unsafe impl Send for Mmap {}
// SAFETY: as above; `&Mmap` only allows reads.
unsafe impl Sync for Mmap {}

impl Mmap {
    /// `mmap(MAP_SHARED)` of `len` bytes of `fd` at `offset`.
    pub(crate) fn shared(fd: &OwnedFd, len: usize, offset: i64) -> Result<Self> {
        // SAFETY: a fresh mapping chosen by the kernel; no existing memory is affected.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                offset,
            )
        };
        Self::from_raw(p, len)
    }

    fn anonymous_locked(len: usize) -> Result<Self> {
        // SAFETY: a fresh private anonymous mapping; no existing memory is affected.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE | libc::MAP_LOCKED,
                -1,
                0,
            )
        };
        if p != libc::MAP_FAILED {
            return Self::from_raw(p, len);
        }
        // Locking can be refused (RLIMIT_MEMLOCK); pre-faulted pages still satisfy Xen, which
        // only needs them present while the hypercall runs.
        // SAFETY: a fresh private anonymous mapping; no existing memory is affected.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        Self::from_raw(p, len)
    }

    fn from_raw(p: *mut libc::c_void, len: usize) -> Result<Self> {
        if p == libc::MAP_FAILED {
            return Err(XenError::Mmap {
                len,
                source: std::io::Error::last_os_error(),
            });
        }
        let ptr = NonNull::new(p.cast::<u8>()).ok_or_else(|| XenError::Mmap {
            len,
            source: std::io::Error::other("null mapping"),
        })?;
        Ok(Self { ptr, len })
    }

    pub(crate) fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr` maps `len` readable bytes for as long as `self` lives.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: `ptr` maps `len` writable bytes, uniquely borrowed through `&mut self`.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for Mmap {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the region this value mapped; nothing borrows it any more.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// Guest frames mapped into our address space; unmapped on drop.
#[derive(Debug)]
pub struct ForeignMapping {
    map: Mmap,
}

impl std::ops::Deref for ForeignMapping {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.map.as_slice()
    }
}

impl std::ops::DerefMut for ForeignMapping {
    fn deref_mut(&mut self) -> &mut [u8] {
        self.map.as_mut_slice()
    }
}

impl ForeignMapping {
    /// Base address of the mapping, for code that needs volatile/atomic access.
    pub fn as_ptr(&self) -> *mut u8 {
        self.map.ptr.as_ptr()
    }
}

/// Page-aligned, locked, pre-faulted memory that hypercalls may read and write.
#[derive(Debug)]
pub struct HypercallBuffer {
    map: Mmap,
}

impl HypercallBuffer {
    /// A zeroed buffer of at least `len` bytes.
    pub fn new(len: usize) -> Result<Self> {
        let pages = len.div_ceil(PAGE_SIZE).max(1);
        Ok(Self {
            map: Mmap::anonymous_locked(pages * PAGE_SIZE)?,
        })
    }

    /// A buffer holding a copy of `value`'s bytes.
    pub fn from_value<T: Copy>(value: &T) -> Result<Self> {
        let mut buf = Self::new(size_of::<T>())?;
        buf.write(value);
        Ok(buf)
    }

    /// Overwrites the start of the buffer with `value`'s bytes.
    pub fn write<T: Copy>(&mut self, value: &T) {
        assert!(size_of::<T>() <= self.map.len, "hypercall buffer too small");
        // SAFETY: the buffer has at least size_of::<T>() bytes (checked) and is page-aligned,
        // so any T's alignment (<= 4096) holds; T: Copy has no drop glue.
        unsafe { std::ptr::write(self.map.ptr.as_ptr().cast::<T>(), *value) };
    }

    /// Reads a `T` back from the start of the buffer.
    pub fn read<T: Abi>(&self) -> T {
        assert!(size_of::<T>() <= self.map.len, "hypercall buffer too small");
        // SAFETY: the buffer has at least size_of::<T>() initialised bytes (checked; the
        // mapping starts zeroed) and is page-aligned, so any T's alignment (<= 4096) holds;
        // `T: Abi` makes any bit pattern Xen wrote there a valid value.
        unsafe { std::ptr::read(self.map.ptr.as_ptr().cast::<T>()) }
    }

    /// The buffer's address, as passed in a hypercall argument.
    pub fn addr(&self) -> u64 {
        self.map.ptr.as_ptr() as u64
    }

    pub fn as_slice(&self) -> &[u8] {
        self.map.as_slice()
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        self.map.as_mut_slice()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hypercall_buffer_roundtrip_and_alignment() {
        let mut b = HypercallBuffer::new(10).unwrap();
        assert_eq!(b.as_slice().len(), PAGE_SIZE);
        assert_eq!(b.addr() % PAGE_SIZE as u64, 0);
        b.write(&0x1122_3344_5566_7788u64);
        assert_eq!(b.read::<u64>(), 0x1122_3344_5566_7788);
        assert_eq!(b.as_slice()[0], 0x88);
        let big = HypercallBuffer::new(PAGE_SIZE + 1).unwrap();
        assert_eq!(big.as_slice().len(), 2 * PAGE_SIZE);
    }

    #[test]
    fn open_without_xen_names_the_device() {
        if std::path::Path::new(PRIVCMD_PATH).exists() {
            return; // a real dom0: covered by the lab
        }
        let err = PrivCmd::open().unwrap_err();
        assert!(matches!(err, XenError::Open { .. }));
        assert!(err.to_string().contains("/dev/xen/privcmd"), "{err}");
    }
}
