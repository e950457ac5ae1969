//! The xenstore reply side: frame decoding from an arbitrary byte stream and every payload
//! parser on each decoded message.
#![no_main]
use libfuzzer_sys::fuzz_target;
use spore_xen::xs::wire;

fuzz_target!(|data: &[u8]| {
    let mut d = wire::Decoder::new();
    // Feed in uneven chunks to exercise partial frames.
    for chunk in data.chunks(7) {
        d.push(chunk);
        loop {
            match d.next_message() {
                Ok(Some(m)) => {
                    assert!(m.payload.len() <= wire::PAYLOAD_MAX);
                    let _ = wire::parse_string(&m.payload);
                    let _ = wire::parse_list(&m.payload);
                    let _ = wire::parse_watch_event(&m.payload);
                    let _ = wire::parse_error(&m.payload);
                    let _ = wire::parse_perms(&m.payload);
                    let _ = wire::parse_bool(&m.payload);
                    let _ = wire::parse_tx_id(&m.payload);
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});
