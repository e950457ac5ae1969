//! The client's half of an HTTP/2 connection (RFC 9113), frame by frame: each header block
//! goes through [`hpack::rewrite_block`], every other byte passes on as it came.
//!
//! The rewriter never refuses anything itself. What it cannot follow is either something h2
//! refuses with a connection error (no preface, a malformed HEADERS or CONTINUATION frame, a
//! frame over 16 KiB, a header block HPACK cannot decode), or a header block far larger than
//! any request spored accepts ([`MAX_BLOCK`]). From there on the connection's bytes pass on
//! untouched, so h2 sees exactly what the client sent and answers as it would without the
//! rewriter.

use bytes::{BufMut, BytesMut};

use super::hpack::{self, Table};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
const PRIORITY_LEN: usize = 5;

/// The largest frame payload: SETTINGS_MAX_FRAME_SIZE's initial value, which every endpoint
/// accepts and spored's server keeps (hyper's default); h2 refuses a longer HEADERS frame.
const MAX_FRAME: usize = 16_384;

/// The most header block bytes (frames included) collected before giving up on a
/// connection. hyper lets a request's header list decode to at most 16 KiB, where each field
/// counts its name and value plus 32 bytes; encoders use Huffman coding only where it
/// shortens a string, so real blocks stay well below this.
const MAX_BLOCK: usize = 64 * 1024;

/// Rewrites the `:authority` of every request on one connection; see the module docs.
#[derive(Debug)]
pub struct Rewriter {
    state: State,
    table: Table,
    block: Option<Block>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the client's connection preface has been seen whole.
    Preface,
    /// At a frame header.
    Frame,
    /// Inside the payload of a frame passed on as it is, with this many bytes to go.
    Payload(usize),
    /// Every byte passes on untouched.
    Transparent,
}

/// A header block being collected: a HEADERS frame and its CONTINUATION frames.
#[derive(Debug)]
struct Block {
    stream: u32,
    /// The HEADERS frame's stream identifier field as sent.
    stream_field: [u8; 4],
    /// END_STREAM and PRIORITY from the HEADERS frame.
    flags: u8,
    priority: Option<[u8; PRIORITY_LEN]>,
    /// The frames as they came, passed on when the block needs no change.
    frames: Vec<u8>,
    /// The header block fragments, joined.
    fragments: Vec<u8>,
}

impl Rewriter {
    pub fn new() -> Rewriter {
        Rewriter {
            state: State::Preface,
            table: Table::new(),
            block: None,
        }
    }

    /// Whether the rewriter gave up on this connection.
    #[cfg(test)]
    pub fn is_transparent(&self) -> bool {
        self.state == State::Transparent
    }

    /// Moves everything it can from `input` to `output`, rewritten; an incomplete frame that
    /// it needs whole stays in `input`.
    pub fn feed(&mut self, input: &mut BytesMut, output: &mut BytesMut) {
        loop {
            match self.state {
                State::Transparent => {
                    output.extend_from_slice(&input.split());
                    return;
                }
                State::Payload(left) => {
                    let n = left.min(input.len());
                    if n == 0 {
                        return;
                    }
                    output.extend_from_slice(&input.split_to(n));
                    self.state = if n == left {
                        State::Frame
                    } else {
                        State::Payload(left - n)
                    };
                }
                State::Preface => {
                    let n = PREFACE.len().min(input.len());
                    if input[..n] != PREFACE[..n] {
                        self.give_up(
                            output,
                            "the connection does not start with HTTP/2's preface",
                        );
                    } else if n < PREFACE.len() {
                        return;
                    } else {
                        output.extend_from_slice(&input.split_to(n));
                        self.state = State::Frame;
                    }
                }
                State::Frame => {
                    if input.len() < FRAME_HEADER {
                        return;
                    }
                    let len = usize::from(input[0]) << 16
                        | usize::from(input[1]) << 8
                        | usize::from(input[2]);
                    let kind = input[3];
                    let stream =
                        u32::from_be_bytes([input[5], input[6], input[7], input[8]]) & 0x7fff_ffff;
                    let in_block = self.block.as_ref().map(|b| b.stream);
                    let collect = match (kind, in_block) {
                        (HEADERS, None) => true,
                        (CONTINUATION, Some(s)) if s == stream => true,
                        (CONTINUATION, _) | (_, Some(_)) => {
                            self.give_up(output, "a header block is interrupted or a CONTINUATION frame has no block");
                            continue;
                        }
                        _ => false,
                    };
                    if !collect {
                        output.extend_from_slice(&input.split_to(FRAME_HEADER));
                        self.state = if len == 0 {
                            State::Frame
                        } else {
                            State::Payload(len)
                        };
                        continue;
                    }
                    if len > MAX_FRAME {
                        self.give_up(output, "a HEADERS or CONTINUATION frame is over 16 KiB");
                        continue;
                    }
                    if input.len() < FRAME_HEADER + len {
                        return;
                    }
                    let frame = input.split_to(FRAME_HEADER + len);
                    if let Err(why) = self.collect(&frame) {
                        self.give_up(output, why);
                        // The frame was not kept: it goes on after the block's earlier frames.
                        output.extend_from_slice(&frame);
                        continue;
                    }
                    if frame[4] & END_HEADERS != 0 {
                        self.end_block(output);
                    }
                }
            }
        }
    }

    /// The client closed its side: whatever is left passes on as it is.
    pub fn finish(&mut self, input: &mut BytesMut, output: &mut BytesMut) {
        if self.state != State::Transparent && (self.block.is_some() || !input.is_empty()) {
            self.give_up(output, "the connection ends inside a frame");
        }
        output.extend_from_slice(&input.split());
    }

    /// Adds a HEADERS or CONTINUATION frame to the block.
    fn collect(&mut self, frame: &[u8]) -> Result<(), &'static str> {
        let flags = frame[4];
        let payload = &frame[FRAME_HEADER..];
        let Some(block) = &mut self.block else {
            // §6.2: [pad length] [priority] fragment [padding].
            let mut rest = payload;
            let mut pad = 0;
            if flags & PADDED != 0 {
                let (&n, tail) = rest.split_first().ok_or("a HEADERS frame is too short")?;
                pad = usize::from(n);
                rest = tail;
            }
            let mut priority = None;
            if flags & PRIORITY != 0 {
                let (fields, tail) = rest
                    .split_first_chunk::<PRIORITY_LEN>()
                    .ok_or("a HEADERS frame is too short")?;
                priority = Some(*fields);
                rest = tail;
            }
            let fragment = rest
                .len()
                .checked_sub(pad)
                .map(|n| &rest[..n])
                .ok_or("a HEADERS frame's padding is longer than the frame")?;
            self.block = Some(Block {
                stream: u32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]) & 0x7fff_ffff,
                stream_field: [frame[5], frame[6], frame[7], frame[8]],
                flags: flags & (END_STREAM | PRIORITY),
                priority,
                frames: frame.to_vec(),
                fragments: fragment.to_vec(),
            });
            return Ok(());
        };
        if block.frames.len() + frame.len() > MAX_BLOCK {
            return Err("a header block is over 64 KiB");
        }
        block.frames.extend_from_slice(frame);
        block.fragments.extend_from_slice(payload);
        Ok(())
    }

    /// Passes on a complete header block, rewritten if it needs to be.
    fn end_block(&mut self, output: &mut BytesMut) {
        let Some(block) = self.block.take() else {
            return;
        };
        match hpack::rewrite_block(&mut self.table, &block.fragments, super::replacement) {
            Ok(None) => output.extend_from_slice(&block.frames),
            Ok(Some(fragments)) => write_block(&block, &fragments, output),
            Err(e) => {
                tracing::debug!(
                    "passing a connection on untouched: its header block cannot be decoded: {e}"
                );
                output.extend_from_slice(&block.frames);
                self.state = State::Transparent;
            }
        }
    }

    fn give_up(&mut self, output: &mut BytesMut, why: &str) {
        tracing::debug!("passing a connection on untouched: {why}");
        if let Some(block) = self.block.take() {
            output.extend_from_slice(&block.frames);
        }
        self.state = State::Transparent;
    }
}

/// Writes a rewritten block as one HEADERS frame and as many CONTINUATION frames as it needs,
/// without padding (padding carries nothing, RFC 9113 §6.2).
fn write_block(block: &Block, fragments: &[u8], output: &mut BytesMut) {
    let priority_len = block.priority.map_or(0, |p| p.len());
    let first = fragments.len().min(MAX_FRAME - priority_len);
    let (head, mut rest) = fragments.split_at(first);
    let end = if rest.is_empty() { END_HEADERS } else { 0 };
    frame_header(
        output,
        head.len() + priority_len,
        HEADERS,
        block.flags | end,
        block.stream_field,
    );
    if let Some(priority) = block.priority {
        output.put_slice(&priority);
    }
    output.put_slice(head);
    while !rest.is_empty() {
        let (chunk, tail) = rest.split_at(rest.len().min(MAX_FRAME));
        let end = if tail.is_empty() { END_HEADERS } else { 0 };
        frame_header(output, chunk.len(), CONTINUATION, end, block.stream_field);
        output.put_slice(chunk);
        rest = tail;
    }
}

fn frame_header(output: &mut BytesMut, len: usize, kind: u8, flags: u8, stream: [u8; 4]) {
    output.put_slice(&(len as u32).to_be_bytes()[1..]);
    output.put_u8(kind);
    output.put_u8(flags);
    output.put_slice(&stream);
}
