//! Test kernels for this crate's tests and, with the `test-util` feature, for the tests of
//! the crates that boot kernels: small PV ELFs with chosen notes and segments, bzImages
//! around any payload, and the Debian kernel from the shared package cache.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::bzimage::{HEADER_MAGIC, PAYLOAD_LENGTH, PAYLOAD_OFFSET, SETUP_SECTS, VERSION};

/// Small x86_64 ELF kernels with chosen notes and segments.
pub mod elf {
    pub struct Seg {
        pub paddr: u64,
        pub data: Vec<u8>,
        pub memsz: u64,
    }

    pub fn note(ty: u32, desc: &[u8]) -> Vec<u8> {
        let mut n = Vec::new();
        n.extend_from_slice(&4u32.to_le_bytes());
        n.extend_from_slice(&(desc.len() as u32).to_le_bytes());
        n.extend_from_slice(&ty.to_le_bytes());
        n.extend_from_slice(b"Xen\0");
        n.extend_from_slice(desc);
        while n.len() % 4 != 0 {
            n.push(0);
        }
        n
    }

    /// The notes a Linux x86_64 PV kernel carries (values as in arch/x86/xen/xen-head.S).
    pub fn linux_notes(entry: u64, hypercall: u64) -> Vec<u8> {
        let mut n = Vec::new();
        n.extend(note(6, b"linux\0"));
        n.extend(note(5, b"xen-3.0\0"));
        n.extend(note(3, &0xffff_ffff_8000_0000u64.to_le_bytes()));
        n.extend(note(1, &entry.to_le_bytes()));
        n.extend(note(2, &hypercall.to_le_bytes()));
        n.extend(note(10, b"!writable_page_tables\0"));
        n.extend(note(16, &1u32.to_le_bytes()));
        n.extend(note(4, &0u64.to_le_bytes()));
        n
    }

    /// An ELF64 x86_64 with one PT_NOTE (`notes`) and one PT_LOAD per segment (vaddr =
    /// paddr + 0xffffffff80000000).
    pub fn build(entry: u64, notes: &[u8], segs: &[Seg]) -> Vec<u8> {
        let phnum = 1 + segs.len();
        let mut f = vec![0u8; 64 + 56 * phnum];
        f[0..4].copy_from_slice(b"\x7fELF");
        f[4] = 2; // ELFCLASS64
        f[5] = 1; // little endian
        f[6] = 1;
        f[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        f[18..20].copy_from_slice(&62u16.to_le_bytes()); // EM_X86_64
        f[20..24].copy_from_slice(&1u32.to_le_bytes());
        f[24..32].copy_from_slice(&entry.to_le_bytes());
        f[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
        f[52..54].copy_from_slice(&64u16.to_le_bytes());
        f[54..56].copy_from_slice(&56u16.to_le_bytes());
        f[56..58].copy_from_slice(&(phnum as u16).to_le_bytes());
        let mut body = Vec::new();
        let base = f.len() as u64;
        let phdr =
            |i: usize, ty: u32, off: u64, paddr: u64, filesz: u64, memsz: u64, f: &mut Vec<u8>| {
                let p = 64 + 56 * i;
                f[p..p + 4].copy_from_slice(&ty.to_le_bytes());
                f[p + 4..p + 8].copy_from_slice(&7u32.to_le_bytes());
                f[p + 8..p + 16].copy_from_slice(&off.to_le_bytes());
                f[p + 16..p + 24]
                    .copy_from_slice(&(paddr.wrapping_add(0xffff_ffff_8000_0000)).to_le_bytes());
                f[p + 24..p + 32].copy_from_slice(&paddr.to_le_bytes());
                f[p + 32..p + 40].copy_from_slice(&filesz.to_le_bytes());
                f[p + 40..p + 48].copy_from_slice(&memsz.to_le_bytes());
                f[p + 48..p + 56].copy_from_slice(&4u64.to_le_bytes());
            };
        phdr(
            0,
            4,
            base,
            0,
            notes.len() as u64,
            notes.len() as u64,
            &mut f,
        );
        body.extend_from_slice(notes);
        for (i, s) in segs.iter().enumerate() {
            while body.len() % 16 != 0 {
                body.push(0);
            }
            let off = base + body.len() as u64;
            phdr(i + 1, 1, off, s.paddr, s.data.len() as u64, s.memsz, &mut f);
            body.extend_from_slice(&s.data);
        }
        f.extend(body);
        f
    }
}

/// A minimal bzImage: boot sector + setup header (1 setup sector) + payload.
pub fn make_bzimage(payload: &[u8]) -> Vec<u8> {
    let mut img = vec![0u8; 1024];
    img[SETUP_SECTS] = 1;
    img[HEADER_MAGIC..HEADER_MAGIC + 4].copy_from_slice(b"HdrS");
    img[VERSION..VERSION + 2].copy_from_slice(&0x020fu16.to_le_bytes());
    img[PAYLOAD_OFFSET..PAYLOAD_OFFSET + 4].copy_from_slice(&16u32.to_le_bytes());
    img[PAYLOAD_LENGTH..PAYLOAD_LENGTH + 4].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    img.extend_from_slice(&[0u8; 16]);
    img.extend_from_slice(payload);
    img
}

/// `${SPORE_CACHE:-/var/cache/spore}/debs`, shared with the guest bundle and the Xen lab.
fn deb_cache() -> PathBuf {
    let base = std::env::var("SPORE_CACHE").unwrap_or_else(|_| "/var/cache/spore".into());
    Path::new(&base).join("debs")
}

/// The Debian kernel's bzImage, extracted from `linux-image-*-amd64*.deb` in the cache; the
/// .deb is fetched with `apt-get download` if missing.
pub fn debian_vmlinuz() -> PathBuf {
    let debs = deb_cache();
    let find = || {
        std::fs::read_dir(&debs)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                n.starts_with("linux-image-")
                    && n.contains("-amd64")
                    && n.ends_with(".deb")
                    && !n.contains("unsigned")
                    && !n.contains("dbg")
            })
    };
    let deb = match find() {
        Some(d) => d,
        None => {
            std::fs::create_dir_all(&debs).expect("create deb cache");
            let pkg = Command::new("sh")
                .arg("-c")
                .arg("apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}'")
                .output()
                .expect("apt-cache");
            let pkg = String::from_utf8_lossy(&pkg.stdout).trim().to_string();
            let ok = !pkg.is_empty()
                && Command::new("apt-get")
                    .arg("download")
                    .arg(&pkg)
                    .current_dir(&debs)
                    .status()
                    .is_ok_and(|s| s.success());
            assert!(
                ok,
                "the Debian kernel .deb is missing from {} and `apt-get download linux-image-<ver>-amd64` failed there: run `apt-get update` or fetch it by hand",
                debs.display()
            );
            find().expect("downloaded kernel .deb")
        }
    };
    let out = std::env::temp_dir().join(format!("spore-kernel-test-kernel-{}", std::process::id()));
    std::fs::create_dir_all(&out).unwrap();
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "dpkg-deb --fsys-tarfile '{}' | tar -x -C '{}' --wildcards './boot/vmlinuz-*'",
            deb.display(),
            out.display()
        ))
        .status()
        .expect("dpkg-deb");
    assert!(
        status.success(),
        "extracting vmlinuz from {}",
        deb.display()
    );
    let boot = out.join("boot");
    std::fs::read_dir(&boot)
        .unwrap()
        .flatten()
        .next()
        .expect("vmlinuz in the .deb")
        .path()
}
