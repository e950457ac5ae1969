//! Framing: `u32` little-endian length + one encoded [`IdmPacket`], with resynchronisation.
//!
//! A frame body always starts with the packet's field 1, `magic` (tag byte `0x0d` then the
//! fixed32 [`MAGIC`] in little-endian: the bytes `"\rIDM1"`). That gives a reader that joined
//! mid-stream, or saw garbage, something cheap to look for: it drops one byte at a time until a
//! plausible length is followed by those five bytes, and only then decodes. It never throws the
//! whole buffer away (krata did, and lost the good frames queued behind a bad one).
//!
//! A candidate whose length and magic look right but whose body does not decode is dropped
//! whole, not one byte at a time: otherwise a peer can pack a candidate header every few bytes,
//! each claiming nearly 1 MiB of body that parses until its last byte, and make the reader
//! decode almost every byte once per candidate (1.2 MB of such bytes cost 46 s of CPU before
//! this rule). With it, no byte reaches the protobuf decoder twice.
//!
//! The scanning logic works on plain byte slices ([`scan`]) so the synchronous
//! [`FrameDecoder`] and the tokio codec share it exactly.

use prost::Message;

use crate::error::{IdmError, Result, SkipReason};
use crate::proto::IdmPacket;

/// Largest frame body (the encoded packet), enforced when encoding and when decoding.
pub const MAX_FRAME_LEN: usize = 1024 * 1024;

/// The value of `IdmPacket.magic`: the bytes "IDM1" read as a little-endian u32.
pub const MAGIC: u32 = u32::from_le_bytes(*b"IDM1");

/// Tag of field 1 with wire type 5 (fixed32): `(1 << 3) | 5`.
const MAGIC_TAG: u8 = 0x0d;

/// The first five bytes of every frame body.
const MAGIC_PREFIX: [u8; 5] = {
    let m = MAGIC.to_le_bytes();
    [MAGIC_TAG, m[0], m[1], m[2], m[3]]
};

/// Length prefix size.
pub const HEADER_LEN: usize = 4;

/// Smallest valid body: just the magic.
const MIN_FRAME_LEN: usize = MAGIC_PREFIX.len();

/// Appends one frame holding `packet` to `out`.
///
/// `packet.magic` may be 0 (the encoder supplies it) or [`MAGIC`]. On error `out` is unchanged.
pub fn encode_frame(packet: &IdmPacket, out: &mut Vec<u8>) -> Result<()> {
    let prefix: &[u8] = match packet.magic {
        // prost skips a zero fixed32, so the magic is written by hand in front; field order
        // does not matter to protobuf decoders, and field 1 comes first anyway.
        0 => &MAGIC_PREFIX,
        MAGIC => &[],
        found => return Err(IdmError::BadMagic { found }),
    };
    let len = prefix.len() + packet.encoded_len();
    if len > MAX_FRAME_LEN {
        return Err(IdmError::PacketTooLarge {
            len,
            max: MAX_FRAME_LEN,
        });
    }
    let start = out.len();
    out.reserve(HEADER_LEN + len);
    // `len <= MAX_FRAME_LEN` fits in u32.
    out.extend_from_slice(&(len as u32).to_le_bytes());
    out.extend_from_slice(prefix);
    // Only fails when the buffer cannot grow, which a Vec can (up to isize::MAX).
    if packet.encode(out).is_err() {
        out.truncate(start);
        return Err(IdmError::PacketTooLarge {
            len,
            max: MAX_FRAME_LEN,
        });
    }
    Ok(())
}

/// Encodes `packet` as one frame in a new buffer.
pub fn frame(packet: &IdmPacket) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    encode_frame(packet, &mut out)?;
    Ok(out)
}

/// What the front of a buffer holds.
enum Front {
    /// Could be the start of a frame; more bytes are needed to tell.
    NeedMore,
    /// A whole valid frame of `4 + len` bytes.
    Frame { len: usize, packet: IdmPacket },
    /// The first `skip` bytes cannot start a frame.
    Bad { skip: usize, reason: SkipReason },
}

/// Looks at the front of `buf`; `decoded` counts the bytes handed to the protobuf decoder.
fn front(buf: &[u8], decoded: &mut u64) -> Front {
    let Some(header) = buf.first_chunk::<HEADER_LEN>() else {
        return Front::NeedMore;
    };
    let raw_len = u32::from_le_bytes(*header);
    let len = raw_len as usize;
    if !(MIN_FRAME_LEN..=MAX_FRAME_LEN).contains(&len) {
        return Front::Bad {
            skip: 1,
            reason: SkipReason::BadLength(raw_len),
        };
    }
    let body = &buf[HEADER_LEN..];
    let seen = body.len().min(MIN_FRAME_LEN);
    if body[..seen] != MAGIC_PREFIX[..seen] {
        return Front::Bad {
            skip: 1,
            reason: SkipReason::NoMagic,
        };
    }
    if body.len() < len {
        return Front::NeedMore;
    }
    *decoded += len as u64;
    // From here the header was believed: a failure drops the whole candidate (module docs).
    let skip = HEADER_LEN + len;
    match IdmPacket::decode(&body[..len]) {
        // A later duplicate field 1 would override the prefix; insist on the magic.
        Ok(packet) if packet.magic == MAGIC => Front::Frame { len, packet },
        Ok(_) => Front::Bad {
            skip,
            reason: SkipReason::NoMagic,
        },
        Err(e) => Front::Bad {
            skip,
            reason: SkipReason::Undecodable(e.to_string()),
        },
    }
}

/// Decoding state carried between calls.
#[derive(Debug, Default)]
pub(crate) struct Resync {
    /// Skipped bytes not yet reported, and why the first of them was skipped.
    skipped: usize,
    first: Option<SkipReason>,
    /// A frame decoded while a skip report had to go out first: it sits at the front of the
    /// buffer and is handed out by the next call without decoding it again.
    pending: Option<(usize, IdmPacket)>,
    /// Bytes handed to the protobuf decoder so far.
    decoded: u64,
}

impl Resync {
    fn take_report(&mut self) -> Option<IdmError> {
        let reason = self.first.take()?;
        let bytes = std::mem::take(&mut self.skipped);
        Some(IdmError::Skipped { bytes, reason })
    }

    pub(crate) fn decoded_bytes(&self) -> u64 {
        self.decoded
    }
}

/// One decoding step over `buf`: how many bytes to drop from its front, and what to hand out.
///
/// Garbage is reported once per run of skipped bytes (as [`IdmError::Skipped`]), before the frame
/// that ends the run. `None` means: feed more bytes. The caller must drop exactly the bytes it
/// is told to before calling again.
pub(crate) fn scan(buf: &[u8], resync: &mut Resync) -> (usize, Option<Result<IdmPacket>>) {
    if let Some((len, packet)) = resync.pending.take() {
        return (HEADER_LEN + len, Some(Ok(packet)));
    }
    let mut at = 0;
    while at < buf.len() {
        match front(&buf[at..], &mut resync.decoded) {
            Front::NeedMore => break,
            Front::Bad { skip, reason } => {
                resync.skipped += skip;
                resync.first.get_or_insert(reason);
                at += skip;
            }
            Front::Frame { len, packet } => {
                if let Some(report) = resync.take_report() {
                    resync.pending = Some((len, packet));
                    return (at, Some(Err(report)));
                }
                return (at + HEADER_LEN + len, Some(Ok(packet)));
            }
        }
    }
    (at, resync.take_report().map(Err))
}

/// Reports what is left when the stream ends: a partial frame is an error.
pub(crate) fn at_eof(buffered: usize, resync: &mut Resync) -> Option<IdmError> {
    // Callers only get here after `scan` said "need more", so nothing is pending.
    resync.pending = None;
    if let Some(report) = resync.take_report() {
        return Some(report);
    }
    (buffered > 0).then_some(IdmError::Truncated { buffered })
}

/// A push decoder: feed it bytes as they arrive, take packets out.
///
/// Memory stays bounded if the caller only pushes more after [`FrameDecoder::next_packet`]
/// returned `None`: the buffer then holds at most one partial frame plus the last push.
///
/// ```
/// use spore_idm::{FrameDecoder, IdmPacket, frame, proto::{Ping, idm_packet::Body}};
/// let bytes = frame(&IdmPacket::request(7, Body::Ping(Ping { nonce: 1 }))).unwrap();
/// let mut decoder = FrameDecoder::new();
/// decoder.push(&bytes[..3]);
/// assert!(decoder.next_packet().is_none());
/// decoder.push(&bytes[3..]);
/// let packet = decoder.next_packet().unwrap().unwrap();
/// assert_eq!(packet.request_id, 7);
/// ```
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    start: usize,
    resync: Resync,
}

impl FrameDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends received bytes.
    pub fn push(&mut self, data: &[u8]) {
        // Move the live bytes to the front before growing, so consumed bytes are not kept.
        if self.start > 0 && (self.start >= self.buf.len() / 2 || self.buf.len() == self.start) {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// The next packet, or an [`IdmError::Skipped`] report (not fatal: call again), or `None`
    /// when more bytes are needed.
    pub fn next_packet(&mut self) -> Option<Result<IdmPacket>> {
        let (consumed, item) = scan(&self.buf[self.start..], &mut self.resync);
        self.start += consumed;
        item
    }

    /// Call at end of stream: reports garbage not yet reported or a partial frame.
    pub fn finish(&mut self) -> Option<IdmError> {
        let buffered = self.buffered();
        self.buf.clear();
        self.start = 0;
        at_eof(buffered, &mut self.resync)
    }

    /// Bytes received but not yet decoded.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Bytes handed to the protobuf decoder so far. Never more than the bytes pushed: each byte
    /// is decoded at most once, whatever the peer sends.
    pub fn decoded_bytes(&self) -> u64 {
        self.resync.decoded_bytes()
    }
}
