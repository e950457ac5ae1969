//! How the Xen backend runs zones: its settings and the limits it enforces.

use std::path::PathBuf;
use std::time::Duration;

use super::teardown::Timeouts;

/// The memory floor reported when the configured guest bundle cannot be read at start
/// (create still checks the exact need of the kernel and initrd it boots).
pub const FALLBACK_MIN_MEMORY_MIB: u64 = 128;
/// Memory a zone needs beyond its kernel's initial mapping to boot, by default (see
/// [`XenConfig::boot_headroom_mib`]). Measured in the lab with the Debian 6.1 kernel and the
/// bundle's initrd (layout minimum 80 MiB): 84 MiB panics out of memory while booting, 88
/// MiB runs a shell workload; 16 MiB keeps a margin over that.
pub const BOOT_HEADROOM_MIB: u64 = 16;
/// vCPUs a zone may have.
pub const MAX_VCPUS: u32 = 128;
/// The console device that carries IDM (hvc1).
pub(super) const IDM_CONSOLE: u32 = 1;
/// How often `wait_stopped` re-checks the domain when no xenstore event arrives.
pub(super) const STOP_POLL: Duration = Duration::from_secs(5);

/// How the backend runs zones.
#[derive(Debug, Clone)]
pub struct XenConfig {
    /// `<state>/zones`: zone directories, and this backend's identity in xenstore
    /// (`spore/owner`), so two daemons never take each other's domains.
    pub zones_root: PathBuf,
    /// Where kernels extracted from bzImages are kept (`<sha256>.elf`).
    pub kernel_cache: PathBuf,
    /// The guest bundle's kernel and initrd, for [`crate::Backend::limits`].
    pub guest_kernel: Option<PathBuf>,
    pub guest_initrd: Option<PathBuf>,
    /// Memory a zone needs beyond its kernel's initial mapping (`Layout::min_memory_mib`) for
    /// the kernel to boot and spore-init to run: the layout alone is not enough (measured in
    /// the lab with the Debian 6.1 kernel: `xenlab/tests/backend.sh`, docs/backends.md).
    pub boot_headroom_mib: u64,
    /// How long the guest may take to connect its IDM console (its kernel boot).
    pub idm_timeout: Duration,
    /// How long `destroy` lets a running guest close its devices.
    pub device_timeout: Duration,
    /// How long `destroy` waits for the kernel backends and the domain to go.
    pub release_timeout: Duration,
}

impl XenConfig {
    /// Defaults, with the kernel cache beside the zones root (`<state>/kernels`).
    pub fn new(zones_root: impl Into<PathBuf>) -> XenConfig {
        let zones_root: PathBuf = zones_root.into();
        XenConfig {
            kernel_cache: crate::boot_files::default_cache_dir(&zones_root),
            zones_root,
            guest_kernel: None,
            guest_initrd: None,
            boot_headroom_mib: BOOT_HEADROOM_MIB,
            idm_timeout: Duration::from_secs(120),
            device_timeout: Duration::from_secs(5),
            release_timeout: Duration::from_secs(15),
        }
    }

    /// The teardown's bounds for a destroy.
    pub(super) fn timeouts(&self) -> Timeouts {
        Timeouts {
            devices: self.device_timeout,
            release: self.release_timeout,
        }
    }

    /// The teardown's bounds after a failed create: the guest never ran, so it gets no time
    /// to close its devices.
    pub(super) fn cleanup_timeouts(&self) -> Timeouts {
        Timeouts {
            devices: Duration::ZERO,
            ..self.timeouts()
        }
    }
}
