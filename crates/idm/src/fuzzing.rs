//! The decoder harness behind the cargo-fuzz target (`crates/idm/fuzz`) and the hostile-frame
//! corpus test: it decodes one byte stream every way this crate offers (one push, many small
//! pushes, [`IdmReader`] over short reads, and the tokio codec when that feature is on), checks
//! that they agree, and checks the invariants the host relies on when the guest is hostile:
//!
//! - every byte is accounted for exactly once: in a decoded frame, in a skip report, or in the
//!   partial frame left at the end;
//! - a skip report's byte count is exactly what the decoder dropped;
//! - between pushes the decoder holds less than one maximum frame;
//! - no byte reaches the protobuf decoder twice (decoding work is linear in the input);
//! - every decoded packet carries the magic, re-encodes within the frame limit and decodes
//!   back to itself.
//!
//! Compiled for this crate's tests and with the `fuzzing` feature only. It panics on a broken
//! invariant, which is how a fuzzer learns about it.

use std::io::{self, Read};

use prost::Message;

use crate::{
    FrameDecoder, HEADER_LEN, IdmError, IdmPacket, IdmReader, MAGIC, MAX_FRAME_LEN, SkipReason,
    frame,
};

/// What a stream decoded to (the same whichever way it was read).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Decoded {
    pub packets: Vec<IdmPacket>,
    /// Bytes dropped as not being a valid frame, in total.
    pub skipped: usize,
    /// Why the first dropped bytes were dropped.
    pub first_skip: Option<SkipReason>,
    /// Bytes of a partial frame left when the stream ended.
    pub truncated: usize,
}

impl Decoded {
    fn skip(&mut self, bytes: usize, reason: SkipReason) {
        assert!(bytes > 0, "a skip report of 0 bytes");
        self.skipped += bytes;
        self.first_skip.get_or_insert(reason);
    }
}

/// The fuzz target's entry: the first byte chooses how the rest is cut into reads.
pub fn fuzz_one(data: &[u8]) {
    if let Some((&seed, stream)) = data.split_first() {
        check_stream(stream, seed);
    }
}

/// Decodes `stream` every way, cut into reads as `seed` says (0: one read), asserts that all
/// agree and that the invariants hold, and returns the result.
pub fn check_stream(stream: &[u8], seed: u8) -> Decoded {
    let whole = with_decoder(stream, &[stream]);
    let pieces = chunks(stream, seed);
    assert_eq!(
        with_decoder(stream, &pieces),
        whole,
        "cut into reads (seed {seed})"
    );
    assert_eq!(with_reader(&pieces), whole, "IdmReader (seed {seed})");
    #[cfg(feature = "tokio")]
    assert_eq!(with_codec(stream, &pieces), whole, "IdmCodec (seed {seed})");

    for packet in &whole.packets {
        assert_eq!(
            packet.magic, MAGIC,
            "a packet without the magic got through"
        );
        let again = frame(packet).expect("a decoded packet re-encodes within the frame limit");
        let back = IdmPacket::decode(&again[HEADER_LEN..]).expect("a re-encoded packet decodes");
        assert_eq!(&back, packet, "re-encoding changed the packet");
    }
    whole
}

/// Read sizes for `seed`: a repeating pattern of small, single-byte and larger reads.
fn chunks(stream: &[u8], seed: u8) -> Vec<&[u8]> {
    if seed == 0 {
        return vec![stream];
    }
    let seed = usize::from(seed);
    let sizes = [seed % 13 + 1, 1, seed * 67 % 4093 + 1, 4];
    let mut out = Vec::new();
    let mut rest = stream;
    for size in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (head, tail) = rest.split_at((*size).min(rest.len()));
        out.push(head);
        rest = tail;
    }
    out
}

fn with_decoder(stream: &[u8], pieces: &[&[u8]]) -> Decoded {
    let mut decoder = FrameDecoder::new();
    let mut out = Decoded::default();
    let mut framed_bytes = 0;
    for piece in pieces {
        decoder.push(piece);
        loop {
            let before = decoder.buffered();
            let Some(item) = decoder.next_packet() else {
                break;
            };
            let consumed = before - decoder.buffered();
            match item {
                Ok(packet) => {
                    assert!(
                        (HEADER_LEN + 5..=HEADER_LEN + MAX_FRAME_LEN).contains(&consumed),
                        "a frame of {consumed} bytes"
                    );
                    framed_bytes += consumed;
                    out.packets.push(packet);
                }
                Err(IdmError::Skipped { bytes, reason }) => {
                    assert_eq!(
                        bytes, consumed,
                        "skip report says {bytes}, dropped {consumed}"
                    );
                    out.skip(bytes, reason);
                }
                Err(e) => panic!("next_packet gave {e:?}"),
            }
        }
        assert!(
            decoder.buffered() < HEADER_LEN + MAX_FRAME_LEN,
            "{} bytes held between pushes",
            decoder.buffered()
        );
    }
    let left = decoder.buffered();
    match decoder.finish() {
        None => assert_eq!(left, 0, "{left} bytes left without a Truncated report"),
        Some(IdmError::Truncated { buffered }) => {
            assert_eq!(buffered, left);
            out.truncated = buffered;
        }
        Some(e) => panic!("finish gave {e:?}"),
    }
    assert_eq!(
        framed_bytes + out.skipped + out.truncated,
        stream.len(),
        "bytes lost or counted twice"
    );
    assert!(
        decoder.decoded_bytes() <= stream.len() as u64,
        "{} bytes decoded out of {}",
        decoder.decoded_bytes(),
        stream.len()
    );
    out
}

/// A reader that hands out the pieces one per read, with an `Interrupted` now and then.
struct Pieces<'a> {
    pieces: std::slice::Iter<'a, &'a [u8]>,
    current: &'a [u8],
    interrupt: bool,
}

impl Read for Pieces<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.interrupt = !self.interrupt;
        if self.interrupt {
            return Err(io::ErrorKind::Interrupted.into());
        }
        while self.current.is_empty() {
            match self.pieces.next() {
                Some(next) => self.current = next,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current = &self.current[n..];
        Ok(n)
    }
}

fn with_reader(pieces: &[&[u8]]) -> Decoded {
    let mut reader = IdmReader::new(Pieces {
        pieces: pieces.iter(),
        current: &[],
        interrupt: false,
    });
    let mut out = Decoded::default();
    loop {
        match reader.read_packet() {
            Ok(Some(packet)) => out.packets.push(packet),
            Ok(None) => return out,
            Err(IdmError::Skipped { bytes, reason }) => out.skip(bytes, reason),
            Err(IdmError::Truncated { buffered }) => {
                assert_eq!(out.truncated, 0, "two Truncated reports");
                out.truncated = buffered;
            }
            Err(e) => panic!("read_packet gave {e:?}"),
        }
    }
}

#[cfg(feature = "tokio")]
fn with_codec(stream: &[u8], pieces: &[&[u8]]) -> Decoded {
    use bytes::BytesMut;
    use tokio_util::codec::Decoder;

    let mut codec = crate::IdmCodec::new();
    let mut buf = BytesMut::new();
    let mut out = Decoded::default();
    fn take(item: crate::Result<IdmPacket>, out: &mut Decoded) {
        match item {
            Ok(packet) => out.packets.push(packet),
            Err(IdmError::Skipped { bytes, reason }) => out.skip(bytes, reason),
            Err(IdmError::Truncated { buffered }) => {
                assert_eq!(out.truncated, 0, "two Truncated reports");
                out.truncated = buffered;
            }
            Err(e) => panic!("the codec gave {e:?}"),
        }
    }
    for piece in pieces {
        buf.extend_from_slice(piece);
        while let Some(item) = codec.decode(&mut buf).expect("decode never fails") {
            take(item, &mut out);
        }
    }
    while let Some(item) = codec.decode_eof(&mut buf).expect("decode_eof never fails") {
        take(item, &mut out);
    }
    assert!(buf.is_empty(), "decode_eof left {} bytes", buf.len());
    assert!(codec.decoded_bytes() <= stream.len() as u64);
    out
}
