//! The tokio codec (feature `tokio`) for the host side.
//!
//! Items are `Result<IdmPacket, IdmError>`: a bad frame is an item ([`crate::IdmError::Skipped`]), not a
//! stream error, because `FramedRead` ends the stream after the first decoder error and one
//! guest's garbage must not cost the connection. Only I/O failures end the stream.

use std::io;

use bytes::{Buf, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::error::Result;
use crate::frame::{Resync, at_eof, encode_frame, scan};
use crate::proto::IdmPacket;

/// `tokio_util::codec` Decoder + Encoder for IDM frames.
///
/// ```
/// use futures::{SinkExt, StreamExt};
/// use spore_idm::{IdmCodec, IdmPacket, proto::{Ping, idm_packet::Body}};
/// use tokio_util::codec::Framed;
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let (host, guest) = tokio::io::duplex(4096);
/// let mut host = Framed::new(host, IdmCodec::new());
/// let mut guest = Framed::new(guest, IdmCodec::new());
/// host.send(IdmPacket::request(1, Body::Ping(Ping { nonce: 9 }))).await.unwrap();
/// let packet = guest.next().await.unwrap().unwrap().unwrap();
/// assert_eq!(packet.request_id, 1);
/// # });
/// ```
#[derive(Debug, Default)]
pub struct IdmCodec {
    resync: Resync,
    scratch: Vec<u8>,
}

impl IdmCodec {
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes handed to the protobuf decoder so far (each received byte at most once).
    pub fn decoded_bytes(&self) -> u64 {
        self.resync.decoded_bytes()
    }
}

impl Decoder for IdmCodec {
    type Item = Result<IdmPacket>;
    type Error = io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> io::Result<Option<Self::Item>> {
        let (consumed, item) = scan(src, &mut self.resync);
        src.advance(consumed);
        Ok(item)
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> io::Result<Option<Self::Item>> {
        if let Some(item) = self.decode(src)? {
            return Ok(Some(item));
        }
        let buffered = src.len();
        src.clear();
        Ok(at_eof(buffered, &mut self.resync).map(Err))
    }
}

impl Encoder<IdmPacket> for IdmCodec {
    type Error = io::Error;

    fn encode(&mut self, packet: IdmPacket, dst: &mut BytesMut) -> io::Result<()> {
        self.encode(&packet, dst)
    }
}

impl Encoder<&IdmPacket> for IdmCodec {
    type Error = io::Error;

    fn encode(&mut self, packet: &IdmPacket, dst: &mut BytesMut) -> io::Result<()> {
        self.scratch.clear();
        // Too large or a wrong magic: the caller's packet is at fault, not the stream.
        encode_frame(packet, &mut self.scratch)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        dst.extend_from_slice(&self.scratch);
        Ok(())
    }
}
