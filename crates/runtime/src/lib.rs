//! Zone launch and destroy on a backend.
//!
//! spored drives zones through one [`Backend`]: the Xen backend (PV domains built by
//! `spore-xen`) or the QEMU backend (`qemu-system-x86_64 -M microvm`). [`probe`] finds out which
//! backends this host can use and why the others cannot.
//!
//! The trait holds only what both backends really do: create a VM from a [`LaunchSpec`],
//! destroy it (idempotently, releasing everything it created), list the VMs the backend owns
//! (so a restarted daemon can re-adopt them), hand out the console and IDM byte streams, and
//! wait for a VM to stop, and change a running VM's resources.

mod backend;
mod boot_files;
mod error;
pub mod probe;
pub mod qemu;
mod spec;
mod sync;
pub mod xen;

pub use backend::{Backend, ByteStream, Resources, StopReason, VmInfo, VmLimits, VmStop};
pub use error::{BoxError, Result, RuntimeError};
pub use probe::{BackendKind, BackendProbe, HostProbe};
pub use spec::{LaunchSpec, NicSpec};
