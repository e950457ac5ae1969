//! Blocking reader and writer over `std::io` streams (the guest side, and simple tools/tests).

use std::io::{ErrorKind, Read, Write};

use crate::error::{IdmError, Result};
use crate::frame::{FrameDecoder, encode_frame};
use crate::proto::IdmPacket;

/// Read size: big enough for a typical frame in one call, small enough to keep the buffer tight.
const READ_CHUNK: usize = 64 * 1024;

/// Reads packets from a byte stream.
#[derive(Debug)]
pub struct IdmReader<R> {
    inner: R,
    decoder: FrameDecoder,
    chunk: Vec<u8>,
    eof: bool,
}

impl<R: Read> IdmReader<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            decoder: FrameDecoder::new(),
            chunk: vec![0; READ_CHUNK],
            eof: false,
        }
    }

    /// Blocks for the next packet. `Ok(None)` at a clean end of stream.
    ///
    /// [`IdmError::Skipped`] is not fatal: garbage was dropped and the next call goes on reading.
    /// [`IdmError::Truncated`] is returned once when the stream ends inside a frame.
    pub fn read_packet(&mut self) -> Result<Option<IdmPacket>> {
        loop {
            if let Some(item) = self.decoder.next_packet() {
                return item.map(Some);
            }
            if self.eof {
                return match self.decoder.finish() {
                    Some(err) => Err(err),
                    None => Ok(None),
                };
            }
            match self.inner.read(&mut self.chunk) {
                Ok(0) => self.eof = true,
                Ok(n) => self.decoder.push(&self.chunk[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(source) => return Err(IdmError::Io { op: "read", source }),
            }
        }
    }

    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    pub fn into_inner(self) -> R {
        self.inner
    }
}

/// Writes packets to a byte stream, one `write_all` per frame.
#[derive(Debug)]
pub struct IdmWriter<W> {
    inner: W,
    buf: Vec<u8>,
}

impl<W: Write> IdmWriter<W> {
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            buf: Vec::new(),
        }
    }

    /// Encodes and writes one frame, then flushes.
    pub fn write_packet(&mut self, packet: &IdmPacket) -> Result<()> {
        self.buf.clear();
        encode_frame(packet, &mut self.buf)?;
        self.inner
            .write_all(&self.buf)
            .and_then(|()| self.inner.flush())
            .map_err(|source| IdmError::Io {
                op: "write",
                source,
            })
    }

    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    pub fn into_inner(self) -> W {
        self.inner
    }
}
