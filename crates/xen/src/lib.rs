//! spore's Xen userspace, written from Xen's public headers: privcmd hypercalls
//! ([`PrivCmd`]), event channels ([`EvtChn`]), grant mappings ([`GntDev`]), our own xenstore
//! client ([`xs`]), the x86_64 PV domain builder ([`builder`]) and PV device plumbing
//! ([`console`], [`devices`], [`loopdev`]). Kernel images (bzImage extraction, ELF and Xen
//! notes) are `spore-kernel`'s: this crate keeps only what talks to the hypervisor.
//!
//! No libxc, libxl or xl. [`sys`] holds the ABI: every ioctl number, hypercall number and C
//! struct. The calls themselves are made by the type that owns the file descriptor
//! ([`PrivCmd`], [`EvtChn`], [`GntDev`], [`loopdev::LoopDevice`]), kvm-ioctls style, each
//! unsafe block with its SAFETY argument; everything above them is safe Rust. The builder is
//! generic over [`Hypervisor`], the seam at the hypercall interface, so its page layout is
//! unit-tested without Xen.
//!
//! ```no_run
//! use spore_xen::{PrivCmd, builder::{DomainBuilder, DomainConfig}, xs::XsClient};
//! # fn main() -> spore_xen::Result<()> {
//! let hv = PrivCmd::open()?;
//! let kernel = spore_kernel::KernelImage::load(std::path::Path::new("/boot/vmlinuz"), None)?;
//! let cfg = DomainConfig::new([0; 16], 256, 1, "console=hvc0".into());
//! let built = DomainBuilder::new(&hv).build(&cfg, &kernel, None)?;
//! let mut xs = XsClient::open()?;
//! spore_xen::builder::introduce(&mut xs, &built, &cfg, "zone-demo", &[])?;
//! spore_xen::Hypervisor::unpause(&hv, built.domid)?;
//! # Ok(()) }
//! ```

pub mod builder;
pub mod console;
pub mod devices;
mod error;
pub mod evtchn;
pub mod gntdev;
pub mod hypervisor;
pub mod loopdev;
pub mod privcmd;
pub mod sys;
pub mod version;
pub mod xs;

pub use error::{Result, XenError};
pub use evtchn::EvtChn;
pub use gntdev::GntDev;
pub use hypervisor::{CreateDomain, DomainInfo, Hypervisor, MemoryRegion, ShutdownReason};
pub use privcmd::{ForeignMapping, HypercallBuffer, PrivCmd};
pub use version::XenVersion;

/// A Xen domain id (`domid_t`).
pub type DomId = u16;
