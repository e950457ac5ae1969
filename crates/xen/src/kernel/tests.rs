//! Kernel extraction on a real Debian kernel and on generated images.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::*;

/// `${SPORE_CACHE:-/var/cache/spore}/debs`, shared with the guest bundle and the Xen lab.
fn deb_cache() -> PathBuf {
    let base = std::env::var("SPORE_CACHE").unwrap_or_else(|_| "/var/cache/spore".into());
    Path::new(&base).join("debs")
}

/// The Debian kernel's bzImage, extracted from `linux-image-*-amd64*.deb` in the cache; the
/// .deb is fetched with `apt-get download` if missing.
fn debian_vmlinuz() -> PathBuf {
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
    let out = std::env::temp_dir().join(format!("spore-xen-test-kernel-{}", std::process::id()));
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

#[test]
fn debian_bzimage_extracts_to_a_pv_elf_and_caches_it() {
    let vmlinuz = debian_vmlinuz();
    let data = std::fs::read(&vmlinuz).unwrap();
    assert!(bzimage::is_bzimage(&data));
    let payload = bzimage::payload(&data).unwrap();
    assert_eq!(
        bzimage::detect(payload),
        Some(Compression::Xz),
        "Debian kernels are xz"
    );

    let cache = tempfile::tempdir().unwrap();
    let t = std::time::Instant::now();
    let k = KernelImage::load(&vmlinuz, Some(cache.path())).unwrap();
    let cold = t.elapsed();
    let t = std::time::Instant::now();
    let again = KernelImage::load(&vmlinuz, Some(cache.path())).unwrap();
    let warm = t.elapsed();
    eprintln!(
        "extract {} ({} -> {} bytes): cold {cold:?}, cached {warm:?}",
        vmlinuz.display(),
        data.len(),
        k.elf.len()
    );
    assert_eq!(*again.elf, *k.elf);
    assert!(cached_elf_path(cache.path(), &data).exists());
    // Even the first load maps the cached file instead of keeping the extracted ELF in memory.
    assert!(
        matches!(k.elf.0, Bytes::Mapped(_)),
        "cold load kept the ELF in memory"
    );

    let i = &k.info;
    assert_eq!(i.notes.guest_os.as_deref(), Some("linux"));
    assert_eq!(i.notes.xen_version.as_deref(), Some("xen-3.0"));
    assert_eq!(i.virt_base, 0xffff_ffff_8000_0000);
    assert_eq!(
        i.virt_start, 0xffff_ffff_8100_0000,
        "LOAD_PHYSICAL_ADDR 16 MiB"
    );
    assert!(i.notes.mod_start_pfn);
    assert!(i.notes.init_p2m.is_some());
    assert!((i.virt_start..i.virt_end).contains(&i.entry));
    // The whole image needs tens of MiB: why 64 MiB PV domains fail with this kernel.
    let span_mib = (i.virt_end - i.virt_base) >> 20;
    assert!((40..100).contains(&span_mib), "span {span_mib} MiB");
    let min = crate::builder::Layout::min_memory_mib(i, 0);
    eprintln!("minimum PV domain memory for this kernel: {min} MiB");
    assert!(min > 64 && min < 128, "{min} MiB");
    // Truncating the file anywhere in the payload must fail cleanly.
    let payload_end = payload.as_ptr() as usize - data.as_ptr() as usize + payload.len();
    for cut in [0x300, data.len() / 2, payload_end - 10] {
        assert!(
            KernelImage::from_bytes(&data[..cut]).is_err(),
            "cut at {cut}"
        );
    }
}

#[test]
fn generated_bzimage_roundtrip_and_cache_key() {
    use std::io::Write;
    let elf = elf::testelf::build(
        0,
        &elf::testelf::linux_notes(0xffff_ffff_8100_0000, 0xffff_ffff_8100_1000),
        &[elf::testelf::Seg {
            paddr: 0x100_0000,
            data: vec![0x90; 0x2000],
            memsz: 0x2000,
        }],
    );
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&elf).unwrap();
    let mut payload = gz.finish().unwrap();
    payload.extend_from_slice(&(elf.len() as u32).to_le_bytes()); // as the kernel build does
    let img = bzimage::tests_support::make_bzimage(&payload);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("vmlinuz");
    std::fs::write(&file, &img).unwrap();
    let k = KernelImage::load(&file, Some(&dir.path().join("cache"))).unwrap();
    assert_eq!(*k.elf, *elf);
    // A corrupt cache entry is ignored and rewritten.
    let cached = cached_elf_path(&dir.path().join("cache"), &img);
    std::fs::write(&cached, b"garbage").unwrap();
    let k2 = KernelImage::load(&file, Some(&dir.path().join("cache"))).unwrap();
    assert_eq!(*k2.elf, *elf);
    assert_eq!(std::fs::read(&cached).unwrap(), elf);
    assert!(matches!(
        extract_elf(b"MZ not a kernel"),
        Err(KernelError::UnknownFormat)
    ));
}
