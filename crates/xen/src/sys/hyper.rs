//! The hypercall ABI: hypercall numbers, domctl/sysctl envelopes, memory_op, event channel,
//! mmuext and grant-table structures, from Xen's public headers (`xen/include/public/`).
//!
//! The domctl and sysctl payloads are unions whose members changed layout between Xen
//! releases, so they are kept as byte arrays here and encoded per interface version by
//! `crate::domctl`; the fixed-layout structs are plain `repr(C)` types.

// ---------------------------------------------------------------- xen.h
/// `__HYPERVISOR_memory_op`.
pub const HYPERVISOR_MEMORY_OP: u64 = 12;
/// `__HYPERVISOR_xen_version`.
pub const HYPERVISOR_XEN_VERSION: u64 = 17;
/// `__HYPERVISOR_mmuext_op`.
pub const HYPERVISOR_MMUEXT_OP: u64 = 26;
/// `__HYPERVISOR_event_channel_op`.
pub const HYPERVISOR_EVENT_CHANNEL_OP: u64 = 32;
/// `__HYPERVISOR_sysctl`.
pub const HYPERVISOR_SYSCTL: u64 = 35;
/// `__HYPERVISOR_domctl`.
pub const HYPERVISOR_DOMCTL: u64 = 36;

/// `DOMID_SELF` (xen.h).
pub const DOMID_SELF: u16 = 0x7FF0;
/// `DOMID_FIRST_RESERVED` (xen.h): domids from here on are special.
pub const DOMID_FIRST_RESERVED: u16 = 0x7FF0;

/// `MMUEXT_PIN_L4_TABLE` (xen.h).
pub const MMUEXT_PIN_L4_TABLE: u32 = 3;

/// `struct mmuext_op` (xen.h), x86_64 layout.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct MmuextOp {
    pub cmd: u32,
    pub _pad: u32,
    pub arg1: u64,
    pub arg2: u64,
}

/// `VMASST_TYPE_pae_extended_cr3` (xen.h): the vm_assist bit libxc-built guests start with.
pub const VMASST_TYPE_PAE_EXTENDED_CR3: u64 = 3;

/// `SIF_*` start_info flags (xen.h).
pub const SIF_MOD_START_PFN: u32 = 1 << 3;

// ---------------------------------------------------------------- version.h
/// `XENVER_version`: the hypercall returns `major << 16 | minor`.
pub const XENVER_VERSION: u64 = 0;
/// `XENVER_extraversion`: writes a `char[16]`.
pub const XENVER_EXTRAVERSION: u64 = 1;

// ---------------------------------------------------------------- domctl.h
pub const XEN_DOMCTL_CREATEDOMAIN: u32 = 1;
pub const XEN_DOMCTL_DESTROYDOMAIN: u32 = 2;
pub const XEN_DOMCTL_PAUSEDOMAIN: u32 = 3;
pub const XEN_DOMCTL_UNPAUSEDOMAIN: u32 = 4;
pub const XEN_DOMCTL_GETDOMAININFO: u32 = 5;
pub const XEN_DOMCTL_MAX_MEM: u32 = 11;
pub const XEN_DOMCTL_SETVCPUCONTEXT: u32 = 12;
pub const XEN_DOMCTL_MAX_VCPUS: u32 = 15;
pub const XEN_DOMCTL_HYPERCALL_INIT: u32 = 22;
pub const XEN_DOMCTL_SET_ADDRESS_SIZE: u32 = 35;

/// `XEN_DOMINF_*` flags of `struct xen_domctl_getdomaininfo`.
pub const XEN_DOMINF_DYING: u32 = 1 << 0;
pub const XEN_DOMINF_HVM_GUEST: u32 = 1 << 1;
pub const XEN_DOMINF_SHUTDOWN: u32 = 1 << 2;
pub const XEN_DOMINF_PAUSED: u32 = 1 << 3;
pub const XEN_DOMINF_BLOCKED: u32 = 1 << 4;
pub const XEN_DOMINF_RUNNING: u32 = 1 << 5;
/// Shutdown reason: bits 16..24 (`XEN_DOMINF_shutdownshift`, `XEN_DOMINF_shutdownmask`).
pub const XEN_DOMINF_SHUTDOWN_SHIFT: u32 = 16;

/// `struct xen_domctl` (domctl.h): header plus a 128-byte union (`uint8_t pad[128]`).
#[repr(C, align(8))]
#[derive(Debug, Clone, Copy)]
pub struct XenDomctl {
    pub cmd: u32,
    pub interface_version: u32,
    pub domain: u16,
    pub _pad: [u16; 3],
    pub u: [u8; 128],
}

/// `struct xen_sysctl` (sysctl.h): header plus a 128-byte union.
#[repr(C, align(8))]
#[derive(Debug, Clone, Copy)]
pub struct XenSysctl {
    pub cmd: u32,
    pub interface_version: u32,
    pub u: [u8; 128],
}

/// `XEN_SYSCTL_getdomaininfolist` (sysctl.h).
pub const XEN_SYSCTL_GETDOMAININFOLIST: u32 = 6;

/// Offsets inside `struct xen_domctl_getdomaininfo` that every supported release shares
/// (4.14..4.22: fields were only appended after `cpupool`).
pub mod dominfo {
    pub const DOMAIN: usize = 0;
    pub const FLAGS: usize = 4;
    pub const TOT_PAGES: usize = 8;
    pub const MAX_PAGES: usize = 16;
    pub const SHARED_INFO_FRAME: usize = 48;
    pub const CPU_TIME: usize = 56;
    pub const NR_ONLINE_VCPUS: usize = 64;
    pub const MAX_VCPU_ID: usize = 68;
    pub const HANDLE: usize = 76;
}

// ---------------------------------------------------------------- memory.h
pub const XENMEM_POPULATE_PHYSMAP: u64 = 6;
pub const XENMEM_SET_MEMORY_MAP: u64 = 13;
pub const XENMEM_RESOURCE_GRANT_TABLE: u32 = 1;
pub const XENMEM_RESOURCE_GRANT_TABLE_ID_SHARED: u32 = 0;

/// `struct xen_memory_reservation` (memory.h), x86_64 layout.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct XenMemoryReservation {
    pub extent_start: *mut u64,
    pub nr_extents: u64,
    pub extent_order: u32,
    pub mem_flags: u32,
    pub domid: u16,
}

/// `struct xen_memory_map` (memory.h).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct XenMemoryMap {
    pub nr_entries: u32,
    pub buffer: *const E820Entry,
}

/// `struct xen_foreign_memory_map` (memory.h): a domid and a `struct xen_memory_map`, which
/// is pointer-aligned, so it starts at offset 8.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct XenForeignMemoryMap {
    pub domid: u16,
    pub map: XenMemoryMap,
}

/// One entry of the memory map buffer: the BIOS INT 0x15 E820 format (memory.h).
#[repr(C, packed)]
#[derive(Debug, Clone, Copy)]
pub struct E820Entry {
    pub addr: u64,
    pub size: u64,
    pub ty: u32,
}
/// E820 type "usable RAM".
pub const E820_RAM: u32 = 1;

// ---------------------------------------------------------------- event_channel.h
pub const EVTCHNOP_ALLOC_UNBOUND: u64 = 6;

/// `struct evtchn_alloc_unbound` (event_channel.h).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct EvtchnAllocUnbound {
    pub dom: u16,
    pub remote_dom: u16,
    pub port: u32,
}

// ---------------------------------------------------------------- grant_table.h
/// `struct grant_entry_v1` (grant_table.h).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct GrantEntryV1 {
    pub flags: u16,
    pub domid: u16,
    pub frame: u32,
}
/// `GTF_permit_access`.
pub const GTF_PERMIT_ACCESS: u16 = 1;
/// `GNTTAB_RESERVED_CONSOLE`: the grant ref the builder seeds for the console ring.
pub const GNTTAB_RESERVED_CONSOLE: u32 = 0;
/// `GNTTAB_RESERVED_XENSTORE`: the grant ref the builder seeds for the xenstore ring.
pub const GNTTAB_RESERVED_XENSTORE: u32 = 1;

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::offset_of;

    #[test]
    fn abi_layouts() {
        assert_eq!(size_of::<XenDomctl>(), 144);
        assert_eq!(offset_of!(XenDomctl, u), 16);
        assert_eq!(size_of::<XenSysctl>(), 136);
        assert_eq!(offset_of!(XenSysctl, u), 8);
        assert_eq!(size_of::<MmuextOp>(), 24);
        assert_eq!(size_of::<XenMemoryReservation>(), 32);
        assert_eq!(offset_of!(XenMemoryReservation, domid), 24);
        assert_eq!(size_of::<XenForeignMemoryMap>(), 24);
        assert_eq!(offset_of!(XenForeignMemoryMap, map), 8);
        assert_eq!(offset_of!(XenMemoryMap, buffer), 8);
        assert_eq!(size_of::<E820Entry>(), 20);
        assert_eq!(size_of::<EvtchnAllocUnbound>(), 8);
        assert_eq!(size_of::<GrantEntryV1>(), 8);
    }
}
