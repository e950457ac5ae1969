//! The x86_64 PV domain builder: from a parsed kernel (and optional initrd) to a paused
//! domain ready to be introduced to xenstored and unpaused. Generic over [`Hypervisor`] so
//! its output (memory contents, page tables, start_info, vCPU state) is testable without Xen.
//!
//! Steps (facts from `xen.h`, `domctl.h`, `memory.h`, `arch-x86/xen.h`): createdomain,
//! max_vcpus, max_mem, 64-bit address size, populate the physmap (2 MiB extents first, then
//! 4 KiB pages), lay out the bootstrap region ([`layout`]), copy the kernel and initrd, write
//! the p2m list, start_info, 4-level page tables, allocate the console and xenstore event
//! channels, prepare shared_info, the hypercall page and the memory map, pin the L4 table,
//! set vCPU 0's context and seed grant entries 0 (console) and 1 (xenstore) for dom0.

pub mod introduce;
pub mod layout;
#[cfg(test)]
mod tests;

pub use introduce::introduce;
pub use layout::{Layout, LayoutError};

use crate::hypervisor::{CreateDomain, Hypervisor, MemoryRegion};
use crate::privcmd::PAGE_SIZE;
use crate::sys::hyper::{GNTTAB_RESERVED_CONSOLE, GNTTAB_RESERVED_XENSTORE, GTF_PERMIT_ACCESS};
use crate::sys::pv::{self, StartInfo, VcpuGuestContext, pte};
use crate::{DomId, Result, XenError};
use spore_kernel::KernelImage;

const PAGE: u64 = PAGE_SIZE as u64;
/// 2 MiB extents: `extent_order` 9.
const SUPERPAGE_ORDER: u32 = 9;
const SUPERPAGE_PAGES: u64 = 1 << SUPERPAGE_ORDER;
/// Extents per populate_physmap call.
const POPULATE_BATCH: usize = 1024;
/// Extra KiB allowed above the guest's memory (`max_mem`), as xl does.
const MAXMEM_SLACK_KIB: u64 = 1024;
/// The domain that serves the console and xenstore rings.
const BACKEND_DOMID: DomId = 0;

/// What to build.
#[derive(Debug, Clone)]
pub struct DomainConfig {
    /// Xen's domain handle; spore passes the zone UUID.
    pub handle: [u8; 16],
    pub memory_mib: u64,
    pub vcpus: u32,
    pub cmdline: String,
}

impl DomainConfig {
    pub fn new(handle: [u8; 16], memory_mib: u64, vcpus: u32, cmdline: String) -> Self {
        Self {
            handle,
            memory_mib,
            vcpus,
            cmdline,
        }
    }
}

/// A built, still paused domain and what xenstored and the console backend need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltDomain {
    pub domid: DomId,
    pub nr_pages: u64,
    pub store_mfn: u64,
    pub store_port: u32,
    pub console_mfn: u64,
    pub console_port: u32,
    pub layout: Layout,
}

/// Builds PV domains through a [`Hypervisor`].
#[derive(Debug)]
pub struct DomainBuilder<'h, H: Hypervisor> {
    hv: &'h H,
}

impl<'h, H: Hypervisor> DomainBuilder<'h, H> {
    pub fn new(hv: &'h H) -> Self {
        Self { hv }
    }

    /// Creates and fills a domain; on any failure after createdomain the domain is
    /// destroyed again, so nothing half-built remains.
    pub fn build(
        &self,
        cfg: &DomainConfig,
        kernel: &KernelImage,
        initrd: Option<&[u8]>,
    ) -> Result<BuiltDomain> {
        validate(cfg, kernel, initrd)?;
        let create = CreateDomain::pv(cfg.handle, cfg.vcpus);
        let domid = self.hv.create_domain(&create)?;
        match self.fill(domid, cfg, kernel, initrd) {
            Ok(b) => Ok(b),
            Err(e) => {
                if let Err(d) = self.hv.destroy(domid) {
                    tracing::warn!(domid, error = %d, "destroying a half-built domain failed");
                }
                Err(e)
            }
        }
    }

    fn fill(
        &self,
        domid: DomId,
        cfg: &DomainConfig,
        kernel: &KernelImage,
        initrd: Option<&[u8]>,
    ) -> Result<BuiltDomain> {
        let hv = self.hv;
        let nr_pages = cfg.memory_mib * 256;
        let initrd = initrd.unwrap_or_default();
        let layout = Layout::compute(&kernel.info, initrd.len() as u64, nr_pages).map_err(|e| match e {
            LayoutError::TooSmall { needed_mib } => XenError::Build(format!(
                "{} MiB is too little memory for this kernel and initrd: at least {needed_mib} MiB is needed",
                cfg.memory_mib
            )),
            LayoutError::Overflow => XenError::Build("kernel layout overflows the address space".into()),
        })?;
        hv.max_vcpus(domid, cfg.vcpus)?;
        hv.max_mem(domid, cfg.memory_mib * 1024 + MAXMEM_SLACK_KIB)?;
        hv.set_address_size(domid, 64)?;
        let p2m = self.populate(domid, nr_pages)?;

        let console_port = hv.alloc_unbound(domid, BACKEND_DOMID)?;
        let store_port = hv.alloc_unbound(domid, BACKEND_DOMID)?;
        let info = hv.domain_info(domid)?;

        let (first_pfn, count) = layout.bootstrap_pfns();
        let mfns = &p2m[first_pfn as usize..(first_pfn + count) as usize];
        {
            let mut mem = hv.map_foreign(domid, mfns)?;
            let mut img = Image {
                mem: &mut mem,
                first_pfn,
                virt_base: layout.virt_base,
            };
            img.load_kernel(kernel)?;
            if let Some(r) = layout.initrd {
                img.write(r.vaddr, initrd)?;
                img.zero(
                    r.vaddr + initrd.len() as u64,
                    r.pages * PAGE - initrd.len() as u64,
                )?;
            }
            let p2m_bytes: Vec<u8> = p2m.iter().flat_map(|m| m.to_le_bytes()).collect();
            img.write(layout.p2m.vaddr, &p2m_bytes)?;
            img.zero(
                layout.p2m.vaddr + p2m_bytes.len() as u64,
                layout.p2m.pages * PAGE - p2m_bytes.len() as u64,
            )?;
            for r in [layout.xenstore, layout.console, layout.stack] {
                img.zero(r.vaddr, PAGE)?;
            }
            write_page_tables(&mut img, &layout, &p2m)?;
            let si = start_info(
                &layout,
                cfg,
                &p2m,
                info.shared_info_frame,
                store_port,
                console_port,
                initrd.len() as u64,
            );
            img.zero(layout.start_info.vaddr, PAGE)?;
            img.write(layout.start_info.vaddr, crate::sys::as_bytes(&si))?;
        }
        {
            // shared_info starts zeroed with every vCPU's event upcalls masked; the guest
            // unmasks them once it has set up its callbacks.
            let mut shared = hv.map_foreign(domid, &[info.shared_info_frame])?;
            shared[..PAGE_SIZE].fill(0);
            for v in 0..pv::XEN_LEGACY_MAX_VCPUS {
                shared[v * pv::SHARED_INFO_VCPU_INFO_SIZE + pv::VCPU_INFO_UPCALL_MASK_OFFSET] = 1;
            }
        }
        if let Some(hp) = kernel.info.notes.hypercall_page {
            let pfn = (hp - layout.virt_base) / PAGE;
            hv.hypercall_init(domid, p2m[pfn as usize])?;
        }
        hv.set_memory_map(
            domid,
            &[MemoryRegion {
                addr: 0,
                size: nr_pages * PAGE,
                ram: true,
            }],
        )?;
        // The page tables must not be mapped writable anywhere when Xen validates them.
        let l4_mfn = p2m[layout.page_tables.pfn as usize];
        hv.pin_l4_table(domid, l4_mfn)?;
        hv.set_vcpu_context(domid, 0, &vcpu_context(&layout, kernel.info.entry, l4_mfn))?;

        let store_mfn = p2m[layout.xenstore.pfn as usize];
        let console_mfn = p2m[layout.console.pfn as usize];
        self.seed_grants(domid, console_mfn, store_mfn)?;
        Ok(BuiltDomain {
            domid,
            nr_pages,
            store_mfn,
            store_port,
            console_mfn,
            console_port,
            layout,
        })
    }

    /// Populates `nr_pages` of guest memory: 2 MiB extents while the hypervisor has them,
    /// then 4 KiB pages. Returns the p2m (pfn -> mfn).
    fn populate(&self, domid: DomId, nr_pages: u64) -> Result<Vec<u64>> {
        let mut p2m = vec![u64::MAX; nr_pages as usize];
        let mut pfn = 0u64;
        let supers = nr_pages / SUPERPAGE_PAGES;
        let mut done_supers = 0u64;
        while done_supers < supers {
            let n = (supers - done_supers).min(POPULATE_BATCH as u64) as usize;
            let mut frames: Vec<u64> = (0..n as u64).map(|i| pfn + i * SUPERPAGE_PAGES).collect();
            let got = self
                .hv
                .populate_physmap(domid, SUPERPAGE_ORDER, &mut frames)?;
            for (i, mfn) in frames.iter().take(got).enumerate() {
                for j in 0..SUPERPAGE_PAGES {
                    p2m[(pfn + i as u64 * SUPERPAGE_PAGES + j) as usize] = mfn + j;
                }
            }
            pfn += got as u64 * SUPERPAGE_PAGES;
            done_supers += got as u64;
            if got < n {
                break; // no more 2 MiB extents: the rest in 4 KiB pages
            }
        }
        while pfn < nr_pages {
            let n = (nr_pages - pfn).min(POPULATE_BATCH as u64 * 8) as usize;
            let mut frames: Vec<u64> = (0..n as u64).map(|i| pfn + i).collect();
            let got = self.hv.populate_physmap(domid, 0, &mut frames)?;
            for (i, mfn) in frames.iter().take(got).enumerate() {
                p2m[pfn as usize + i] = *mfn;
            }
            pfn += got as u64;
            if got < n {
                return Err(XenError::Build(format!(
                    "the hypervisor ran out of memory after {} of {} MiB",
                    pfn / 256,
                    nr_pages / 256
                )));
            }
        }
        Ok(p2m)
    }

    fn seed_grants(&self, domid: DomId, console_mfn: u64, store_mfn: u64) -> Result<()> {
        let mut gt = self.hv.map_grant_table(domid)?;
        for (gref, mfn) in [
            (GNTTAB_RESERVED_CONSOLE, console_mfn),
            (GNTTAB_RESERVED_XENSTORE, store_mfn),
        ] {
            let frame = u32::try_from(mfn).map_err(|_| {
                XenError::Build(format!("frame {mfn:#x} does not fit a v1 grant entry"))
            })?;
            let off = gref as usize * 8;
            gt[off + 2..off + 4].copy_from_slice(&BACKEND_DOMID.to_le_bytes());
            gt[off + 4..off + 8].copy_from_slice(&frame.to_le_bytes());
            // flags last: the entry becomes valid only once domid and frame are in place.
            std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
            gt[off..off + 2].copy_from_slice(&GTF_PERMIT_ACCESS.to_le_bytes());
        }
        Ok(())
    }
}

/// Checks what the caller passed before any hypercall.
fn validate(cfg: &DomainConfig, kernel: &KernelImage, initrd: Option<&[u8]>) -> Result<()> {
    if cfg.cmdline.len() >= pv::MAX_GUEST_CMDLINE {
        return Err(XenError::Build(format!(
            "kernel command line is {} bytes; the PV limit is {}",
            cfg.cmdline.len(),
            pv::MAX_GUEST_CMDLINE - 1
        )));
    }
    if cfg.cmdline.contains('\0') {
        return Err(XenError::Build(
            "kernel command line contains a NUL byte".into(),
        ));
    }
    if cfg.vcpus == 0 || cfg.vcpus > 128 {
        return Err(XenError::Build(format!(
            "{} vCPUs: choose 1..128",
            cfg.vcpus
        )));
    }
    if cfg.memory_mib == 0 || cfg.memory_mib > 1 << 20 {
        return Err(XenError::Build(format!(
            "{} MiB of memory: choose 1 MiB..1 TiB",
            cfg.memory_mib
        )));
    }
    let min = Layout::min_memory_mib(&kernel.info, initrd.map_or(0, |i| i.len() as u64));
    if cfg.memory_mib < min {
        return Err(XenError::Build(format!(
            "{} MiB is too little memory for this kernel and initrd: at least {min} MiB is needed",
            cfg.memory_mib
        )));
    }
    Ok(())
}

/// The mapped bootstrap region, addressed by guest virtual address.
struct Image<'a> {
    mem: &'a mut [u8],
    first_pfn: u64,
    virt_base: u64,
}

impl Image<'_> {
    fn range(&mut self, vaddr: u64, len: u64) -> Result<&mut [u8]> {
        let off = vaddr
            .checked_sub(self.virt_base + self.first_pfn * PAGE)
            .and_then(|o| usize::try_from(o).ok());
        let end = off.and_then(|o| o.checked_add(usize::try_from(len).ok()?));
        match (off, end) {
            (Some(o), Some(e)) if e <= self.mem.len() => Ok(&mut self.mem[o..e]),
            _ => Err(XenError::Build(format!(
                "write of {len} bytes at {vaddr:#x} is outside the bootstrap region"
            ))),
        }
    }

    fn write(&mut self, vaddr: u64, data: &[u8]) -> Result<()> {
        self.range(vaddr, data.len() as u64)?.copy_from_slice(data);
        Ok(())
    }

    fn zero(&mut self, vaddr: u64, len: u64) -> Result<()> {
        self.range(vaddr, len)?.fill(0);
        Ok(())
    }

    /// Copies each PT_LOAD segment's file bytes and zeroes the rest of its memory size.
    fn load_kernel(&mut self, kernel: &KernelImage) -> Result<()> {
        for s in &kernel.info.segments {
            let start = s.file_offset as usize;
            let data = kernel
                .elf
                .get(start..start + s.filesz as usize)
                .ok_or_else(|| XenError::Build("kernel segment outside the ELF".into()))?;
            self.write(s.vaddr, data)?;
            self.zero(s.vaddr + s.filesz, s.memsz - s.filesz)?;
        }
        Ok(())
    }
}

/// Writes the 4-level page tables mapping `[virt_base, map_end)` onto pfns 0.. (machine
/// frames from the p2m). Page-table pages are mapped read-only, as Xen requires.
fn write_page_tables(img: &mut Image<'_>, l: &Layout, p2m: &[u64]) -> Result<()> {
    let upper = pte::PRESENT | pte::RW | pte::USER | pte::ACCESSED | pte::DIRTY;
    let leaf = pte::PRESENT | pte::RW | pte::ACCESSED | pte::DIRTY;
    let c = l.pt_counts;
    let pt = l.page_tables;
    let (l4_pfn, l3_pfn) = (pt.pfn, pt.pfn + c.l4);
    let (l2_pfn, l1_pfn) = (l3_pfn + c.l3, l3_pfn + c.l3 + c.l2);
    img.zero(pt.vaddr, pt.pages * PAGE)?;
    let base = l.virt_base;
    let (first3, first2, first1) = (base >> 39, base >> 30, base >> 21);
    let set = |img: &mut Image<'_>, table_pfn: u64, index: u64, value: u64| {
        let va = l.virt_base + table_pfn * PAGE + (index & 511) * 8;
        img.write(va, &value.to_le_bytes())
    };
    let pt_range = pt.pfn..pt.pfn + pt.pages;
    for pfn in 0..l.mapped_pages() {
        let va = base + pfn * PAGE;
        let mfn = p2m[pfn as usize];
        let i3 = (va >> 39) - first3;
        let i2 = (va >> 30) - first2;
        let i1 = (va >> 21) - first1;
        set(
            img,
            l4_pfn,
            va >> 39,
            (p2m[(l3_pfn + i3) as usize] << 12) | upper,
        )?;
        set(
            img,
            l3_pfn + i3,
            va >> 30,
            (p2m[(l2_pfn + i2) as usize] << 12) | upper,
        )?;
        set(
            img,
            l2_pfn + i2,
            va >> 21,
            (p2m[(l1_pfn + i1) as usize] << 12) | upper,
        )?;
        let flags = if pt_range.contains(&pfn) {
            leaf & !pte::RW
        } else {
            leaf
        };
        set(img, l1_pfn + i1, va >> 12, (mfn << 12) | flags)?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn start_info(
    l: &Layout,
    cfg: &DomainConfig,
    p2m: &[u64],
    shared_info_mfn: u64,
    store_port: u32,
    console_port: u32,
    initrd_len: u64,
) -> StartInfo {
    let mut magic = [0u8; 32];
    magic[..14].copy_from_slice(b"xen-3.0-x86_64");
    let mut cmd_line = [0u8; pv::MAX_GUEST_CMDLINE];
    cmd_line[..cfg.cmdline.len()].copy_from_slice(cfg.cmdline.as_bytes());
    StartInfo {
        magic,
        nr_pages: l.nr_pages,
        shared_info: shared_info_mfn << 12,
        flags: 0,
        _pad0: 0,
        store_mfn: p2m[l.xenstore.pfn as usize],
        store_evtchn: store_port,
        _pad1: 0,
        console_mfn: p2m[l.console.pfn as usize],
        console_evtchn: console_port,
        _pad2: 0,
        pt_base: l.page_tables.vaddr,
        nr_pt_frames: l.page_tables.pages,
        mfn_list: l.p2m.vaddr,
        mod_start: l.initrd.map_or(0, |r| r.vaddr),
        mod_len: initrd_len,
        cmd_line,
        first_p2m_pfn: 0,
        nr_p2m_frames: 0,
    }
}

fn vcpu_context(l: &Layout, entry: u64, l4_mfn: u64) -> VcpuGuestContext {
    let mut c = VcpuGuestContext {
        flags: pv::VGCF_IN_KERNEL | pv::VGCF_ONLINE,
        ..Default::default()
    };
    let r = &mut c.user_regs;
    r.rip = entry;
    r.rsp = l.stack.end_vaddr();
    r.rsi = l.start_info.vaddr;
    r.cs = pv::FLAT_KERNEL_CS64;
    r.ss = pv::FLAT_KERNEL_SS64;
    r.ds = pv::FLAT_KERNEL_DS64;
    r.es = pv::FLAT_KERNEL_DS64;
    r.fs = pv::FLAT_KERNEL_DS64;
    r.gs = pv::FLAT_KERNEL_DS64;
    r.rflags = pv::X86_EFLAGS_IF;
    c.kernel_ss = pv::FLAT_KERNEL_SS64.into();
    c.kernel_sp = l.stack.end_vaddr();
    c.ctrlreg[3] = l4_mfn << 12; // xen_pfn_to_cr3 on x86_64
    c
}
