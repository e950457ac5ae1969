//! The hypercall seam: [`Hypervisor`] is every hypervisor operation the domain builder and
//! lifecycle code need, at the level of "create a domain", "populate its memory", "map these
//! frames". [`PrivCmd`] implements it with real hypercalls; unit tests implement it over
//! plain memory so page layout, page tables and start_info are checked without Xen.

use crate::privcmd::{ForeignMapping, HypercallBuffer, PrivCmd};
use crate::sys::hyper::{self, XenDomctl, XenSysctl, dominfo};
use crate::sys::pv::VcpuGuestContext;
use crate::{DomId, Result, XenError};

/// What `XEN_DOMCTL_createdomain` needs for a PV guest.
#[derive(Debug, Clone)]
pub struct CreateDomain {
    /// The domain handle; spore uses the zone's UUID.
    pub handle: [u8; 16],
    pub max_vcpus: u32,
    pub max_evtchn_port: u32,
    pub max_grant_frames: i32,
    pub max_maptrack_frames: i32,
}

impl CreateDomain {
    /// Defaults matching what xl gives a PV guest (1023 event channels, 32 grant frames,
    /// 1024 maptrack frames).
    pub fn pv(handle: [u8; 16], max_vcpus: u32) -> Self {
        Self {
            handle,
            max_vcpus,
            max_evtchn_port: 1023,
            max_grant_frames: 32,
            max_maptrack_frames: 1024,
        }
    }
}

/// The parts of `xen_domctl_getdomaininfo` spore uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainInfo {
    pub domid: DomId,
    pub flags: u32,
    pub tot_pages: u64,
    pub max_pages: u64,
    pub shared_info_frame: u64,
    pub cpu_time_ns: u64,
    pub online_vcpus: u32,
    pub handle: [u8; 16],
}

/// Why a domain stopped, from `XEN_DOMINF_shutdown` and its reason bits (`SHUTDOWN_*` in
/// sched.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownReason {
    Poweroff,
    Reboot,
    Suspend,
    Crash,
    Watchdog,
    Other(u8),
}

impl DomainInfo {
    pub fn is_dying(&self) -> bool {
        self.flags & hyper::XEN_DOMINF_DYING != 0
    }
    pub fn is_paused(&self) -> bool {
        self.flags & hyper::XEN_DOMINF_PAUSED != 0
    }
    /// `Some(reason)` once the guest has shut down (powered off, crashed, ...).
    pub fn shutdown_reason(&self) -> Option<ShutdownReason> {
        if self.flags & hyper::XEN_DOMINF_SHUTDOWN == 0 {
            return None;
        }
        Some(
            match ((self.flags >> hyper::XEN_DOMINF_SHUTDOWN_SHIFT) & 0xff) as u8 {
                0 => ShutdownReason::Poweroff,
                1 => ShutdownReason::Reboot,
                2 => ShutdownReason::Suspend,
                3 => ShutdownReason::Crash,
                4 => ShutdownReason::Watchdog,
                n => ShutdownReason::Other(n),
            },
        )
    }

    fn decode(b: &[u8]) -> Self {
        let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap_or_default());
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap_or_default());
        let mut handle = [0u8; 16];
        handle.copy_from_slice(&b[dominfo::HANDLE..dominfo::HANDLE + 16]);
        Self {
            domid: u16_at(dominfo::DOMAIN),
            flags: u32_at(dominfo::FLAGS),
            tot_pages: u64_at(dominfo::TOT_PAGES),
            max_pages: u64_at(dominfo::MAX_PAGES),
            shared_info_frame: u64_at(dominfo::SHARED_INFO_FRAME),
            cpu_time_ns: u64_at(dominfo::CPU_TIME),
            online_vcpus: u32_at(dominfo::NR_ONLINE_VCPUS),
            handle,
        }
    }
}

/// One memory map entry given to the guest (`XENMEM_set_memory_map`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryRegion {
    pub addr: u64,
    pub size: u64,
    pub ram: bool,
}

/// Every hypervisor operation the builder and lifecycle use. Domain ids are `domid_t`.
pub trait Hypervisor {
    /// A mapping of guest frames into our address space, unmapped on drop.
    type Mapping: std::ops::DerefMut<Target = [u8]>;

    fn create_domain(&self, cfg: &CreateDomain) -> Result<DomId>;
    fn max_vcpus(&self, domid: DomId, max: u32) -> Result<()>;
    fn max_mem(&self, domid: DomId, kib: u64) -> Result<()>;
    fn set_address_size(&self, domid: DomId, bits: u32) -> Result<()>;
    /// `XENMEM_populate_physmap`: `frames` holds the first guest pfn of each extent on entry
    /// and the machine frame of each allocated extent on return. Returns how many extents
    /// were populated (a short count means the hypervisor ran out of memory of that order).
    fn populate_physmap(&self, domid: DomId, order: u32, frames: &mut [u64]) -> Result<usize>;
    /// Maps machine frames of `domid` read-write.
    fn map_foreign(&self, domid: DomId, mfns: &[u64]) -> Result<Self::Mapping>;
    /// Maps frame 0 of `domid`'s shared grant table.
    fn map_grant_table(&self, domid: DomId) -> Result<Self::Mapping>;
    /// `EVTCHNOP_alloc_unbound` in `domid` for `remote`; returns the port in `domid`.
    fn alloc_unbound(&self, domid: DomId, remote: DomId) -> Result<u32>;
    fn domain_info(&self, domid: DomId) -> Result<DomainInfo>;
    /// Lists domains from `first` on (`XEN_SYSCTL_getdomaininfolist`), at most `max`.
    fn list_domains(&self, first: DomId, max: u32) -> Result<Vec<DomainInfo>>;
    fn hypercall_init(&self, domid: DomId, gmfn: u64) -> Result<()>;
    fn set_memory_map(&self, domid: DomId, map: &[MemoryRegion]) -> Result<()>;
    fn pin_l4_table(&self, domid: DomId, mfn: u64) -> Result<()>;
    fn set_vcpu_context(&self, domid: DomId, vcpu: u32, ctx: &VcpuGuestContext) -> Result<()>;
    fn unpause(&self, domid: DomId) -> Result<()>;
    fn pause(&self, domid: DomId) -> Result<()>;
    fn destroy(&self, domid: DomId) -> Result<()>;
}

/// Waits until `domid` no longer exists (a destroyed domain lingers as "dying" while any
/// mapping of its memory is held). Returns false on timeout.
pub fn wait_domain_gone<H: Hypervisor>(
    hv: &H,
    domid: DomId,
    timeout: std::time::Duration,
) -> Result<bool> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match hv.domain_info(domid) {
            Err(XenError::NoSuchDomain(_)) => return Ok(true),
            Err(XenError::Hypercall { source, .. })
                if source.raw_os_error() == Some(libc::ESRCH) =>
            {
                return Ok(true);
            }
            Err(e) => return Err(e),
            Ok(_) if std::time::Instant::now() >= deadline => return Ok(false),
            Ok(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
        }
    }
}

/// Encodes `struct xen_domctl_createdomain` for a domctl interface version: fields were
/// inserted before `arch` across releases (vmtrace_size in 4.15, grant_opts in 4.16,
/// cpupool_id in 4.17, altp2m in 4.19), so the tail's offsets move.
pub(crate) fn encode_createdomain(domctl_version: u32, cfg: &CreateDomain) -> Result<[u8; 128]> {
    let mut u = [0u8; 128];
    let put =
        |u: &mut [u8; 128], off: usize, v: u32| u[off..off + 4].copy_from_slice(&v.to_le_bytes());
    put(&mut u, 0, 0); // ssidref
    u[4..20].copy_from_slice(&cfg.handle);
    put(&mut u, 20, 0); // flags: PV, no HAP, no IOMMU
    put(&mut u, 24, 0); // iommu_opts
    put(&mut u, 28, cfg.max_vcpus);
    put(&mut u, 32, cfg.max_evtchn_port);
    put(&mut u, 36, cfg.max_grant_frames as u32);
    put(&mut u, 40, cfg.max_maptrack_frames as u32);
    // grant_opts = XEN_DOMCTL_GRANT_version(1): version 0 is rejected since 4.16.
    match domctl_version {
        0x12 | 0x13 => {} // 4.14: arch at 44; 4.15: vmtrace_size at 44, arch at 48 (all zero)
        0x14 => put(&mut u, 44, 1), // grant_opts, vmtrace_size 48, arch 52
        0x15 | 0x16 => put(&mut u, 44, 1), // + cpupool_id 52, arch 56
        0x17 | 0x18 => put(&mut u, 44, 1), // + altp2m 48, vmtrace 52, cpupool 56, arch 60
        v => {
            return Err(XenError::InvalidArgument(format!(
                "no createdomain layout for domctl {v:#x}"
            )));
        }
    }
    Ok(u)
}

/// Size of `struct xen_domctl_getdomaininfo` for a domctl interface version (gpaddr_bits and
/// padding were appended in 4.16; 4.15 added arch misc_flags).
pub(crate) fn dominfo_size(domctl_version: u32) -> usize {
    if domctl_version >= 0x14 { 112 } else { 104 }
}

impl PrivCmd {
    fn domctl(&self, what: &str, cmd: u32, domid: DomId, payload: [u8; 128]) -> Result<XenDomctl> {
        let op = XenDomctl {
            cmd,
            interface_version: self.version().domctl,
            domain: domid,
            _pad: [0; 3],
            u: payload,
        };
        let buf = HypercallBuffer::from_value(&op)?;
        self.hypercall(what, hyper::HYPERVISOR_DOMCTL, [buf.addr(), 0, 0, 0, 0])?;
        Ok(buf.read::<XenDomctl>())
    }

    fn memory_op(&self, what: &str, cmd: u64, arg: u64) -> Result<i64> {
        self.hypercall(what, hyper::HYPERVISOR_MEMORY_OP, [cmd, arg, 0, 0, 0])
    }
}

fn u64_payload(v: u64) -> [u8; 128] {
    let mut u = [0u8; 128];
    u[0..8].copy_from_slice(&v.to_le_bytes());
    u
}

impl Hypervisor for PrivCmd {
    type Mapping = ForeignMapping;

    fn create_domain(&self, cfg: &CreateDomain) -> Result<DomId> {
        let payload = encode_createdomain(self.version().domctl, cfg)?;
        // Domain id 0 asks Xen to pick a free one.
        let out = self.domctl("createdomain", hyper::XEN_DOMCTL_CREATEDOMAIN, 0, payload)?;
        Ok(out.domain)
    }

    fn max_vcpus(&self, domid: DomId, max: u32) -> Result<()> {
        self.domctl(
            "max_vcpus",
            hyper::XEN_DOMCTL_MAX_VCPUS,
            domid,
            u64_payload(max.into()),
        )?;
        Ok(())
    }

    fn max_mem(&self, domid: DomId, kib: u64) -> Result<()> {
        self.domctl(
            "max_mem",
            hyper::XEN_DOMCTL_MAX_MEM,
            domid,
            u64_payload(kib),
        )?;
        Ok(())
    }

    fn set_address_size(&self, domid: DomId, bits: u32) -> Result<()> {
        self.domctl(
            "set_address_size",
            hyper::XEN_DOMCTL_SET_ADDRESS_SIZE,
            domid,
            u64_payload(bits.into()),
        )?;
        Ok(())
    }

    fn populate_physmap(&self, domid: DomId, order: u32, frames: &mut [u64]) -> Result<usize> {
        let mut list = HypercallBuffer::new(frames.len() * 8)?;
        for (i, f) in frames.iter().enumerate() {
            list.as_mut_slice()[i * 8..i * 8 + 8].copy_from_slice(&f.to_le_bytes());
        }
        let res = hyper::XenMemoryReservation {
            extent_start: list.addr() as *mut u64,
            nr_extents: frames.len() as u64,
            extent_order: order,
            mem_flags: 0,
            domid,
        };
        let buf = HypercallBuffer::from_value(&res)?;
        let done = self.memory_op(
            "populate_physmap",
            hyper::XENMEM_POPULATE_PHYSMAP,
            buf.addr(),
        )?;
        let done = usize::try_from(done).unwrap_or(0).min(frames.len());
        for (i, f) in frames.iter_mut().enumerate().take(done) {
            *f = u64::from_le_bytes(
                list.as_slice()[i * 8..i * 8 + 8]
                    .try_into()
                    .unwrap_or_default(),
            );
        }
        Ok(done)
    }

    fn map_foreign(&self, domid: DomId, mfns: &[u64]) -> Result<ForeignMapping> {
        PrivCmd::map_foreign(self, domid, mfns)
    }

    fn map_grant_table(&self, domid: DomId) -> Result<ForeignMapping> {
        self.map_resource(
            domid,
            hyper::XENMEM_RESOURCE_GRANT_TABLE,
            hyper::XENMEM_RESOURCE_GRANT_TABLE_ID_SHARED,
            0,
            1,
        )
    }

    fn alloc_unbound(&self, domid: DomId, remote: DomId) -> Result<u32> {
        let op = hyper::EvtchnAllocUnbound {
            dom: domid,
            remote_dom: remote,
            port: 0,
        };
        let buf = HypercallBuffer::from_value(&op)?;
        self.hypercall(
            "evtchn alloc_unbound",
            hyper::HYPERVISOR_EVENT_CHANNEL_OP,
            [hyper::EVTCHNOP_ALLOC_UNBOUND, buf.addr(), 0, 0, 0],
        )?;
        Ok(buf.read::<hyper::EvtchnAllocUnbound>().port)
    }

    fn domain_info(&self, domid: DomId) -> Result<DomainInfo> {
        let out = self.domctl(
            "getdomaininfo",
            hyper::XEN_DOMCTL_GETDOMAININFO,
            domid,
            [0; 128],
        )?;
        let info = DomainInfo::decode(&out.u);
        // Before 4.18 getdomaininfo returns the next existing domain at or after `domid`.
        if info.domid != domid {
            return Err(XenError::NoSuchDomain(domid));
        }
        Ok(info)
    }

    /// Lists domains from `first` on (`XEN_SYSCTL_getdomaininfolist`), at most `max`.
    fn list_domains(&self, first: DomId, max: u32) -> Result<Vec<DomainInfo>> {
        let stride = dominfo_size(self.version().domctl);
        let out = HypercallBuffer::new(stride * max as usize)?;
        let mut u = [0u8; 128];
        u[0..2].copy_from_slice(&first.to_le_bytes());
        u[4..8].copy_from_slice(&max.to_le_bytes());
        u[8..16].copy_from_slice(&out.addr().to_le_bytes());
        let op = XenSysctl {
            cmd: hyper::XEN_SYSCTL_GETDOMAININFOLIST,
            interface_version: self.version().sysctl,
            u,
        };
        let buf = HypercallBuffer::from_value(&op)?;
        self.hypercall(
            "sysctl getdomaininfolist",
            hyper::HYPERVISOR_SYSCTL,
            [buf.addr(), 0, 0, 0, 0],
        )?;
        let done: XenSysctl = buf.read();
        let n = u32::from_le_bytes(done.u[16..20].try_into().unwrap_or_default()).min(max) as usize;
        Ok((0..n)
            .map(|i| DomainInfo::decode(&out.as_slice()[i * stride..(i + 1) * stride]))
            .collect())
    }

    fn hypercall_init(&self, domid: DomId, gmfn: u64) -> Result<()> {
        self.domctl(
            "hypercall_init",
            hyper::XEN_DOMCTL_HYPERCALL_INIT,
            domid,
            u64_payload(gmfn),
        )?;
        Ok(())
    }

    fn set_memory_map(&self, domid: DomId, map: &[MemoryRegion]) -> Result<()> {
        let mut entries = HypercallBuffer::new(map.len() * size_of::<hyper::E820Entry>())?;
        for (i, r) in map.iter().enumerate() {
            let e = hyper::E820Entry {
                addr: r.addr,
                size: r.size,
                ty: if r.ram { hyper::E820_RAM } else { 2 },
            };
            let off = i * size_of::<hyper::E820Entry>();
            let bytes = crate::sys::as_bytes(&e);
            entries.as_mut_slice()[off..off + bytes.len()].copy_from_slice(bytes);
        }
        let fmap = hyper::XenForeignMemoryMap {
            domid,
            map: hyper::XenMemoryMap {
                nr_entries: map.len() as u32,
                buffer: entries.addr() as *const hyper::E820Entry,
            },
        };
        let buf = HypercallBuffer::from_value(&fmap)?;
        self.memory_op("set_memory_map", hyper::XENMEM_SET_MEMORY_MAP, buf.addr())?;
        Ok(())
    }

    fn pin_l4_table(&self, domid: DomId, mfn: u64) -> Result<()> {
        let op = hyper::MmuextOp {
            cmd: hyper::MMUEXT_PIN_L4_TABLE,
            _pad: 0,
            arg1: mfn,
            arg2: 0,
        };
        let buf = HypercallBuffer::from_value(&op)?;
        self.hypercall(
            "mmuext pin_l4_table",
            hyper::HYPERVISOR_MMUEXT_OP,
            [buf.addr(), 1, 0, u64::from(domid), 0],
        )?;
        Ok(())
    }

    fn set_vcpu_context(&self, domid: DomId, vcpu: u32, ctx: &VcpuGuestContext) -> Result<()> {
        let cbuf = HypercallBuffer::from_value(ctx)?;
        let mut u = [0u8; 128];
        u[0..4].copy_from_slice(&vcpu.to_le_bytes());
        u[8..16].copy_from_slice(&cbuf.addr().to_le_bytes());
        self.domctl("setvcpucontext", hyper::XEN_DOMCTL_SETVCPUCONTEXT, domid, u)?;
        Ok(())
    }

    fn unpause(&self, domid: DomId) -> Result<()> {
        self.domctl(
            "unpausedomain",
            hyper::XEN_DOMCTL_UNPAUSEDOMAIN,
            domid,
            [0; 128],
        )?;
        Ok(())
    }

    fn pause(&self, domid: DomId) -> Result<()> {
        self.domctl(
            "pausedomain",
            hyper::XEN_DOMCTL_PAUSEDOMAIN,
            domid,
            [0; 128],
        )?;
        Ok(())
    }

    fn destroy(&self, domid: DomId) -> Result<()> {
        // destroydomain is preemptible: Xen returns EAGAIN ("-ERESTART") while it tears the
        // domain down, and the caller repeats it.
        for _ in 0..10_000 {
            match self.domctl(
                "destroydomain",
                hyper::XEN_DOMCTL_DESTROYDOMAIN,
                domid,
                [0; 128],
            ) {
                Err(XenError::Hypercall { source, .. })
                    if source.raw_os_error() == Some(libc::EAGAIN) =>
                {
                    continue;
                }
                Err(XenError::Hypercall { source, .. })
                    if source.raw_os_error() == Some(libc::ESRCH) =>
                {
                    return Ok(());
                }
                other => return other.map(|_| ()),
            }
        }
        Err(XenError::InvalidArgument(format!(
            "destroydomain {domid} kept returning EAGAIN"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn createdomain_layout_per_version() {
        let cfg = CreateDomain::pv([7; 16], 2);
        let u = encode_createdomain(0x15, &cfg).unwrap();
        assert_eq!(&u[4..20], &[7; 16]);
        assert_eq!(u32::from_le_bytes(u[28..32].try_into().unwrap()), 2);
        assert_eq!(u32::from_le_bytes(u[32..36].try_into().unwrap()), 1023);
        assert_eq!(u32::from_le_bytes(u[36..40].try_into().unwrap()), 32);
        assert_eq!(
            u32::from_le_bytes(u[44..48].try_into().unwrap()),
            1,
            "grant_opts v1"
        );
        let old = encode_createdomain(0x12, &cfg).unwrap();
        assert_eq!(
            u32::from_le_bytes(old[44..48].try_into().unwrap()),
            0,
            "4.14 has no grant_opts"
        );
        assert!(encode_createdomain(0x99, &cfg).is_err());
    }

    #[test]
    fn dominfo_decoding_and_shutdown_reason() {
        let mut b = [0u8; 128];
        b[0..2].copy_from_slice(&5u16.to_le_bytes());
        let flags = hyper::XEN_DOMINF_SHUTDOWN | (3 << hyper::XEN_DOMINF_SHUTDOWN_SHIFT);
        b[4..8].copy_from_slice(&flags.to_le_bytes());
        b[48..56].copy_from_slice(&0x1234u64.to_le_bytes());
        b[76..92].copy_from_slice(&[9; 16]);
        let info = DomainInfo::decode(&b);
        assert_eq!(info.domid, 5);
        assert_eq!(info.shared_info_frame, 0x1234);
        assert_eq!(info.handle, [9; 16]);
        assert_eq!(info.shutdown_reason(), Some(ShutdownReason::Crash));
        assert_eq!(dominfo_size(0x15), 112);
        assert_eq!(dominfo_size(0x12), 104);
    }
}
