//! bzImage setup-header parsing and bounded payload decompression on arbitrary bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use spore_kernel::bzimage;

const LIMIT: usize = 4 << 20;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = bzimage::payload(data) {
        if let Ok(out) = bzimage::decompress(p, LIMIT) {
            assert!(out.len() <= LIMIT);
        }
    }
    // The payload decoders on their own, without a valid header in front.
    if let Ok(out) = bzimage::decompress(data, LIMIT) {
        assert!(out.len() <= LIMIT);
    }
});
