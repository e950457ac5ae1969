//! QEMU's stream framing and the frame classifier and stack on arbitrary bytes: the first byte
//! picks how the stream is cut into reads, the rest is what a hostile guest's NIC sends.
//! `sporenet::fuzzing` checks that the decoder never yields an impossible frame or buffers past
//! one frame, and that every reply is a well-formed frame from the gateway to the zone. Run:
//! `cd network/fuzz && cargo +nightly fuzz run link_frames -- -dict=link_frames.dict -max_len=200000`.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sporenet::fuzzing::fuzz_one(data));
