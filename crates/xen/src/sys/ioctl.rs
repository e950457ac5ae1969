//! ioctl numbers and argument structs of the Linux Xen drivers and the loop driver.
//!
//! Xen's drivers encode their ioctls as `_IOC(_IOC_NONE, type, nr, size)`: direction "none"
//! but with the argument size, which the generic ioctl macros do not produce, so the numbers
//! are computed here with [`ioc_none`].

/// `_IOC(_IOC_NONE, ty, nr, size)` from `include/uapi/asm-generic/ioctl.h`:
/// nr in bits 0..8, type in 8..16, size in 16..30, direction (0 = none) in 30..32. The type is
/// `libc::Ioctl`: `unsigned long` for glibc, `int` for musl (the lab driver is a static musl
/// binary).
pub const fn ioc_none(ty: u8, nr: u8, size: usize) -> libc::Ioctl {
    ((size as libc::Ioctl) << 16) | ((ty as libc::Ioctl) << 8) | nr as libc::Ioctl
}

// ---------------------------------------------------------------- privcmd
// Source: include/uapi/xen/privcmd.h (Linux).

/// `struct privcmd_hypercall`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct PrivcmdHypercall {
    pub op: u64,
    pub arg: [u64; 5],
}

/// `struct privcmd_mmapbatch_v2`.
#[repr(C)]
#[derive(Debug)]
pub struct PrivcmdMmapBatchV2 {
    pub num: u32,
    pub dom: u16,
    pub addr: u64,
    pub arr: *const u64,
    pub err: *mut i32,
}

/// `struct privcmd_mmap_resource`.
#[repr(C)]
#[derive(Debug, Default)]
pub struct PrivcmdMmapResource {
    pub dom: u16,
    pub ty: u32,
    pub id: u32,
    pub idx: u32,
    pub num: u64,
    pub addr: u64,
}

pub const IOCTL_PRIVCMD_HYPERCALL: libc::Ioctl = ioc_none(b'P', 0, size_of::<PrivcmdHypercall>());
pub const IOCTL_PRIVCMD_MMAPBATCH_V2: libc::Ioctl =
    ioc_none(b'P', 4, size_of::<PrivcmdMmapBatchV2>());
pub const IOCTL_PRIVCMD_MMAP_RESOURCE: libc::Ioctl =
    ioc_none(b'P', 7, size_of::<PrivcmdMmapResource>());

// ---------------------------------------------------------------- evtchn
// Source: include/uapi/xen/evtchn.h (Linux). The bind ioctls return the local port as the
// ioctl's return value.

/// `struct ioctl_evtchn_bind_interdomain`.
#[repr(C)]
#[derive(Debug, Default)]
pub struct EvtchnBindInterdomain {
    pub remote_domain: u32,
    pub remote_port: u32,
}

/// `struct ioctl_evtchn_bind_unbound_port`.
#[repr(C)]
#[derive(Debug, Default)]
pub struct EvtchnBindUnboundPort {
    pub remote_domain: u32,
}

/// `struct ioctl_evtchn_unbind` and `struct ioctl_evtchn_notify` (same shape).
#[repr(C)]
#[derive(Debug, Default)]
pub struct EvtchnPort {
    pub port: u32,
}

pub const IOCTL_EVTCHN_BIND_INTERDOMAIN: libc::Ioctl =
    ioc_none(b'E', 1, size_of::<EvtchnBindInterdomain>());
pub const IOCTL_EVTCHN_BIND_UNBOUND_PORT: libc::Ioctl =
    ioc_none(b'E', 2, size_of::<EvtchnBindUnboundPort>());
pub const IOCTL_EVTCHN_UNBIND: libc::Ioctl = ioc_none(b'E', 3, size_of::<EvtchnPort>());
pub const IOCTL_EVTCHN_NOTIFY: libc::Ioctl = ioc_none(b'E', 4, size_of::<EvtchnPort>());

// ---------------------------------------------------------------- gntdev
// Source: include/uapi/xen/gntdev.h (Linux).

/// `struct ioctl_gntdev_grant_ref`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct GntdevGrantRef {
    pub domid: u32,
    pub r#ref: u32,
}

/// `struct ioctl_gntdev_map_grant_ref` with its flexible array sized at run time: the header
/// is followed by `count` [`GntdevGrantRef`]s (the C struct declares `refs[1]`).
#[repr(C)]
#[derive(Debug, Default)]
pub struct GntdevMapGrantRefHeader {
    pub count: u32,
    pub pad: u32,
    pub index: u64,
}

/// `struct ioctl_gntdev_unmap_grant_ref`.
#[repr(C)]
#[derive(Debug, Default)]
pub struct GntdevUnmapGrantRef {
    pub index: u64,
    pub count: u32,
    pub pad: u32,
}

/// `struct ioctl_gntdev_unmap_notify`.
#[repr(C)]
#[derive(Debug, Default)]
pub struct GntdevUnmapNotify {
    pub index: u64,
    pub action: u32,
    pub event_channel_port: u32,
}

/// Size the header-with-one-ref C struct has: the ioctl number encodes it.
pub const GNTDEV_MAP_GRANT_REF_SIZE: usize =
    size_of::<GntdevMapGrantRefHeader>() + size_of::<GntdevGrantRef>();
pub const IOCTL_GNTDEV_MAP_GRANT_REF: libc::Ioctl = ioc_none(b'G', 0, GNTDEV_MAP_GRANT_REF_SIZE);
pub const IOCTL_GNTDEV_UNMAP_GRANT_REF: libc::Ioctl =
    ioc_none(b'G', 1, size_of::<GntdevUnmapGrantRef>());
pub const IOCTL_GNTDEV_SET_UNMAP_NOTIFY: libc::Ioctl =
    ioc_none(b'G', 7, size_of::<GntdevUnmapNotify>());
/// `UNMAP_NOTIFY_SEND_EVENT`: the driver notifies the port when the mapping goes away.
pub const UNMAP_NOTIFY_SEND_EVENT: u32 = 0x2;

// ---------------------------------------------------------------- loop
// Source: include/uapi/linux/loop.h (Linux).

/// `LOOP_CTL_GET_FREE` on /dev/loop-control: returns a free device number.
pub const LOOP_CTL_GET_FREE: libc::Ioctl = 0x4C82;
/// `LOOP_CONFIGURE` on /dev/loopN, argument `struct loop_config`.
pub const LOOP_CONFIGURE: libc::Ioctl = 0x4C0A;
/// `LOOP_CLR_FD` on /dev/loopN.
pub const LOOP_CLR_FD: libc::Ioctl = 0x4C01;
/// `LOOP_GET_STATUS64` on /dev/loopN, argument `struct loop_info64`.
pub const LOOP_GET_STATUS64: libc::Ioctl = 0x4C05;
/// `LO_FLAGS_READ_ONLY`.
pub const LO_FLAGS_READ_ONLY: u32 = 1;
/// `LO_FLAGS_AUTOCLEAR`.
pub const LO_FLAGS_AUTOCLEAR: u32 = 4;
/// `LO_NAME_SIZE`.
pub const LO_NAME_SIZE: usize = 64;

/// `struct loop_info64`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct LoopInfo64 {
    pub lo_device: u64,
    pub lo_inode: u64,
    pub lo_rdevice: u64,
    pub lo_offset: u64,
    pub lo_sizelimit: u64,
    pub lo_number: u32,
    pub lo_encrypt_type: u32,
    pub lo_encrypt_key_size: u32,
    pub lo_flags: u32,
    pub lo_file_name: [u8; LO_NAME_SIZE],
    pub lo_crypt_name: [u8; LO_NAME_SIZE],
    pub lo_encrypt_key: [u8; 32],
    pub lo_init: [u64; 2],
}

/// `struct loop_config`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct LoopConfig {
    pub fd: u32,
    pub block_size: u32,
    pub info: LoopInfo64,
    pub reserved: [u64; 8],
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_match_the_kernel_encoding() {
        // Values computed from the C headers' _IOC macros (and cross-checked with nix/rustix).
        assert_eq!(IOCTL_PRIVCMD_HYPERCALL, 0x0030_5000);
        assert_eq!(IOCTL_PRIVCMD_MMAPBATCH_V2, 0x0020_5004);
        assert_eq!(IOCTL_PRIVCMD_MMAP_RESOURCE, 0x0020_5007);
        assert_eq!(IOCTL_EVTCHN_BIND_INTERDOMAIN, 0x0008_4501);
        assert_eq!(IOCTL_EVTCHN_BIND_UNBOUND_PORT, 0x0004_4502);
        assert_eq!(IOCTL_EVTCHN_NOTIFY, 0x0004_4504);
        assert_eq!(IOCTL_GNTDEV_MAP_GRANT_REF, 0x0018_4700);
        assert_eq!(IOCTL_GNTDEV_UNMAP_GRANT_REF, 0x0010_4701);
    }

    #[test]
    fn abi_struct_sizes() {
        assert_eq!(size_of::<PrivcmdHypercall>(), 48);
        assert_eq!(size_of::<PrivcmdMmapBatchV2>(), 32);
        assert_eq!(size_of::<PrivcmdMmapResource>(), 32);
        assert_eq!(std::mem::offset_of!(PrivcmdMmapResource, num), 16);
        assert_eq!(size_of::<LoopInfo64>(), 232);
        assert_eq!(size_of::<LoopConfig>(), 304);
    }
}
