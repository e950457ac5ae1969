//! The x86_64 PV bootstrap layout, as `xen.h` describes it: starting at `VIRT_BASE`, a
//! contiguous virtual region mapped 1:1 onto the first pseudo-physical frames, holding in
//! order the kernel, the initrd, the p2m list, start_info, the xenstore ring, the console
//! ring, the bootstrap page tables (mapped read-only) and the boot stack, each page-aligned;
//! the region ends on a 4 MiB boundary with at least 512 KiB of padding after the stack.
//!
//! Pure arithmetic, checked: no hypervisor involved, so it is unit-tested directly.

use crate::privcmd::PAGE_SIZE;
use spore_kernel::ElfKernel;

const PAGE: u64 = PAGE_SIZE as u64;
const MIB4: u64 = 4 << 20;
const PADDING: u64 = 512 << 10;

/// A page-aligned region of the bootstrap mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    pub vaddr: u64,
    pub pfn: u64,
    pub pages: u64,
}

impl Region {
    pub fn end_vaddr(&self) -> u64 {
        self.vaddr + self.pages * PAGE
    }
}

/// How many page-table pages each level needs to map `[virt_base, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageTableCounts {
    pub l4: u64,
    pub l3: u64,
    pub l2: u64,
    pub l1: u64,
}

impl PageTableCounts {
    pub fn total(&self) -> u64 {
        self.l4 + self.l3 + self.l2 + self.l1
    }

    /// Tables needed to map `[start, end)`: one per distinct index at each level's span.
    pub fn for_range(start: u64, end: u64) -> Self {
        let last = end - 1;
        let n = |shift: u32| (last >> shift) - (start >> shift) + 1;
        Self {
            l4: 1,
            l3: n(39),
            l2: n(30),
            l1: n(21),
        }
    }
}

/// Where everything goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub virt_base: u64,
    pub kernel: Region,
    pub initrd: Option<Region>,
    pub p2m: Region,
    pub start_info: Region,
    pub xenstore: Region,
    pub console: Region,
    pub page_tables: Region,
    pub pt_counts: PageTableCounts,
    pub stack: Region,
    /// End of the mapped region (4 MiB aligned, >= 512 KiB after the stack).
    pub map_end: u64,
    /// Pages the domain has.
    pub nr_pages: u64,
}

/// Why the layout does not fit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayoutError {
    /// The bootstrap region needs `needed_mib` of guest memory.
    TooSmall {
        needed_mib: u64,
    },
    Overflow,
}

fn page_up(x: u64) -> Option<u64> {
    x.checked_add(PAGE - 1).map(|v| v & !(PAGE - 1))
}

impl Layout {
    /// Lays out a kernel, an initrd of `initrd_len` bytes and the boot pages in a domain of
    /// `nr_pages` pages.
    pub fn compute(
        kernel: &ElfKernel,
        initrd_len: u64,
        nr_pages: u64,
    ) -> Result<Self, LayoutError> {
        let base = kernel.virt_base;
        let pfn_of = |va: u64| (va - base) / PAGE;
        let kstart = kernel.virt_start & !(PAGE - 1);
        let kend = page_up(kernel.virt_end).ok_or(LayoutError::Overflow)?;
        let kernel_r = Region {
            vaddr: kstart,
            pfn: pfn_of(kstart),
            pages: (kend - kstart) / PAGE,
        };
        let mut next = kend;
        let alloc = |next: &mut u64, pages: u64| -> Result<Region, LayoutError> {
            let r = Region {
                vaddr: *next,
                pfn: pfn_of(*next),
                pages,
            };
            *next = pages
                .checked_mul(PAGE)
                .and_then(|b| next.checked_add(b))
                .ok_or(LayoutError::Overflow)?;
            Ok(r)
        };
        let initrd = if initrd_len > 0 {
            Some(alloc(&mut next, initrd_len.div_ceil(PAGE))?)
        } else {
            None
        };
        let p2m = alloc(&mut next, (nr_pages * 8).div_ceil(PAGE))?;
        let start_info = alloc(&mut next, 1)?;
        let xenstore = alloc(&mut next, 1)?;
        let console = alloc(&mut next, 1)?;
        // The page tables live inside the region they map: grow the count until it covers
        // its own pages, the stack and the padding.
        let pt_start = next;
        let mut pt_pages = 1u64;
        let (pt_counts, map_end) = loop {
            let stack_end = pt_start
                .checked_add((pt_pages + 1) * PAGE)
                .ok_or(LayoutError::Overflow)?;
            let map_end = stack_end
                .checked_add(PADDING + MIB4 - 1)
                .ok_or(LayoutError::Overflow)?
                & !(MIB4 - 1);
            let counts = PageTableCounts::for_range(base, map_end);
            if counts.total() <= pt_pages {
                break (counts, map_end);
            }
            pt_pages = counts.total();
        };
        let page_tables = alloc(&mut next, pt_counts.total())?;
        let stack = alloc(&mut next, 1)?;
        let needed_pages = (map_end - base) / PAGE;
        if needed_pages > nr_pages {
            return Err(LayoutError::TooSmall {
                needed_mib: (needed_pages * PAGE).div_ceil(1 << 20),
            });
        }
        Ok(Self {
            virt_base: base,
            kernel: kernel_r,
            initrd,
            p2m,
            start_info,
            xenstore,
            console,
            page_tables,
            pt_counts,
            stack,
            map_end,
            nr_pages,
        })
    }

    /// The smallest domain, in MiB, that fits this kernel and initrd.
    pub fn min_memory_mib(kernel: &ElfKernel, initrd_len: u64) -> u64 {
        // The p2m grows with memory, so iterate from a guess.
        let mut mib = 16;
        loop {
            match Self::compute(kernel, initrd_len, mib * 256) {
                Ok(_) => return mib,
                Err(LayoutError::TooSmall { needed_mib }) if needed_mib > mib => mib = needed_mib,
                Err(LayoutError::TooSmall { .. }) => mib += 1,
                Err(LayoutError::Overflow) => return u64::MAX,
            }
        }
    }

    /// First pfn and number of pages of the bootstrap region (kernel start to stack end).
    pub fn bootstrap_pfns(&self) -> (u64, u64) {
        let first = self.kernel.pfn;
        (first, self.stack.pfn + 1 - first)
    }

    /// Number of pages mapped by the initial page tables (from pfn 0 at `virt_base`).
    pub fn mapped_pages(&self) -> u64 {
        (self.map_end - self.virt_base) / PAGE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spore_kernel::{Segment, XenNotes};

    const KBASE: u64 = 0xffff_ffff_8000_0000;

    pub(crate) fn kernel(start_off: u64, len: u64) -> ElfKernel {
        ElfKernel {
            notes: XenNotes::default(),
            segments: vec![Segment {
                file_offset: 0,
                filesz: 0,
                vaddr: KBASE + start_off,
                memsz: len,
            }],
            virt_start: KBASE + start_off,
            virt_end: KBASE + start_off + len,
            virt_base: KBASE,
            entry: KBASE + start_off,
        }
    }

    #[test]
    fn order_alignment_and_padding() {
        let k = kernel(0x100_0000, 0x3a0_0000 + 123); // Debian-sized: 58 MiB
        let l = Layout::compute(&k, 3 << 20, 128 * 256).unwrap();
        assert_eq!(l.kernel.pfn, 0x1000);
        let initrd = l.initrd.unwrap();
        assert_eq!(initrd.vaddr, l.kernel.end_vaddr());
        assert_eq!(initrd.pages, 768);
        assert_eq!(l.p2m.vaddr, initrd.end_vaddr());
        assert_eq!(l.p2m.pages, 128 * 256 * 8 / 4096);
        assert_eq!(l.start_info.vaddr, l.p2m.end_vaddr());
        assert_eq!(l.xenstore.pfn, l.start_info.pfn + 1);
        assert_eq!(l.console.pfn, l.xenstore.pfn + 1);
        assert_eq!(l.page_tables.pfn, l.console.pfn + 1);
        assert_eq!(l.stack.pfn, l.page_tables.pfn + l.page_tables.pages);
        assert_eq!(l.map_end % MIB4, 0);
        assert!(l.map_end - l.stack.end_vaddr() >= PADDING);
        // Enough L1 tables to map everything up to map_end, one L2, one L3, one L4.
        assert_eq!(
            l.pt_counts,
            PageTableCounts {
                l4: 1,
                l3: 1,
                l2: 1,
                l1: (l.map_end - KBASE) >> 21
            }
        );
    }

    #[test]
    fn too_small_reports_the_minimum() {
        let k = kernel(0x100_0000, 0x3a0_0000);
        let err = Layout::compute(&k, 0, 64 * 256).unwrap_err();
        let LayoutError::TooSmall { needed_mib } = err else {
            panic!("{err:?}")
        };
        assert!(needed_mib > 64, "{needed_mib}");
        let min = Layout::min_memory_mib(&k, 0);
        assert!(Layout::compute(&k, 0, min * 256).is_ok());
        assert!(Layout::compute(&k, 0, (min - 1) * 256).is_err());
    }

    #[test]
    fn the_debian_kernel_needs_more_than_64_mib() {
        let vmlinuz = spore_kernel::test_util::debian_vmlinuz();
        let k = spore_kernel::KernelImage::load(&vmlinuz, None).unwrap();
        // The whole image needs tens of MiB: why 64 MiB PV domains fail with this kernel.
        let min = Layout::min_memory_mib(&k.info, 0);
        eprintln!("minimum PV domain memory for this kernel: {min} MiB");
        assert!(min > 64 && min < 128, "{min} MiB");
    }

    #[test]
    fn page_table_counts_cross_boundaries() {
        let c = PageTableCounts::for_range(KBASE, KBASE + (1 << 30) + (2 << 20));
        assert_eq!(
            c,
            PageTableCounts {
                l4: 1,
                l3: 1,
                l2: 2,
                l1: 513
            }
        );
    }
}
