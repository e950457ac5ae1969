//! The builder against a test double of the hypercall interface that keeps guest memory in
//! a map of machine frames: page tables are walked, start_info and p2m read back, exactly as
//! the guest would see them.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use super::*;
use crate::hypervisor::DomainInfo;
use crate::sys::pv::VcpuGuestContext;
use spore_kernel::test_util::elf::{Seg, build as build_elf, linux_notes};

type Frames = Rc<RefCell<HashMap<u64, Vec<u8>>>>;

#[derive(Default)]
struct State {
    next_super: u64,
    next_small: u64,
    /// Superpage extents the fake still grants (then it returns short counts).
    supers_left: u64,
    created: Vec<CreateDomain>,
    destroyed: Vec<DomId>,
    ports: u32,
    pinned: Option<u64>,
    vcpu: Option<VcpuGuestContext>,
    hypercall_page: Option<u64>,
    memmap: Vec<MemoryRegion>,
    max_mem_kib: u64,
    fail_vcpu_context: bool,
}

struct FakeHv {
    frames: Frames,
    st: RefCell<State>,
}

const SHARED_INFO_MFN: u64 = 0xfeed;
const GRANT_TABLE_KEY: u64 = u64::MAX;

impl FakeHv {
    fn new(supers: u64) -> Self {
        let st = State {
            next_super: 0x10_0000,
            next_small: 0x80_0000,
            supers_left: supers,
            ..Default::default()
        };
        Self {
            frames: Rc::default(),
            st: RefCell::new(st),
        }
    }

    fn page(&self, mfn: u64) -> Vec<u8> {
        self.frames
            .borrow()
            .get(&mfn)
            .cloned()
            .unwrap_or_else(|| vec![0; 4096])
    }

    fn read_u64(&self, mfn: u64, off: usize) -> u64 {
        u64::from_le_bytes(self.page(mfn)[off..off + 8].try_into().unwrap())
    }
}

struct FakeMapping {
    buf: Vec<u8>,
    keys: Vec<u64>,
    frames: Frames,
}

impl std::ops::Deref for FakeMapping {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.buf
    }
}
impl std::ops::DerefMut for FakeMapping {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.buf
    }
}
impl Drop for FakeMapping {
    fn drop(&mut self) {
        let mut f = self.frames.borrow_mut();
        for (i, k) in self.keys.iter().enumerate() {
            f.insert(*k, self.buf[i * 4096..(i + 1) * 4096].to_vec());
        }
    }
}

impl Hypervisor for FakeHv {
    type Mapping = FakeMapping;

    fn create_domain(&self, cfg: &CreateDomain) -> Result<DomId> {
        self.st.borrow_mut().created.push(cfg.clone());
        Ok(7)
    }
    fn max_vcpus(&self, _: DomId, _: u32) -> Result<()> {
        Ok(())
    }
    fn max_mem(&self, _: DomId, kib: u64) -> Result<()> {
        self.st.borrow_mut().max_mem_kib = kib;
        Ok(())
    }
    fn set_address_size(&self, _: DomId, bits: u32) -> Result<()> {
        assert_eq!(bits, 64);
        Ok(())
    }
    fn populate_physmap(&self, _: DomId, order: u32, frames: &mut [u64]) -> Result<usize> {
        let mut st = self.st.borrow_mut();
        let mut n = 0;
        for f in frames.iter_mut() {
            if order == 9 {
                if st.supers_left == 0 {
                    break;
                }
                st.supers_left -= 1;
                *f = st.next_super;
                st.next_super += 512;
            } else {
                *f = st.next_small;
                st.next_small += 1;
            }
            n += 1;
        }
        Ok(n)
    }
    fn map_foreign(&self, _: DomId, mfns: &[u64]) -> Result<FakeMapping> {
        let mut buf = Vec::with_capacity(mfns.len() * 4096);
        for m in mfns {
            buf.extend(self.page(*m));
        }
        Ok(FakeMapping {
            buf,
            keys: mfns.to_vec(),
            frames: self.frames.clone(),
        })
    }
    fn map_grant_table(&self, _: DomId) -> Result<FakeMapping> {
        self.map_foreign(0, &[GRANT_TABLE_KEY])
    }
    fn alloc_unbound(&self, _: DomId, remote: DomId) -> Result<u32> {
        assert_eq!(remote, 0);
        let mut st = self.st.borrow_mut();
        st.ports += 1;
        Ok(st.ports)
    }
    fn domain_info(&self, domid: DomId) -> Result<DomainInfo> {
        Ok(DomainInfo {
            domid,
            flags: 0,
            tot_pages: 0,
            max_pages: 0,
            shared_info_frame: SHARED_INFO_MFN,
            cpu_time_ns: 0,
            online_vcpus: 0,
            handle: [0; 16],
        })
    }
    fn list_domains(&self, _: DomId, _: u32) -> Result<Vec<DomainInfo>> {
        Ok(Vec::new())
    }
    fn hypercall_init(&self, _: DomId, gmfn: u64) -> Result<()> {
        self.st.borrow_mut().hypercall_page = Some(gmfn);
        Ok(())
    }
    fn set_memory_map(&self, _: DomId, map: &[MemoryRegion]) -> Result<()> {
        self.st.borrow_mut().memmap = map.to_vec();
        Ok(())
    }
    fn pin_l4_table(&self, _: DomId, mfn: u64) -> Result<()> {
        self.st.borrow_mut().pinned = Some(mfn);
        Ok(())
    }
    fn set_vcpu_context(&self, _: DomId, vcpu: u32, ctx: &VcpuGuestContext) -> Result<()> {
        assert_eq!(vcpu, 0);
        if self.st.borrow().fail_vcpu_context {
            return Err(XenError::Build("injected".into()));
        }
        self.st.borrow_mut().vcpu = Some(*ctx);
        Ok(())
    }
    fn unpause(&self, _: DomId) -> Result<()> {
        Ok(())
    }
    fn pause(&self, _: DomId) -> Result<()> {
        Ok(())
    }
    fn destroy(&self, domid: DomId) -> Result<()> {
        self.st.borrow_mut().destroyed.push(domid);
        Ok(())
    }
}

const KBASE: u64 = 0xffff_ffff_8000_0000;
const ENTRY: u64 = KBASE + 0x100_0040;
const HYPERCALL: u64 = KBASE + 0x100_1000;

fn kernel() -> KernelImage {
    let text: Vec<u8> = (0..0x3000u32).map(|i| (i % 253) as u8).collect();
    let elf = build_elf(
        0,
        &linux_notes(ENTRY, HYPERCALL),
        &[
            Seg {
                paddr: 0x100_0000,
                data: text,
                memsz: 0x3000,
            },
            Seg {
                paddr: 0x100_4000,
                data: vec![0xab; 0x800],
                memsz: 0x2_0000,
            },
        ],
    );
    KernelImage::from_bytes(&elf).unwrap()
}

/// Translates a guest virtual address through the page tables rooted at `cr3`, as the MMU
/// would: returns the machine frame and whether the leaf is writable.
fn walk(hv: &FakeHv, cr3: u64, va: u64) -> Option<(u64, bool)> {
    let mut table = cr3 >> 12;
    let mut writable = true;
    for shift in [39u32, 30, 21, 12] {
        let e = hv.read_u64(table, (((va >> shift) & 511) * 8) as usize);
        if e & pte::PRESENT == 0 {
            return None;
        }
        writable &= e & pte::RW != 0;
        table = (e >> 12) & 0xf_ffff_ffff;
    }
    Some((table, writable))
}

/// Reads guest virtual memory through the page tables.
fn read_va(hv: &FakeHv, cr3: u64, va: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut a = va;
    while out.len() < len {
        let (mfn, _) = walk(hv, cr3, a).expect("mapped");
        let off = (a & 4095) as usize;
        let n = (4096 - off).min(len - out.len());
        out.extend_from_slice(&hv.page(mfn)[off..off + n]);
        a += n as u64;
    }
    out
}

#[test]
fn builds_a_bootable_layout() {
    let hv = FakeHv::new(3); // 3 superpages, the rest 4 KiB pages
    let initrd: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
    let cfg = DomainConfig::new([0x11; 16], 32, 1, "console=hvc0 root=/dev/xvda".into());
    let k = kernel();
    let b = DomainBuilder::new(&hv)
        .build(&cfg, &k, Some(&initrd))
        .unwrap();
    let st = hv.st.borrow();
    assert_eq!(b.domid, 7);
    assert_eq!(st.created[0].handle, [0x11; 16]);
    assert_eq!(st.max_mem_kib, 32 * 1024 + 1024);
    assert_eq!(
        st.memmap,
        vec![MemoryRegion {
            addr: 0,
            size: 32 << 20,
            ram: true
        }]
    );
    assert!(st.destroyed.is_empty());

    let ctx = st.vcpu.expect("vcpu context set");
    let cr3 = ctx.ctrlreg[3];
    assert_eq!(Some(cr3 >> 12), st.pinned, "the pinned L4 is CR3");
    assert_eq!(ctx.user_regs.rip, ENTRY);
    assert_eq!(ctx.user_regs.cs, 0xe033);
    assert_eq!(ctx.user_regs.ss, 0xe02b);
    assert_eq!(ctx.flags, pv::VGCF_IN_KERNEL | pv::VGCF_ONLINE);
    let l = &b.layout;
    assert_eq!(ctx.user_regs.rsp, l.stack.end_vaddr());
    assert_eq!(ctx.user_regs.rsi, l.start_info.vaddr);

    // Kernel bytes, bss zeroed, all readable through the page tables.
    let text = read_va(&hv, cr3, KBASE + 0x100_0000, 0x3000);
    assert_eq!(
        text,
        k.elf[k.info.segments[0].file_offset as usize..][..0x3000]
    );
    let data = read_va(&hv, cr3, KBASE + 0x100_4000, 0x2_0000);
    assert!(data[..0x800].iter().all(|&b| b == 0xab));
    assert!(data[0x800..].iter().all(|&b| b == 0));

    // start_info, read the way the guest reads it (rsi).
    let si = read_va(&hv, cr3, ctx.user_regs.rsi, size_of::<StartInfo>());
    let u64_at = |o: usize| u64::from_le_bytes(si[o..o + 8].try_into().unwrap());
    let u32_at = |o: usize| u32::from_le_bytes(si[o..o + 4].try_into().unwrap());
    assert_eq!(&si[..15], b"xen-3.0-x86_64\0");
    assert_eq!(u64_at(32), 32 * 256, "nr_pages");
    assert_eq!(
        u64_at(40),
        SHARED_INFO_MFN << 12,
        "shared_info machine address"
    );
    assert_eq!((u64_at(56), u32_at(64)), (b.store_mfn, b.store_port));
    assert_eq!((u64_at(72), u32_at(80)), (b.console_mfn, b.console_port));
    assert_ne!(b.store_port, b.console_port);
    assert_eq!(u64_at(88), l.page_tables.vaddr, "pt_base");
    assert_eq!(u64_at(96), l.page_tables.pages, "nr_pt_frames");
    let mfn_list = u64_at(104);
    assert_eq!(
        (u64_at(112), u64_at(120)),
        (l.initrd.unwrap().vaddr, initrd.len() as u64)
    );
    assert_eq!(read_va(&hv, cr3, u64_at(112), initrd.len()), initrd);
    let cmd = &si[128..128 + 1024];
    assert_eq!(&cmd[..cfg.cmdline.len()], cfg.cmdline.as_bytes());
    assert_eq!(cmd[cfg.cmdline.len()], 0);

    // The p2m list maps every pfn to the frame the page tables resolve it to, and the
    // first 3 * 512 pfns come from contiguous superpage extents.
    let p2m_bytes = read_va(&hv, cr3, mfn_list, 32 * 256 * 8);
    let p2m: Vec<u64> = p2m_bytes
        .chunks(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(p2m[0], 0x10_0000);
    assert_eq!(p2m[1535], 0x10_0000 + 1535);
    assert_eq!(p2m[1536], 0x80_0000);
    for pfn in (0..l.mapped_pages()).step_by(97) {
        let (mfn, w) = walk(&hv, cr3, KBASE + pfn * 4096).unwrap();
        assert_eq!(mfn, p2m[pfn as usize], "pfn {pfn}");
        let is_pt = (l.page_tables.pfn..l.page_tables.pfn + l.page_tables.pages).contains(&pfn);
        assert_eq!(
            w, !is_pt,
            "pfn {pfn}: page tables read-only, everything else writable"
        );
    }
    for pfn in l.page_tables.pfn..l.page_tables.pfn + l.page_tables.pages {
        assert!(!walk(&hv, cr3, KBASE + pfn * 4096).unwrap().1);
    }
    assert_eq!(
        walk(&hv, cr3, l.map_end),
        None,
        "nothing mapped past the bootstrap region"
    );
    assert_eq!(
        st.hypercall_page,
        Some(p2m[((HYPERCALL - KBASE) >> 12) as usize])
    );
    assert_eq!(b.store_mfn, p2m[l.xenstore.pfn as usize]);

    // Grant entries 0 and 1 let dom0 map the console and xenstore rings.
    let gt = hv.page(GRANT_TABLE_KEY);
    let entry = |i: usize| {
        (
            u16::from_le_bytes(gt[i * 8..i * 8 + 2].try_into().unwrap()),
            u16::from_le_bytes(gt[i * 8 + 2..i * 8 + 4].try_into().unwrap()),
            u32::from_le_bytes(gt[i * 8 + 4..i * 8 + 8].try_into().unwrap()) as u64,
        )
    };
    assert_eq!(entry(0), (1, 0, b.console_mfn));
    assert_eq!(entry(1), (1, 0, b.store_mfn));

    // shared_info: upcalls masked on every legacy vCPU slot.
    let sh = hv.page(SHARED_INFO_MFN);
    assert!((0..32).all(|v| sh[v * 64 + 1] == 1));
}

#[test]
fn rejects_bad_configs_before_any_hypercall() {
    let hv = FakeHv::new(0);
    let k = kernel();
    let long = DomainConfig::new([0; 16], 32, 1, "x".repeat(1024));
    let err = DomainBuilder::new(&hv).build(&long, &k, None).unwrap_err();
    assert!(err.to_string().contains("1023"), "{err}");
    let tiny = DomainConfig::new([0; 16], 8, 1, String::new());
    let err = DomainBuilder::new(&hv).build(&tiny, &k, None).unwrap_err();
    assert!(
        matches!(&err, XenError::Build(m) if m.contains("at least")),
        "{err}"
    );
    let novcpu = DomainConfig::new([0; 16], 32, 0, String::new());
    assert!(DomainBuilder::new(&hv).build(&novcpu, &k, None).is_err());
    assert!(hv.st.borrow().created.is_empty());
}

#[test]
fn failure_after_create_destroys_the_domain() {
    let hv = FakeHv::new(0);
    hv.st.borrow_mut().fail_vcpu_context = true;
    let cfg = DomainConfig::new([0; 16], 32, 1, String::new());
    assert!(
        DomainBuilder::new(&hv)
            .build(&cfg, &kernel(), None)
            .is_err()
    );
    assert_eq!(hv.st.borrow().destroyed, vec![7]);
}
