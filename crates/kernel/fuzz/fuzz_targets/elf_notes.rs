//! Kernel ELF parsing (program headers, PT_LOAD bounds, Xen notes) on arbitrary bytes:
//! must return an error, never panic, and any accepted layout must be self-consistent.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(k) = spore_kernel::elf::parse(data) {
        assert!(k.virt_start < k.virt_end);
        assert!((k.virt_start..k.virt_end).contains(&k.entry));
        for s in &k.segments {
            assert!(s.filesz <= s.memsz);
            assert!(s.file_offset + s.filesz <= data.len() as u64);
        }
        let _ = spore_xen::builder::Layout::compute(&k, 4096, 64 * 256);
    }
});
