//! Any `:authority` on the Unix socket.
//!
//! gRPC clients name a Unix socket target in HTTP/2's `:authority` in their own ways: gRPC
//! C-core (Python `grpcio` since 1.57, C++, Ruby, PHP, C#) sends the socket path %-encoded
//! without its leading slash (`run%2Fspore%2Fspored.sock`), grpc-java and grpcurl send the
//! path itself (`/run/spore/spored.sock`), grpc-go sends `localhost`. h2, the HTTP/2 layer
//! under tonic, parses `:authority` as a URI authority and resets the stream with
//! PROTOCOL_ERROR when that fails (h2 `server.rs`, `Peer::convert_poll_message`), and has no
//! option to do otherwise. A local socket has no hosts to tell apart, and spored reads nothing
//! from the authority, so [`AuthorityStream`] sits between each accepted connection and h2 and
//! replaces a value h2 would refuse by one it accepts.
//!
//! The replacement has to be done inside HPACK ([`hpack`]), without disturbing the dynamic
//! table that the client's encoder and h2's decoder share, and to survive any way a client may
//! encode and frame its header blocks ([`frames`]). Nothing else of the connection changes:
//! the peer credentials ([`crate::auth`]), every other header and all data reach tonic as the
//! client sent them.

mod frames;
mod hpack;
mod huffman;
#[cfg(test)]
mod tests;

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::codegen::http::uri::Authority;
use tonic::transport::server::Connected;

use frames::Rewriter;

/// How much is read from the client at a time.
const READ_CHUNK: usize = 16 * 1024;

/// A client connection whose requests reach the server with an `:authority` it accepts.
/// Writes, and the connection's identity for [`Connected`], are the inner stream's.
#[derive(Debug)]
pub struct AuthorityStream<S> {
    inner: S,
    rewriter: Rewriter,
    /// Read from the client, not yet through the rewriter.
    input: BytesMut,
    /// Through the rewriter, not yet read by the server.
    output: BytesMut,
    eof: bool,
}

impl<S> AuthorityStream<S> {
    pub fn new(inner: S) -> AuthorityStream<S> {
        AuthorityStream {
            inner,
            rewriter: Rewriter::new(),
            input: BytesMut::new(),
            output: BytesMut::new(),
            eof: false,
        }
    }
}

/// The value h2 gets instead of a non-empty `:authority` value it would refuse, None when it
/// accepts the value as it is.
///
/// The replacement must have the value's length (see [`hpack`]), so each byte outside RFC
/// 3986's unreserved characters becomes `-`: `run%2Fspore%2Fspored.sock` reaches tonic as
/// `run-2Fspore-2Fspored.sock`. Unreserved characters alone always make a valid host name.
fn replacement(value: &[u8]) -> Option<Vec<u8>> {
    if Authority::try_from(value).is_ok() {
        return None;
    }
    let unreserved = |b: &u8| b.is_ascii_alphanumeric() || b"-._~".contains(b);
    Some(
        value
            .iter()
            .map(|b| if unreserved(b) { *b } else { b'-' })
            .collect(),
    )
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.output.is_empty() {
                let n = this.output.len().min(buf.remaining());
                buf.put_slice(&this.output.split_to(n));
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            this.input.reserve(READ_CHUNK);
            let n = ready!(tokio_util::io::poll_read_buf(
                Pin::new(&mut this.inner),
                cx,
                &mut this.input
            ))?;
            if n == 0 {
                this.eof = true;
                this.rewriter.finish(&mut this.input, &mut this.output);
            } else {
                this.rewriter.feed(&mut this.input, &mut this.output);
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthorityStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl<S: Connected> Connected for AuthorityStream<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}
