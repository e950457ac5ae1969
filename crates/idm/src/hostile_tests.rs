//! A corpus of hostile IDM streams fed to the fuzz harness ([`crate::fuzzing`]), each with the
//! exact outcome expected, under several ways of cutting the stream into reads.

use prost::Message;

use crate::fuzzing::{Decoded, check_stream, fuzz_one};
use crate::proto::{self, idm_packet::Body};
use crate::*;

/// Read patterns: one read, byte by byte and a few mixed ones.
const SEEDS: [u8; 6] = [0, 1, 2, 7, 100, 255];

fn ping(id: u64) -> IdmPacket {
    IdmPacket::request(id, Body::Ping(proto::Ping { nonce: id + 1 }))
}

fn output(stream_id: u64, len: usize) -> IdmPacket {
    IdmPacket::stream(
        stream_id,
        Body::ExecOutput(proto::ExecOutput {
            stream: proto::exec_output::Stream::Stdout.into(),
            data: (0..len).map(|i| (i % 251) as u8).collect(),
        }),
    )
}

fn wire(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

fn framed(body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as u32).to_le_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

/// Runs `stream` under every seed, checks each gives `want`.
fn expect(name: &str, stream: &[u8], want: &Decoded) {
    for seed in SEEDS {
        let got = check_stream(stream, seed);
        assert_eq!(&got, want, "{name}, seed {seed}");
    }
}

fn decoded(packets: Vec<IdmPacket>, skipped: usize, first: Option<SkipReason>) -> Decoded {
    Decoded {
        packets,
        skipped,
        first_skip: first,
        truncated: 0,
    }
}

#[test]
fn empty_and_short_streams() {
    expect("empty", &[], &Decoded::default());
    let f = frame(&ping(1)).unwrap();
    for cut in 1..f.len() {
        expect(
            "cut frame",
            &f[..cut],
            &Decoded {
                truncated: cut,
                ..Decoded::default()
            },
        );
    }
    expect("whole frame", &f, &decoded(vec![ping(1)], 0, None));
}

#[test]
fn lengths_out_of_range() {
    let p = frame(&ping(4)).unwrap();
    for len in [0u32, 4, MAX_FRAME_LEN as u32 + 1, 0x8000_0000, u32::MAX] {
        // The length, then a valid frame: only the 4 length bytes go.
        expect(
            "bad length then a frame",
            &wire(&[&len.to_le_bytes(), &p]),
            &decoded(vec![ping(4)], 4, Some(SkipReason::BadLength(len))),
        );
    }
    // A bad length with the magic after it: nothing at offsets 0..6 starts a frame, and the
    // last 3 bytes are too short to judge.
    expect(
        "u32::MAX and magic",
        &wire(&[&u32::MAX.to_le_bytes(), b"\rIDM1"]),
        &Decoded {
            skipped: 6,
            first_skip: Some(SkipReason::BadLength(u32::MAX)),
            truncated: 3,
            ..Decoded::default()
        },
    );
}

#[test]
fn largest_frame_and_one_more() {
    let mut big = output(1, 0);
    let room = MAX_FRAME_LEN - frame(&big).unwrap().len() + HEADER_LEN;
    // Bytes of the data field's length varint grow with the data: search for the exact fit.
    let mut len = room;
    while frame(&output(1, len)).is_err() {
        len -= 1;
    }
    big = output(1, len);
    let f = frame(&big).unwrap();
    assert_eq!(f.len(), HEADER_LEN + MAX_FRAME_LEN);
    expect("largest frame", &f, &decoded(vec![big.clone()], 0, None));

    // The same body with one byte more, announced honestly: refused by length, and the body
    // (which holds a valid-looking magic at offset 4 of the length) is walked over byte by byte.
    let mut body = f[HEADER_LEN..].to_vec();
    body.push(0);
    let over = framed(&body);
    let got = check_stream(&over, 0);
    assert!(got.packets.is_empty());
    assert_eq!(
        got.first_skip,
        Some(SkipReason::BadLength(MAX_FRAME_LEN as u32 + 1))
    );
    assert_eq!(got.skipped + got.truncated, over.len());
}

#[test]
fn garbage_around_frames() {
    let a = frame(&ping(7)).unwrap();
    let b = frame(&output(3, 300)).unwrap();
    let noise = b"[    1.234] console noise\r\n";
    expect(
        "noise before",
        &wire(&[noise, &a, &b]),
        &decoded(
            vec![ping(7), output(3, 300)],
            noise.len(),
            Some(SkipReason::BadLength(u32::from_le_bytes(*b"[   "))),
        ),
    );
    expect(
        "noise between",
        &wire(&[&a, &[0xff; 37], &b]),
        &decoded(
            vec![ping(7), output(3, 300)],
            37,
            Some(SkipReason::BadLength(u32::MAX)),
        ),
    );
    // A plausible length followed by anything but the magic.
    expect(
        "length without magic",
        &wire(&[&[9, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9], &a]),
        &decoded(vec![ping(7)], 13, Some(SkipReason::NoMagic)),
    );
}

#[test]
fn pseudo_random_garbage_between_many_frames() {
    // Garbage without 0x0d cannot hold the magic, so exactly the garbage is skipped.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut stream = Vec::new();
    let mut packets = Vec::new();
    let mut garbage = 0;
    for i in 0..40 {
        let n = (next() % 50) as usize;
        for _ in 0..n {
            let byte = (next() & 0xff) as u8;
            stream.push(if byte == 0x0d { 0x0e } else { byte });
        }
        garbage += n;
        let p = if i % 3 == 0 {
            output(i, (next() % 3000) as usize)
        } else {
            ping(i)
        };
        stream.extend(frame(&p).unwrap());
        packets.push(p);
    }
    for seed in SEEDS {
        let got = check_stream(&stream, seed);
        assert_eq!(got.packets, packets, "seed {seed}");
        assert_eq!((got.skipped, got.truncated), (garbage, 0), "seed {seed}");
    }
}

#[test]
fn magic_with_a_body_that_does_not_decode_is_dropped_whole() {
    let p = frame(&ping(5)).unwrap();
    // Wire type 7 does not exist.
    let bad = framed(b"\rIDM1\x17\x00");
    let got = check_stream(&wire(&[&bad, &p]), 0);
    assert_eq!(got.packets, vec![ping(5)]);
    assert_eq!(got.skipped, bad.len());
    assert!(
        matches!(got.first_skip, Some(SkipReason::Undecodable(_))),
        "{got:?}"
    );
    for seed in SEEDS {
        assert_eq!(check_stream(&wire(&[&bad, &p]), seed), got);
    }

    // A length one short of the real body: the cut body fails to decode and goes as a whole;
    // the byte it left behind is skipped too, and the next frame comes through.
    let mut short = frame(&ping(6)).unwrap();
    let len = u32::from_le_bytes(short[..4].try_into().unwrap()) - 1;
    short[..4].copy_from_slice(&len.to_le_bytes());
    let got = check_stream(&wire(&[&short, &p]), 0);
    assert_eq!(got.packets, vec![ping(5)]);
    assert_eq!(got.skipped, short.len());
}

#[test]
fn a_second_magic_field_is_refused() {
    let mut packet = ping(1);
    packet.magic = 0;
    let body = wire(&[b"\rIDM1", &packet.encode_to_vec(), &[0x0d, 1, 2, 3, 4]]);
    let f = framed(&body);
    expect(
        "second magic",
        &wire(&[&f, &frame(&ping(2)).unwrap()]),
        &decoded(vec![ping(2)], f.len(), Some(SkipReason::NoMagic)),
    );
}

/// Candidate headers packed every 9 bytes, each claiming a body that parses until its last
/// byte: with one-byte resync every candidate would be decoded (quadratic work; 1.2 MB of this
/// cost 46 s). Each failed candidate now goes whole, and the harness checks that no byte is
/// decoded twice.
#[test]
fn overlapping_candidates_cost_linear_work() {
    // 7a 07: field 15, length-delimited, 7 bytes (the rest of the unit); as a length prefix
    // the first four bytes say 0x0001077a = 67450.
    let unit = [0x7a, 0x07, 0x01, 0x00, 0x0d, b'I', b'D', b'M', b'1'];
    let claimed = 0x0001_077a;
    let stream: Vec<u8> = unit.iter().copied().cycle().take(200_000).collect();
    // Candidates at 0 and 67455 (the first unit start after 0 + 4 + 67450) fail at their last
    // bytes; the one at 134910 would need bytes up to 202364 and waits.
    let third = 2 * (HEADER_LEN + claimed) + 2;
    assert_eq!(third, 134_910);
    let got = check_stream(&stream, 0);
    assert!(got.packets.is_empty());
    assert!(
        matches!(got.first_skip, Some(SkipReason::Undecodable(_))),
        "{got:?}"
    );
    assert_eq!((got.skipped, got.truncated), (third, stream.len() - third));
    let mut decoder = FrameDecoder::new();
    decoder.push(&stream);
    while decoder.next_packet().is_some() {}
    assert_eq!(decoder.decoded_bytes(), 2 * claimed as u64);
    for seed in [1, 7, 255] {
        assert_eq!(check_stream(&stream, seed), got);
    }
}

#[test]
fn fuzz_entry_point_takes_the_seed_from_the_first_byte() {
    fuzz_one(&[]);
    fuzz_one(&[3]);
    let mut data = vec![5];
    data.extend(frame(&ping(9)).unwrap());
    data.extend_from_slice(b"tail");
    fuzz_one(&data);
}
