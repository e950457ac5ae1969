//! The IDM frame decoders on arbitrary bytes: the first byte picks how the stream is cut into
//! reads, the rest is the stream. `spore_idm::fuzzing` checks that every decoder agrees, that
//! every byte is accounted for once, that memory and decoding work stay bounded, and that
//! decoded packets round-trip. Run: `cd crates/idm/fuzz && cargo +nightly fuzz run idm_frames
//! -- -dict=idm.dict -max_len=2100000`.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| spore_idm::fuzzing::fuzz_one(data));
