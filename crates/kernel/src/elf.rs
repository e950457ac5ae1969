//! The PV kernel ELF: PT_LOAD segments and Xen ELF notes (`xen/include/public/elfnote.h`),
//! parsed with the `object` crate and checked arithmetic. Only PT_LOAD segments are loaded;
//! every offset and address is bounds-checked against the file and the address space.

use object::elf::{self, FileHeader64, PT_LOAD};
use object::read::elf::{FileHeader, ProgramHeader};
use object::{Endian, Endianness};

use super::KernelError;
use crate::sys::elfnote;

/// The largest kernel span (first to last loaded byte) accepted: Linux maps at most 1 GiB
/// of kernel image.
pub const MAX_SPAN: u64 = 1 << 30;
/// Program headers accepted at most.
pub const MAX_PHDRS: usize = 64;

/// The Xen ELF notes the PV builder uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct XenNotes {
    pub entry: Option<u64>,
    pub hypercall_page: Option<u64>,
    pub virt_base: Option<u64>,
    pub paddr_offset: Option<u64>,
    pub init_p2m: Option<u64>,
    pub mod_start_pfn: bool,
    pub guest_os: Option<String>,
    pub xen_version: Option<String>,
    pub loader: Option<String>,
    pub features: Option<String>,
    pub pae_mode: Option<String>,
}

/// One PT_LOAD segment, placed at its guest virtual address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub file_offset: u64,
    pub filesz: u64,
    pub vaddr: u64,
    pub memsz: u64,
}

/// A parsed PV kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElfKernel {
    pub notes: XenNotes,
    pub segments: Vec<Segment>,
    /// Lowest and one-past-highest virtual address of the loaded image.
    pub virt_start: u64,
    pub virt_end: u64,
    /// Virtual address the initial mapping starts at (`VIRT_BASE`).
    pub virt_base: u64,
    pub entry: u64,
}

fn numeric(desc: &[u8]) -> Option<u64> {
    Some(match desc.len() {
        1 => desc[0] as u64,
        2 => u16::from_le_bytes([desc[0], desc[1]]) as u64,
        4 => u32::from_le_bytes(desc.try_into().ok()?) as u64,
        8 => u64::from_le_bytes(desc.try_into().ok()?),
        _ => return None,
    })
}

fn string(desc: &[u8]) -> Option<String> {
    let s = desc.split(|&b| b == 0).next().unwrap_or(desc);
    if s.len() > 256 {
        return None;
    }
    String::from_utf8(s.to_vec()).ok()
}

/// Parses and validates a PV kernel ELF.
pub fn parse(data: &[u8]) -> Result<ElfKernel, KernelError> {
    let bad = |what: &str| KernelError::BadElf(what.to_string());
    let header = FileHeader64::<Endianness>::parse(data).map_err(|e| bad(&e.to_string()))?;
    let endian = header.endian().map_err(|e| bad(&e.to_string()))?;
    if !endian.is_little_endian() || header.e_machine(endian) != elf::EM_X86_64 {
        return Err(KernelError::NotX86_64);
    }
    let phdrs = header
        .program_headers(endian, data)
        .map_err(|e| bad(&e.to_string()))?;
    if phdrs.len() > MAX_PHDRS {
        return Err(bad("too many program headers"));
    }

    let mut notes = XenNotes::default();
    let mut saw_xen_note = false;
    for ph in phdrs {
        let Some(iter) = ph.notes(endian, data).map_err(|e| bad(&e.to_string()))? else {
            continue;
        };
        let mut iter = iter;
        while let Some(note) = iter.next().map_err(|e| bad(&e.to_string()))? {
            if note.name() != b"Xen" {
                continue;
            }
            saw_xen_note = true;
            let desc = note.desc();
            let num = || numeric(desc).ok_or(KernelError::BadNote(note.n_type(endian).0));
            let text = || string(desc).ok_or(KernelError::BadNote(note.n_type(endian).0));
            match note.n_type(endian).0 {
                elfnote::ENTRY => notes.entry = Some(num()?),
                elfnote::HYPERCALL_PAGE => notes.hypercall_page = Some(num()?),
                elfnote::VIRT_BASE => notes.virt_base = Some(num()?),
                elfnote::PADDR_OFFSET => notes.paddr_offset = Some(num()?),
                elfnote::INIT_P2M => notes.init_p2m = Some(num()?),
                elfnote::MOD_START_PFN => notes.mod_start_pfn = num()? != 0,
                elfnote::GUEST_OS => notes.guest_os = Some(text()?),
                elfnote::XEN_VERSION => notes.xen_version = Some(text()?),
                elfnote::LOADER => notes.loader = Some(text()?),
                elfnote::FEATURES => notes.features = Some(text()?),
                elfnote::PAE_MODE => notes.pae_mode = Some(text()?),
                _ => {}
            }
        }
    }
    if !saw_xen_note {
        return Err(KernelError::NoXenNotes);
    }
    let virt_base = notes.virt_base.unwrap_or(0);
    let paddr_offset = notes.paddr_offset.unwrap_or(0);

    let mut segments = Vec::new();
    for ph in phdrs.iter().filter(|p| p.p_type(endian) == PT_LOAD) {
        let (off, filesz, memsz) = (ph.p_offset(endian), ph.p_filesz(endian), ph.p_memsz(endian));
        if filesz > memsz {
            return Err(bad("segment file size exceeds its memory size"));
        }
        let file_end = off
            .checked_add(filesz)
            .ok_or(KernelError::SegmentOutOfBounds)?;
        if file_end > data.len() as u64 {
            return Err(KernelError::SegmentOutOfBounds);
        }
        // libelf's rule: the load address is paddr - PADDR_OFFSET + VIRT_BASE.
        let vaddr = ph
            .p_paddr(endian)
            .checked_sub(paddr_offset)
            .and_then(|p| p.checked_add(virt_base))
            .ok_or(KernelError::AddressOverflow)?;
        vaddr
            .checked_add(memsz)
            .ok_or(KernelError::AddressOverflow)?;
        if memsz == 0 {
            continue;
        }
        segments.push(Segment {
            file_offset: off,
            filesz,
            vaddr,
            memsz,
        });
    }
    let virt_start = segments
        .iter()
        .map(|s| s.vaddr)
        .min()
        .ok_or(KernelError::NoLoadSegments)?;
    let virt_end = segments
        .iter()
        .map(|s| s.vaddr + s.memsz)
        .max()
        .ok_or(KernelError::NoLoadSegments)?;
    if virt_end - virt_start > MAX_SPAN {
        return Err(KernelError::ImageTooLarge(virt_end - virt_start));
    }
    if virt_start < virt_base {
        return Err(bad("kernel loads below its VIRT_BASE"));
    }
    for (i, a) in segments.iter().enumerate() {
        for b in &segments[i + 1..] {
            if a.vaddr < b.vaddr + b.memsz && b.vaddr < a.vaddr + a.memsz {
                return Err(bad("overlapping PT_LOAD segments"));
            }
        }
    }
    let entry = notes.entry.unwrap_or(header.e_entry(endian));
    if !(virt_start..virt_end).contains(&entry) {
        return Err(KernelError::EntryOutsideImage(entry));
    }
    if let Some(hp) = notes.hypercall_page
        && !(virt_start..virt_end).contains(&hp)
    {
        return Err(bad("hypercall page outside the image"));
    }
    Ok(ElfKernel {
        notes,
        segments,
        virt_start,
        virt_end,
        virt_base,
        entry,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::elf::*;

    const KBASE: u64 = 0xffff_ffff_8000_0000;

    fn good() -> Vec<u8> {
        let segs = [
            Seg {
                paddr: 0x100_0000,
                data: vec![0xcc; 0x3000],
                memsz: 0x3000,
            },
            Seg {
                paddr: 0x100_4000,
                data: vec![0xdd; 0x100],
                memsz: 0x5000,
            },
        ];
        build(
            0,
            &linux_notes(KBASE + 0x100_0010, KBASE + 0x100_1000),
            &segs,
        )
    }

    #[test]
    fn parses_segments_and_notes() {
        let k = parse(&good()).unwrap();
        assert_eq!(k.virt_base, KBASE);
        assert_eq!(k.entry, KBASE + 0x100_0010);
        assert_eq!(k.virt_start, KBASE + 0x100_0000);
        assert_eq!(k.virt_end, KBASE + 0x100_9000);
        assert_eq!(k.segments.len(), 2);
        assert_eq!(k.segments[1].filesz, 0x100);
        assert_eq!(k.notes.guest_os.as_deref(), Some("linux"));
        assert_eq!(k.notes.xen_version.as_deref(), Some("xen-3.0"));
        assert_eq!(k.notes.hypercall_page, Some(KBASE + 0x100_1000));
        assert!(k.notes.mod_start_pfn);
    }

    #[test]
    fn hostile_elves() {
        assert!(matches!(parse(b"\x7fELFjunk"), Err(KernelError::BadElf(_))));
        assert!(matches!(parse(&[]), Err(KernelError::BadElf(_))));

        let mut e = good();
        e[18] = 3; // EM_386
        assert!(matches!(parse(&e), Err(KernelError::NotX86_64)));

        let no_notes = build(
            0,
            &[],
            &[Seg {
                paddr: 0x100_0000,
                data: vec![1; 16],
                memsz: 16,
            }],
        );
        assert!(matches!(parse(&no_notes), Err(KernelError::NoXenNotes)));

        let notes = linux_notes(KBASE + 0x100_0000, KBASE + 0x100_0000);
        let no_load = build(0, &notes, &[]);
        assert!(matches!(parse(&no_load), Err(KernelError::NoLoadSegments)));

        // filesz pointing past the end of the file
        let mut e = good();
        let p = 64 + 56;
        e[p + 32..p + 40].copy_from_slice(&0x10_0000u64.to_le_bytes());
        e[p + 40..p + 48].copy_from_slice(&0x10_0000u64.to_le_bytes());
        assert!(matches!(parse(&e), Err(KernelError::SegmentOutOfBounds)));

        // offset + filesz overflow
        let mut e = good();
        e[p + 8..p + 16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(parse(&e), Err(KernelError::SegmentOutOfBounds)));

        // paddr + memsz overflow
        let mut e = good();
        e[p + 24..p + 32].copy_from_slice(&(u64::MAX - 0x10).to_le_bytes());
        assert!(matches!(parse(&e), Err(KernelError::AddressOverflow)));

        // entry outside the image
        let notes = linux_notes(KBASE + 0x900_0000, KBASE + 0x100_1000);
        let e = build(
            0,
            &notes,
            &[Seg {
                paddr: 0x100_0000,
                data: vec![1; 0x2000],
                memsz: 0x2000,
            }],
        );
        assert!(matches!(parse(&e), Err(KernelError::EntryOutsideImage(_))));

        // a 1.5 GiB memsz
        let notes = linux_notes(KBASE + 0x100_0000, KBASE + 0x100_0000);
        let e = build(
            0,
            &notes,
            &[Seg {
                paddr: 0x100_0000,
                data: vec![1; 16],
                memsz: 0x6000_0000,
            }],
        );
        assert!(matches!(parse(&e), Err(KernelError::ImageTooLarge(_))));

        // a numeric note with a 3-byte descriptor
        let mut notes = linux_notes(KBASE + 0x100_0000, KBASE + 0x100_0000);
        notes.extend(note(3, &[1, 2, 3]));
        let e = build(
            0,
            &notes,
            &[Seg {
                paddr: 0x100_0000,
                data: vec![1; 16],
                memsz: 16,
            }],
        );
        assert!(matches!(parse(&e), Err(KernelError::BadNote(3))));

        // overlapping segments
        let notes = linux_notes(KBASE + 0x100_0000, KBASE + 0x100_0000);
        let e = build(
            0,
            &notes,
            &[
                Seg {
                    paddr: 0x100_0000,
                    data: vec![1; 16],
                    memsz: 0x2000,
                },
                Seg {
                    paddr: 0x100_1000,
                    data: vec![1; 16],
                    memsz: 0x2000,
                },
            ],
        );
        assert!(matches!(parse(&e), Err(KernelError::BadElf(m)) if m.contains("overlapping")));
    }

    #[test]
    fn non_load_headers_are_not_loaded() {
        // The PT_NOTE header's paddr (0) is far below the kernel: were it loaded, virt_start
        // would be KBASE.
        let k = parse(&good()).unwrap();
        assert!(k.segments.iter().all(|s| s.vaddr >= KBASE + 0x100_0000));
    }
}
