//! `/dev/xen/gntdev`: map pages another domain granted to us. A mapping is an mmap of the
//! device at the offset the MAP_GRANT_REF ioctl returned; dropping it munmaps and then
//! releases the grant (`UNMAP_GRANT_REF`), in that order, as the driver requires.

use std::fs::OpenOptions;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Arc;

use crate::privcmd::{Mmap, PAGE_SIZE};
use crate::sys::ioctl;
use crate::{DomId, Result, XenError};

const GNTDEV_PATH: &str = "/dev/xen/gntdev";

/// An open grant device.
#[derive(Debug, Clone)]
pub struct GntDev {
    fd: Arc<OwnedFd>,
}

impl GntDev {
    pub fn open() -> Result<Self> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(GNTDEV_PATH)
            .map_err(|source| XenError::Open {
                path: GNTDEV_PATH.into(),
                source,
            })?;
        Ok(Self {
            fd: Arc::new(f.into()),
        })
    }

    /// Maps grant references `refs` of `domid`, contiguously, read-write.
    pub fn map(&self, domid: DomId, refs: &[u32]) -> Result<GrantMapping> {
        let first = *refs
            .first()
            .ok_or_else(|| XenError::InvalidArgument("no grant refs".into()))?;
        let map_err = |source| XenError::MapGrant {
            domid,
            gref: first,
            source,
        };
        // Header followed by `count` refs, in one u64-aligned buffer.
        let words = (size_of::<ioctl::GntdevMapGrantRefHeader>() + refs.len() * 8).div_ceil(8);
        let mut buf = vec![0u64; words];
        let hdr = ioctl::GntdevMapGrantRefHeader {
            count: refs.len() as u32,
            pad: 0,
            index: 0,
        };
        // SAFETY: `buf` is u64-aligned and large enough for the header plus refs; both are
        // plain repr(C) data.
        unsafe {
            let base = buf.as_mut_ptr().cast::<u8>();
            std::ptr::write(base.cast::<ioctl::GntdevMapGrantRefHeader>(), hdr);
            let r = base
                .add(size_of::<ioctl::GntdevMapGrantRefHeader>())
                .cast::<ioctl::GntdevGrantRef>();
            for (i, gref) in refs.iter().enumerate() {
                std::ptr::write(
                    r.add(i),
                    ioctl::GntdevGrantRef {
                        domid: domid.into(),
                        r#ref: *gref,
                    },
                );
            }
        }
        // SAFETY: MAP_GRANT_REF reads the header and `count` refs from `buf` and writes the
        // index back into the header.
        let rc = unsafe {
            libc::ioctl(
                self.fd.as_raw_fd(),
                ioctl::IOCTL_GNTDEV_MAP_GRANT_REF,
                buf.as_mut_ptr(),
            )
        };
        if rc < 0 {
            return Err(map_err(std::io::Error::last_os_error()));
        }
        // SAFETY: the header is at the start of `buf`, written by us and the driver.
        let index =
            unsafe { std::ptr::read(buf.as_ptr().cast::<ioctl::GntdevMapGrantRefHeader>()) }.index;
        let len = refs.len() * PAGE_SIZE;
        let map = match Mmap::shared(&self.fd, len, index as i64) {
            Ok(m) => m,
            Err(e) => {
                self.unmap_index(index, refs.len() as u32);
                return Err(e);
            }
        };
        Ok(GrantMapping {
            dev: self.clone(),
            map: Some(map),
            index,
            count: refs.len() as u32,
        })
    }

    fn unmap_index(&self, index: u64, count: u32) {
        let mut u = ioctl::GntdevUnmapGrantRef {
            index,
            count,
            pad: 0,
        };
        // SAFETY: UNMAP_GRANT_REF reads a gntdev_unmap_grant_ref from the live `u`.
        let rc = unsafe {
            libc::ioctl(
                self.fd.as_raw_fd(),
                ioctl::IOCTL_GNTDEV_UNMAP_GRANT_REF,
                &mut u,
            )
        };
        if rc < 0 {
            tracing::warn!(index, error = %std::io::Error::last_os_error(), "gntdev unmap failed");
        }
    }
}

/// Granted pages mapped into our address space.
#[derive(Debug)]
pub struct GrantMapping {
    dev: GntDev,
    map: Option<Mmap>,
    index: u64,
    count: u32,
}

impl GrantMapping {
    pub fn as_ptr(&self) -> *mut u8 {
        self.map
            .as_ref()
            .map_or(std::ptr::null_mut(), |m| m.ptr.as_ptr())
    }

    pub fn len(&self) -> usize {
        self.map.as_ref().map_or(0, |m| m.len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Asks the driver to notify `port` if this mapping disappears (our process dies), so
    /// the frontend learns the backend is gone.
    pub fn set_unmap_notify(&self, port: u32) -> Result<()> {
        let mut n = ioctl::GntdevUnmapNotify {
            index: self.index,
            action: ioctl::UNMAP_NOTIFY_SEND_EVENT,
            event_channel_port: port,
        };
        // SAFETY: SET_UNMAP_NOTIFY reads a gntdev_unmap_notify from the live `n`.
        let rc = unsafe {
            libc::ioctl(
                self.dev.fd.as_raw_fd(),
                ioctl::IOCTL_GNTDEV_SET_UNMAP_NOTIFY,
                &mut n,
            )
        };
        if rc < 0 {
            return Err(XenError::Ioctl {
                what: "gntdev set_unmap_notify",
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(())
    }
}

impl Drop for GrantMapping {
    fn drop(&mut self) {
        drop(self.map.take()); // munmap first: the driver refuses to unmap a mapped range
        self.dev.unmap_index(self.index, self.count);
    }
}
