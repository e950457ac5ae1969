//! `/dev/xen/evtchn`: interdomain event channels. Each bound port is delivered by reading
//! the fd (a `u32` per pending port) and must be re-enabled by writing it back (unmask). The
//! fd is non-blocking so tokio's `AsyncFd` can poll it ([`AsyncEvtChn`]).

use std::fs::OpenOptions;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use tokio::io::unix::AsyncFd;

use crate::sys::ioctl;
use crate::{DomId, Result, XenError};

const EVTCHN_PATH: &str = "/dev/xen/evtchn";

/// An open event-channel device; ports bound through it are unbound when it closes.
#[derive(Debug)]
pub struct EvtChn {
    fd: OwnedFd,
}

impl AsRawFd for EvtChn {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsFd for EvtChn {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl EvtChn {
    /// Opens the device, non-blocking.
    pub fn open() -> Result<Self> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC | libc::O_NONBLOCK)
            .open(EVTCHN_PATH)
            .map_err(|source| XenError::Open {
                path: EVTCHN_PATH.into(),
                source,
            })?;
        Ok(Self { fd: f.into() })
    }

    fn ioctl<T>(&self, what: &'static str, req: libc::Ioctl, arg: &mut T) -> Result<u32> {
        // SAFETY: `req` is an evtchn ioctl whose argument struct is `T` (sys::ioctl pairs
        // them), and `arg` is a live, exclusively borrowed T.
        let rc = unsafe { libc::ioctl(self.fd.as_raw_fd(), req, arg as *mut T) };
        if rc < 0 {
            return Err(XenError::Ioctl {
                what,
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(rc as u32)
    }

    /// Binds a local port to `remote_port` of `remote_dom`; returns the local port.
    pub fn bind_interdomain(&self, remote_dom: DomId, remote_port: u32) -> Result<u32> {
        let mut a = ioctl::EvtchnBindInterdomain {
            remote_domain: remote_dom.into(),
            remote_port,
        };
        self.ioctl(
            "evtchn bind_interdomain",
            ioctl::IOCTL_EVTCHN_BIND_INTERDOMAIN,
            &mut a,
        )
    }

    /// Allocates a local port that `remote_dom` can bind to; returns it.
    pub fn bind_unbound(&self, remote_dom: DomId) -> Result<u32> {
        let mut a = ioctl::EvtchnBindUnboundPort {
            remote_domain: remote_dom.into(),
        };
        self.ioctl(
            "evtchn bind_unbound_port",
            ioctl::IOCTL_EVTCHN_BIND_UNBOUND_PORT,
            &mut a,
        )
    }

    pub fn unbind(&self, port: u32) -> Result<()> {
        let mut a = ioctl::EvtchnPort { port };
        self.ioctl("evtchn unbind", ioctl::IOCTL_EVTCHN_UNBIND, &mut a)
            .map(drop)
    }

    /// Signals the remote end of `port`.
    pub fn notify(&self, port: u32) -> Result<()> {
        let mut a = ioctl::EvtchnPort { port };
        self.ioctl("evtchn notify", ioctl::IOCTL_EVTCHN_NOTIFY, &mut a)
            .map(drop)
    }

    /// Re-enables delivery on `port` after it fired.
    pub fn unmask(&self, port: u32) -> Result<()> {
        let b = port.to_ne_bytes();
        // SAFETY: writes 4 bytes from a live local buffer to our fd.
        let n = unsafe { libc::write(self.fd.as_raw_fd(), b.as_ptr().cast(), b.len()) };
        if n != 4 {
            return Err(XenError::Ioctl {
                what: "evtchn unmask",
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(())
    }

    /// Reads pending ports into `out`; 0 if none is pending (non-blocking).
    pub fn pending(&self, out: &mut [u32]) -> Result<usize> {
        let len = std::mem::size_of_val(out);
        // SAFETY: reads at most `len` bytes into the live, exclusively borrowed `out`; any
        // bit pattern is a valid u32.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), out.as_mut_ptr().cast(), len) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::WouldBlock {
                return Ok(0);
            }
            return Err(XenError::Ioctl {
                what: "evtchn read",
                source: e,
            });
        }
        Ok(n as usize / 4)
    }
}

/// An [`EvtChn`] registered with tokio.
#[derive(Debug)]
pub struct AsyncEvtChn {
    inner: AsyncFd<EvtChn>,
}

impl AsyncEvtChn {
    pub fn new(e: EvtChn) -> Result<Self> {
        // SAFETY: EvtChn owns its fd (OwnedFd) and always returns that same open fd from
        // as_raw_fd for as long as the AsyncFd owns it.
        let inner = unsafe { AsyncFd::register(e) }.map_err(|e| XenError::Io {
            what: "registering evtchn with tokio".into(),
            source: std::io::Error::from(e),
        })?;
        Ok(Self { inner })
    }

    pub fn get_ref(&self) -> &EvtChn {
        self.inner.get_ref()
    }

    /// Waits until at least one port fires; returns them (already unmasked again).
    pub async fn wait(&self) -> Result<Vec<u32>> {
        loop {
            let mut guard = self.inner.readable().await.map_err(|source| XenError::Io {
                what: "polling evtchn".into(),
                source,
            })?;
            let mut ports = [0u32; 64];
            let n = self.inner.get_ref().pending(&mut ports)?;
            if n == 0 {
                guard.clear_ready();
                continue;
            }
            for p in &ports[..n] {
                self.inner.get_ref().unmask(*p)?;
            }
            return Ok(ports[..n].to_vec());
        }
    }
}
