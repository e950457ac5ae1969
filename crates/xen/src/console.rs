//! The PV console backend served by our own process: the guest's `xencons_interface` page
//! (`io/console.h`) mapped through a grant, its event channel bound through `/dev/xen/evtchn`,
//! exposed as a byte stream.
//!
//! The page is shared with a guest that may write anything at any time, so the four ring
//! indexes are read once per pass with acquire ordering, checked (the producer may be at
//! most one ring ahead of the consumer), and data bytes are read and written with volatile
//! accesses; our index updates are published with release ordering after the data.

use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use crate::evtchn::{AsyncEvtChn, EvtChn};
use crate::gntdev::{GntDev, GrantMapping};
use crate::sys::hyper::GNTTAB_RESERVED_CONSOLE;
use crate::sys::pv::console as layout;
use crate::{DomId, Result, XenError};

/// Bytes buffered between the ring pump and the stream's user in each direction.
pub const STREAM_BUFFER: usize = 64 << 10;
/// The pump also polls the ring this often, in case an event was lost.
const POLL: Duration = Duration::from_millis(200);

/// The ring indexes are inconsistent: the guest wrote garbage into them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("console ring {which} indexes are inconsistent (producer {prod}, consumer {cons})")]
pub struct RingCorrupt {
    pub which: &'static str,
    pub prod: u32,
    pub cons: u32,
}

/// A mapped console ring page.
pub struct ConsoleRing {
    base: NonNull<u8>,
    _owner: Box<dyn Send>,
}

impl std::fmt::Debug for ConsoleRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleRing")
            .field("base", &self.base)
            .finish()
    }
}

// SAFETY: the ring only touches its page through atomics and volatile accesses; the owner
// keeping the page mapped is Send.
unsafe impl Send for ConsoleRing {}

impl ConsoleRing {
    /// A ring over a page kept mapped by `owner`.
    ///
    /// # Safety
    /// `base` must point to at least 4096 bytes, 4-byte aligned, that stay mapped as long as
    /// `owner` lives.
    pub unsafe fn new(base: NonNull<u8>, owner: Box<dyn Send>) -> Self {
        Self {
            base,
            _owner: owner,
        }
    }

    /// A ring over a grant mapping of one page.
    pub fn from_grant(m: GrantMapping) -> Result<Self> {
        let base = NonNull::new(m.as_ptr())
            .filter(|_| m.len() >= 4096)
            .ok_or_else(|| {
                XenError::InvalidArgument("console ring mapping is not a page".into())
            })?;
        // SAFETY: a gntdev mapping of >= one page, page-aligned, mapped while `m` lives.
        Ok(unsafe { Self::new(base, Box::new(m)) })
    }

    fn index(&self, off: usize) -> &AtomicU32 {
        // SAFETY: `off` is one of the four index offsets, inside the page and 4-aligned;
        // AtomicU32 has the layout of u32 and the page outlives `&self`.
        unsafe { &*self.base.as_ptr().add(off).cast::<AtomicU32>() }
    }

    /// Copies guest output (the `out` ring) into `buf`; returns the byte count.
    pub fn read_out(&self, buf: &mut [u8]) -> std::result::Result<usize, RingCorrupt> {
        let cons = self.index(layout::OUT_CONS).load(Ordering::Relaxed);
        let prod = self.index(layout::OUT_PROD).load(Ordering::Acquire);
        let avail = prod.wrapping_sub(cons) as usize;
        if avail > layout::OUT_SIZE {
            return Err(RingCorrupt {
                which: "out",
                prod,
                cons,
            });
        }
        let n = avail.min(buf.len());
        for (i, b) in buf.iter_mut().take(n).enumerate() {
            let at = layout::OUT_OFFSET + (cons as usize).wrapping_add(i) % layout::OUT_SIZE;
            // SAFETY: `at` is inside the out array of the mapped page.
            *b = unsafe { std::ptr::read_volatile(self.base.as_ptr().add(at)) };
        }
        self.index(layout::OUT_CONS)
            .store(cons.wrapping_add(n as u32), Ordering::Release);
        Ok(n)
    }

    /// Copies as much of `data` as fits into the guest's `in` ring; returns the byte count.
    pub fn write_in(&self, data: &[u8]) -> std::result::Result<usize, RingCorrupt> {
        let cons = self.index(layout::IN_CONS).load(Ordering::Acquire);
        let prod = self.index(layout::IN_PROD).load(Ordering::Relaxed);
        let used = prod.wrapping_sub(cons) as usize;
        if used > layout::IN_SIZE {
            return Err(RingCorrupt {
                which: "in",
                prod,
                cons,
            });
        }
        let n = (layout::IN_SIZE - used).min(data.len());
        for (i, b) in data.iter().take(n).enumerate() {
            let at = layout::IN_OFFSET + (prod as usize).wrapping_add(i) % layout::IN_SIZE;
            // SAFETY: `at` is inside the in array of the mapped page.
            unsafe { std::ptr::write_volatile(self.base.as_ptr().add(at), *b) };
        }
        self.index(layout::IN_PROD)
            .store(prod.wrapping_add(n as u32), Ordering::Release);
        Ok(n)
    }
}

/// A connected console: ring plus event channel.
#[derive(Debug)]
pub struct ConsoleBackend {
    ring: ConsoleRing,
    evt: AsyncEvtChn,
    local_port: u32,
}

impl ConsoleBackend {
    /// Connects to a domain's primary console, which the builder granted to dom0 as grant
    /// reference 0; `remote_port` is the console event channel from the build.
    pub fn connect_primary(gnt: &GntDev, domid: DomId, remote_port: u32) -> Result<Self> {
        Self::connect(gnt, domid, GNTTAB_RESERVED_CONSOLE, remote_port)
    }

    /// Connects to a console ring granted as `gref` with event channel `remote_port` (for
    /// secondary consoles these come from the frontend's xenstore nodes, as numbers only).
    pub fn connect(gnt: &GntDev, domid: DomId, gref: u32, remote_port: u32) -> Result<Self> {
        let ring = ConsoleRing::from_grant(gnt.map(domid, &[gref])?)?;
        let evt = EvtChn::open()?;
        let local_port = evt.bind_interdomain(domid, remote_port)?;
        Ok(Self {
            ring,
            evt: AsyncEvtChn::new(evt)?,
            local_port,
        })
    }

    /// Starts the pump task and returns the stream end: reading it yields guest output,
    /// writing it feeds guest input. The task ends when it next finds the stream dropped
    /// (abort the handle to end it at once, e.g. after destroying the domain), or fails
    /// with [`XenError::RingCorrupt`] if the guest corrupts the ring.
    pub fn spawn(self) -> (DuplexStream, tokio::task::JoinHandle<Result<()>>) {
        let (ours, theirs) = tokio::io::duplex(STREAM_BUFFER);
        (theirs, tokio::spawn(self.pump(ours)))
    }

    async fn pump(self, stream: DuplexStream) -> Result<()> {
        let (mut rd, mut wr) = tokio::io::split(stream);
        let mut out = vec![0u8; layout::OUT_SIZE];
        let mut pending: Vec<u8> = Vec::new();
        let mut inbuf = vec![0u8; layout::IN_SIZE];
        let mut input_open = true;
        let evt = self.evt.get_ref();
        loop {
            loop {
                let n = self.ring.read_out(&mut out)?;
                if n == 0 {
                    break;
                }
                if wr.write_all(&out[..n]).await.is_err() {
                    return Ok(()); // the stream's user went away
                }
                evt.notify(self.local_port)?;
            }
            if !pending.is_empty() {
                let n = self.ring.write_in(&pending)?;
                if n > 0 {
                    pending.drain(..n);
                    evt.notify(self.local_port)?;
                }
            }
            tokio::select! {
                r = self.evt.wait() => { r?; }
                r = rd.read(&mut inbuf), if pending.is_empty() && input_open => match r {
                    Ok(0) | Err(_) => input_open = false,
                    Ok(n) => pending.extend_from_slice(&inbuf[..n]),
                },
                _ = tokio::time::sleep(POLL) => {}
            }
        }
    }
}

impl From<RingCorrupt> for XenError {
    fn from(e: RingCorrupt) -> Self {
        XenError::RingCorrupt(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[repr(C, align(4096))]
    struct Page([u8; 4096]);

    fn ring() -> (ConsoleRing, *mut u8) {
        let mut page = Box::new(Page([0; 4096]));
        let p = page.0.as_mut_ptr();
        // SAFETY: the box holds a 4096-byte page-aligned array, kept alive by the ring.
        let r = unsafe { ConsoleRing::new(NonNull::new(p).unwrap(), Box::new(page)) };
        (r, p)
    }

    fn set(p: *mut u8, off: usize, v: u32) {
        // SAFETY: test page, in bounds, aligned.
        unsafe { std::ptr::write(p.add(off).cast::<u32>(), v) }
    }
    fn get(p: *mut u8, off: usize) -> u32 {
        // SAFETY: test page, in bounds, aligned.
        unsafe { std::ptr::read(p.add(off).cast::<u32>()) }
    }

    /// The guest side of `out`: append bytes and move the producer.
    fn guest_write(p: *mut u8, data: &[u8]) {
        let prod = get(p, layout::OUT_PROD);
        for (i, b) in data.iter().enumerate() {
            let at = layout::OUT_OFFSET + (prod as usize + i) % layout::OUT_SIZE;
            // SAFETY: test page, in bounds.
            unsafe { *p.add(at) = *b };
        }
        set(p, layout::OUT_PROD, prod.wrapping_add(data.len() as u32));
    }

    #[test]
    fn reads_output_across_wraparound_and_index_overflow() {
        let (r, p) = ring();
        // Start near u32::MAX and near the end of the array so both wrap.
        let start = u32::MAX - 10;
        set(p, layout::OUT_CONS, start);
        set(p, layout::OUT_PROD, start);
        let msg: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
        guest_write(p, &msg);
        let mut buf = vec![0u8; 4096];
        let n = r.read_out(&mut buf).unwrap();
        assert_eq!(&buf[..n], &msg[..]);
        assert_eq!(get(p, layout::OUT_CONS), start.wrapping_add(300));
        assert_eq!(r.read_out(&mut buf).unwrap(), 0);
        // A small buffer takes a prefix and leaves the rest.
        guest_write(p, b"hello world");
        let mut small = [0u8; 5];
        assert_eq!(r.read_out(&mut small).unwrap(), 5);
        assert_eq!(&small, b"hello");
        assert_eq!(r.read_out(&mut buf).unwrap(), 6);
        assert_eq!(&buf[..6], b" world");
    }

    #[test]
    fn writes_input_up_to_free_space() {
        let (r, p) = ring();
        set(p, layout::IN_CONS, 1000);
        set(p, layout::IN_PROD, 1000);
        let data = vec![7u8; 1500];
        assert_eq!(r.write_in(&data).unwrap(), 1024, "ring holds 1024");
        assert_eq!(r.write_in(b"more").unwrap(), 0, "full");
        set(p, layout::IN_CONS, 1000 + 24); // guest consumed 24
        assert_eq!(r.write_in(&data).unwrap(), 24);
        assert_eq!(get(p, layout::IN_PROD), 1000 + 1048);
        // wrapped bytes landed at the array start
        // SAFETY: test page.
        assert_eq!(unsafe { *p.add(layout::IN_OFFSET) }, 7);
    }

    #[test]
    fn hostile_indexes_are_refused() {
        let (r, p) = ring();
        set(p, layout::OUT_PROD, 5000);
        let mut buf = [0u8; 16];
        assert_eq!(
            r.read_out(&mut buf),
            Err(RingCorrupt {
                which: "out",
                prod: 5000,
                cons: 0
            })
        );
        set(p, layout::OUT_CONS, 10);
        set(p, layout::OUT_PROD, 5); // producer behind the consumer
        assert!(r.read_out(&mut buf).is_err());
        set(p, layout::IN_CONS, 3000); // consumer ahead of what we produced
        assert_eq!(
            r.write_in(b"x"),
            Err(RingCorrupt {
                which: "in",
                prod: 0,
                cons: 3000
            })
        );
        assert_eq!(
            get(p, layout::IN_PROD),
            0,
            "nothing written on a corrupt ring"
        );
    }
}
