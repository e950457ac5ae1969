//! Frames queued for the zone: the bytes a stream link writes as they are (each frame is
//! stored behind its big-endian length, the stream encoding), and that a tap link walks frame
//! by frame. What the link cannot take yet stays here; the zone loop stops producing more while
//! [`TxQueue::pending`] is above its high-water mark, so nothing is ever dropped for lack of room.

use crate::link::framing::HEADER;

#[derive(Debug, Default)]
pub struct TxQueue {
    buf: Vec<u8>,
    /// Bytes of `buf` already written to the link.
    sent: usize,
}

impl TxQueue {
    /// Appends a frame of `len` bytes (zeroed) and returns it for filling.
    pub fn push(&mut self, len: usize) -> &mut [u8] {
        let at = self.buf.len();
        self.buf.reserve(HEADER + len);
        self.buf
            .extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
        self.buf.resize(at + HEADER + len, 0);
        &mut self.buf[at + HEADER..]
    }

    /// Drops the frame just pushed (its builder failed).
    pub fn unpush(&mut self, len: usize) {
        let keep = self.buf.len().saturating_sub(HEADER + len).max(self.sent);
        self.buf.truncate(keep);
    }

    /// Bytes queued and not yet written.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.sent
    }

    pub fn is_empty(&self) -> bool {
        self.pending() == 0
    }

    /// The unwritten bytes in stream encoding (a partial frame first, after a short write).
    pub fn unsent(&self) -> &[u8] {
        &self.buf[self.sent..]
    }

    /// The next whole frame not yet written, when `sent` is at a frame boundary.
    pub fn next_frame(&self) -> Option<&[u8]> {
        let rest = self.unsent();
        let len = u32::from_be_bytes(*rest.first_chunk::<HEADER>()?) as usize;
        rest.get(HEADER..HEADER + len)
    }

    /// Records `n` more bytes written; resets the buffer once everything is out.
    pub fn consume(&mut self, n: usize) {
        self.sent = (self.sent + n).min(self.buf.len());
        if self.sent == self.buf.len() {
            self.buf.clear();
            self.sent = 0;
        } else if self.sent > (1 << 20) && self.sent > self.buf.len() / 2 {
            self.buf.drain(..self.sent);
            self.sent = 0;
        }
    }

    /// Records that the next whole frame was written.
    pub fn consume_frame(&mut self) {
        if let Some(f) = self.next_frame() {
            let n = HEADER + f.len();
            self.consume(n);
        }
    }

    /// Forgets everything queued (the link went away; the frames' flows retransmit).
    pub fn clear(&mut self) {
        self.buf.clear();
        self.sent = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_come_out_in_stream_encoding_and_one_by_one() {
        let mut q = TxQueue::default();
        q.push(3).copy_from_slice(b"abc");
        q.push(2).copy_from_slice(b"de");
        assert_eq!(q.unsent(), b"\0\0\0\x03abc\0\0\0\x02de");
        assert_eq!(q.next_frame(), Some(&b"abc"[..]));
        q.consume_frame();
        assert_eq!(q.next_frame(), Some(&b"de"[..]));
        q.consume(3);
        assert_eq!(q.pending(), 3);
        q.consume(3);
        assert!(q.is_empty());
        assert_eq!(q.next_frame(), None);
    }

    #[test]
    fn unpush_removes_only_the_last_frame() {
        let mut q = TxQueue::default();
        q.push(1).copy_from_slice(b"x");
        q.push(4);
        q.unpush(4);
        assert_eq!(q.unsent(), b"\0\0\0\x01x");
    }
}
