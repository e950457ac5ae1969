//! The backend seam: what spored asks of Xen and QEMU alike.

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncWrite};
use uuid::Uuid;

use crate::probe::BackendKind;
use crate::{LaunchSpec, Result};

/// A bidirectional byte stream to the guest (console or IDM channel).
pub trait ByteStream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> ByteStream for T {}

/// A VM the backend owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmInfo {
    pub zone_id: Uuid,
    /// Backend handle in words: `domid 7`, `qemu pid 4242`.
    pub handle: String,
    /// False once the VM has stopped but has not been destroyed yet.
    pub running: bool,
}

/// Why a VM stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The guest powered off (spore-init does this after the workload ends).
    Poweroff,
    /// The guest crashed or the VM monitor died.
    Crash,
    /// Someone else destroyed or killed the VM.
    Killed,
}

/// A stopped VM: the reason and, in words, what the backend saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmStop {
    pub reason: StopReason,
    pub detail: String,
}

/// What a backend can run, stated once: CreateZone checks a spec against these, so a zone
/// that was accepted is not refused by its backend later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmLimits {
    /// The smallest memory (MiB) a zone can boot with.
    pub min_memory_mib: u64,
    /// The most vCPUs a zone can have (the host's CPU count may bound it further).
    pub max_vcpus: u32,
}

/// New resources for a running zone's VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resources {
    /// vCPUs online in the guest (at most the count the VM was created with).
    pub vcpus: u32,
    /// Memory target in MiB (at most the memory the VM was created with).
    pub memory_mib: u64,
}

/// A hypervisor backend. Every method is cancel-safe to drop at an await point, except
/// `create` and `destroy`, which spored runs to completion.
///
/// VMs outlive the daemon: a backend must not tie a VM's life to spored's process (no
/// kill-on-drop children, no domain destroyed on close), so that spored can restart, find the
/// VMs with [`Backend::list`] and re-adopt them.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Which backend this is.
    fn kind(&self) -> BackendKind;

    /// What a zone on this backend may ask for.
    fn limits(&self) -> VmLimits;

    /// Creates and starts the VM. On error nothing is left behind.
    async fn create(&self, spec: &LaunchSpec) -> Result<VmInfo>;

    /// Stops the VM if it runs and releases everything it holds. Idempotent: destroying a
    /// zone the backend does not know succeeds.
    async fn destroy(&self, zone_id: Uuid) -> Result<()>;

    /// The VMs this backend owns (running or stopped but not destroyed), for re-adoption
    /// after a daemon restart.
    async fn list(&self) -> Result<Vec<VmInfo>>;

    /// Opens the zone's console (hvc0). Output produced while no stream is open may be lost,
    /// so spored keeps one open for the zone's whole life.
    async fn open_console(&self, zone_id: Uuid) -> Result<Box<dyn ByteStream>>;

    /// Opens the zone's IDM channel (hvc1).
    async fn open_idm(&self, zone_id: Uuid) -> Result<Box<dyn ByteStream>>;

    /// Resolves when the zone's VM has stopped.
    async fn wait_stopped(&self, zone_id: Uuid) -> Result<VmStop>;

    /// Changes a running VM's vCPUs and memory within what it was created with (Xen: vcpu
    /// online mask and balloon target; QEMU: the same through the guest's balloon and CPU
    /// hotplug). [`RuntimeError::Unsupported`](crate::RuntimeError::Unsupported) when this backend cannot.
    async fn update_resources(&self, zone_id: Uuid, resources: Resources) -> Result<()>;
}
