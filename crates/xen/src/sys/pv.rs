//! x86_64 PV guest boot ABI: `start_info`, the vCPU context, the shared ring layouts.

/// `MAX_GUEST_CMDLINE` (xen.h).
pub const MAX_GUEST_CMDLINE: usize = 1024;

/// `struct start_info` (xen.h), x86_64 layout, domU variant of the console union.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct StartInfo {
    pub magic: [u8; 32],
    pub nr_pages: u64,
    pub shared_info: u64,
    pub flags: u32,
    pub _pad0: u32,
    pub store_mfn: u64,
    pub store_evtchn: u32,
    pub _pad1: u32,
    pub console_mfn: u64,
    pub console_evtchn: u32,
    pub _pad2: u32,
    pub pt_base: u64,
    pub nr_pt_frames: u64,
    pub mfn_list: u64,
    pub mod_start: u64,
    pub mod_len: u64,
    pub cmd_line: [u8; MAX_GUEST_CMDLINE],
    pub first_p2m_pfn: u64,
    pub nr_p2m_frames: u64,
}

/// `struct cpu_user_regs` (arch-x86/xen-x86_64.h).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct CpuUserRegs {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub rbp: u64,
    pub rbx: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rax: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub error_code: u32,
    pub entry_vector: u32,
    pub rip: u64,
    pub cs: u16,
    pub _pad0: u16,
    pub saved_upcall_mask: u8,
    pub _pad1: [u8; 3],
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u16,
    pub _pad2: [u16; 3],
    pub es: u16,
    pub _pad3: [u16; 3],
    pub ds: u16,
    pub _pad4: [u16; 3],
    pub fs: u16,
    pub _pad5: [u16; 3],
    pub gs: u16,
    pub _pad6: [u16; 3],
}

/// `struct trap_info` (arch-x86/xen.h).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct TrapInfo {
    pub vector: u8,
    pub flags: u8,
    pub cs: u16,
    pub address: u64,
}

/// `struct vcpu_guest_context` (arch-x86/xen.h), x86_64 non-`__XEN__` layout.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct VcpuGuestContext {
    pub fpu_ctxt: [u8; 512],
    pub flags: u64,
    pub user_regs: CpuUserRegs,
    pub trap_ctxt: [TrapInfo; 256],
    pub ldt_base: u64,
    pub ldt_ents: u64,
    pub gdt_frames: [u64; 16],
    pub gdt_ents: u64,
    pub kernel_ss: u64,
    pub kernel_sp: u64,
    pub ctrlreg: [u64; 8],
    pub debugreg: [u64; 8],
    pub event_callback_eip: u64,
    pub failsafe_callback_eip: u64,
    pub syscall_callback_eip: u64,
    pub vm_assist: u64,
    pub fs_base: u64,
    pub gs_base_kernel: u64,
    pub gs_base_user: u64,
}

impl Default for VcpuGuestContext {
    fn default() -> Self {
        Self {
            fpu_ctxt: [0; 512],
            flags: 0,
            user_regs: CpuUserRegs::default(),
            trap_ctxt: [TrapInfo::default(); 256],
            ldt_base: 0,
            ldt_ents: 0,
            gdt_frames: [0; 16],
            gdt_ents: 0,
            kernel_ss: 0,
            kernel_sp: 0,
            ctrlreg: [0; 8],
            debugreg: [0; 8],
            event_callback_eip: 0,
            failsafe_callback_eip: 0,
            syscall_callback_eip: 0,
            vm_assist: 0,
            fs_base: 0,
            gs_base_kernel: 0,
            gs_base_user: 0,
        }
    }
}

/// `VGCF_in_kernel` (arch-x86/xen.h).
pub const VGCF_IN_KERNEL: u64 = 1 << 2;
/// `VGCF_online` (arch-x86/xen.h).
pub const VGCF_ONLINE: u64 = 1 << 5;
/// `FLAT_KERNEL_CS64` (arch-x86/xen-x86_64.h).
pub const FLAT_KERNEL_CS64: u16 = 0xe033;
/// `FLAT_KERNEL_SS64` (arch-x86/xen-x86_64.h).
pub const FLAT_KERNEL_SS64: u16 = 0xe02b;
/// `FLAT_KERNEL_DS64` (arch-x86/xen-x86_64.h): the NULL selector.
pub const FLAT_KERNEL_DS64: u16 = 0;
/// Interrupt flag in RFLAGS (Intel SDM): the guest starts with events deliverable.
pub const X86_EFLAGS_IF: u64 = 1 << 9;

/// `struct shared_info` (xen.h): the per-vCPU `vcpu_info` array at offset 0, 64 bytes each,
/// `XEN_LEGACY_MAX_VCPUS` (32) entries on x86; `evtchn_upcall_mask` is byte 1 of each.
pub const SHARED_INFO_VCPU_INFO_SIZE: usize = 64;
pub const XEN_LEGACY_MAX_VCPUS: usize = 32;
pub const VCPU_INFO_UPCALL_MASK_OFFSET: usize = 1;

/// `struct xencons_interface` (io/console.h): `in[1024]`, `out[2048]`, then the four
/// `uint32_t` indexes in_cons, in_prod, out_cons, out_prod.
pub mod console {
    pub const IN_OFFSET: usize = 0;
    pub const IN_SIZE: usize = 1024;
    pub const OUT_OFFSET: usize = 1024;
    pub const OUT_SIZE: usize = 2048;
    pub const IN_CONS: usize = 3072;
    pub const IN_PROD: usize = 3076;
    pub const OUT_CONS: usize = 3080;
    pub const OUT_PROD: usize = 3084;
}

/// The `x86` page-table entry bits (Intel SDM vol. 3 §4.5) used by the PV builder.
pub mod pte {
    pub const PRESENT: u64 = 1 << 0;
    pub const RW: u64 = 1 << 1;
    pub const USER: u64 = 1 << 2;
    pub const ACCESSED: u64 = 1 << 5;
    pub const DIRTY: u64 = 1 << 6;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::offset_of;

    #[test]
    fn start_info_layout() {
        assert_eq!(offset_of!(StartInfo, nr_pages), 32);
        assert_eq!(offset_of!(StartInfo, shared_info), 40);
        assert_eq!(offset_of!(StartInfo, flags), 48);
        assert_eq!(offset_of!(StartInfo, store_mfn), 56);
        assert_eq!(offset_of!(StartInfo, store_evtchn), 64);
        assert_eq!(offset_of!(StartInfo, console_mfn), 72);
        assert_eq!(offset_of!(StartInfo, console_evtchn), 80);
        assert_eq!(offset_of!(StartInfo, pt_base), 88);
        assert_eq!(offset_of!(StartInfo, mod_len), 120);
        assert_eq!(offset_of!(StartInfo, cmd_line), 128);
        assert_eq!(offset_of!(StartInfo, first_p2m_pfn), 1152);
        assert_eq!(size_of::<StartInfo>(), 1168);
    }

    #[test]
    fn vcpu_context_layout() {
        assert_eq!(size_of::<CpuUserRegs>(), 200);
        assert_eq!(offset_of!(CpuUserRegs, rip), 128);
        assert_eq!(offset_of!(CpuUserRegs, cs), 136);
        assert_eq!(offset_of!(CpuUserRegs, rflags), 144);
        assert_eq!(offset_of!(CpuUserRegs, rsp), 152);
        assert_eq!(offset_of!(CpuUserRegs, ss), 160);
        assert_eq!(size_of::<TrapInfo>(), 16);
        assert_eq!(offset_of!(VcpuGuestContext, user_regs), 520);
        assert_eq!(offset_of!(VcpuGuestContext, trap_ctxt), 720);
        assert_eq!(offset_of!(VcpuGuestContext, ctrlreg), 4984);
        assert_eq!(offset_of!(VcpuGuestContext, vm_assist), 5136);
        assert_eq!(size_of::<VcpuGuestContext>(), 5168);
    }
}
