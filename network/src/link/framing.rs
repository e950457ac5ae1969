//! The stream framing QEMU's `-netdev stream` and passt speak: each Ethernet frame is preceded
//! by its length as a big-endian `u32` (qemu `net/stream_data.c`, passt `tap.c`).
//!
//! [`Decoder`] cuts frames out of bytes read from the socket; it never trusts a length: one
//! below an Ethernet header or above [`MAX_FRAME`] is a [`FramingError`] (the peer is broken
//! or hostile, and the stream cannot be resynchronised, so the link is dropped and reopened).

/// Largest frame accepted: passt's limit (`ETH_MAX_MTU`, 65535), which covers a 65520 MTU
/// plus the Ethernet header.
pub const MAX_FRAME: usize = 65535;
/// Smallest frame: an Ethernet header.
pub const MIN_FRAME: usize = 14;
/// Bytes before each frame.
pub const HEADER: usize = 4;

/// A length field that no frame can have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("frame length {len} outside {MIN_FRAME}..={MAX_FRAME}")]
pub struct FramingError {
    pub len: u32,
}

/// Reassembles frames from a byte stream: `buf[start..end]` holds unread bytes.
#[derive(Debug)]
pub struct Decoder {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Decoder {
    /// A decoder whose buffer holds `capacity` bytes (at least one largest frame).
    pub fn new(capacity: usize) -> Decoder {
        Decoder {
            buf: vec![0; capacity.max(HEADER + MAX_FRAME)],
            start: 0,
            end: 0,
        }
    }

    /// Free space for the next read, after moving a partial frame to the front.
    pub fn spare(&mut self) -> &mut [u8] {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        &mut self.buf[self.end..]
    }

    /// Records that `n` bytes were read into [`Decoder::spare`].
    pub fn filled(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.len());
    }

    /// The next whole frame, `None` when more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<&[u8]>, FramingError> {
        let avail = &self.buf[self.start..self.end];
        let Some(header) = avail.first_chunk::<HEADER>() else {
            return Ok(None);
        };
        let len = u32::from_be_bytes(*header);
        let frame_len = len as usize;
        if !(MIN_FRAME..=MAX_FRAME).contains(&frame_len) {
            return Err(FramingError { len });
        }
        if avail.len() < HEADER + frame_len {
            return Ok(None);
        }
        let from = self.start + HEADER;
        self.start = from + frame_len;
        Ok(Some(&self.buf[from..from + frame_len]))
    }

    /// Bytes of a frame not yet complete.
    pub fn pending(&self) -> usize {
        self.end - self.start
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(frames: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for f in frames {
            out.extend_from_slice(&(f.len() as u32).to_be_bytes());
            out.extend_from_slice(f);
        }
        out
    }

    fn feed(d: &mut Decoder, bytes: &[u8]) {
        let spare = d.spare();
        spare[..bytes.len()].copy_from_slice(bytes);
        d.filled(bytes.len());
    }

    #[test]
    fn frames_split_anywhere_come_out_whole_and_in_order() {
        let a = [1u8; 14];
        let b = [2u8; 100];
        let stream = encode(&[&a, &b]);
        for cut in 0..stream.len() {
            let mut d = Decoder::new(0);
            let mut out = Vec::new();
            for part in [&stream[..cut], &stream[cut..]] {
                feed(&mut d, part);
                while let Some(f) = d.next_frame().unwrap() {
                    out.push(f.to_vec());
                }
            }
            assert_eq!(out, vec![a.to_vec(), b.to_vec()], "cut at {cut}");
            assert_eq!(d.pending(), 0);
        }
    }

    #[test]
    fn impossible_lengths_are_errors_not_allocations() {
        for len in [0u32, 13, 65536, u32::MAX] {
            let mut d = Decoder::new(0);
            feed(&mut d, &len.to_be_bytes());
            assert_eq!(d.next_frame().unwrap_err(), FramingError { len });
        }
    }

    #[test]
    fn a_largest_frame_fits() {
        let big = vec![7u8; MAX_FRAME];
        let stream = encode(&[&big]);
        let mut d = Decoder::new(0);
        feed(&mut d, &stream);
        assert_eq!(d.next_frame().unwrap().unwrap().len(), MAX_FRAME);
    }
}
