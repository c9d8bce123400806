//! A strict request-framing guard in front of hyper's HTTP/1 server, against request smuggling.
//!
//! hyper accepts two things a proxy must not pass on: a request with both `Content-Length` and
//! `Transfer-Encoding` (it drops the length and reads the body chunked, where another server
//! behind or beside it may read the length), and lines ending in a bare LF (httparse's
//! leniency). The guard sits between the app's socket and hyper, follows message boundaries
//! ([`framer`]) and holds each request head back until it is complete and valid. A bad head
//! never reaches hyper: it gets [`REJECTED_HEAD`] instead, which it answers with 400 after any
//! earlier pipelined responses, then the end of the stream, so it closes the connection. Nothing
//! of the bad request is forwarded. A head over the size limit is handed over as it is: hyper
//! (with the same `max_header_size`) answers 431.
//!
//! Body bytes are read straight into hyper's buffer and only counted; heads (at most the size
//! limit) are the only bytes copied, into one buffer per connection.

pub(crate) mod framer;

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::io::poll_read_buf;

pub use framer::{ChunkedBody, digits};
use framer::{Feed, Framer};

/// What hyper gets instead of a bad head: a header line without a colon, which httparse always
/// refuses (hyper: `Parse::Header` → 400). A test checks that hyper still answers it with 400.
pub const REJECTED_HEAD: &[u8] = b"GET / HTTP/1.1\r\nrejected-by-hostmesh\r\n\r\n";

/// How much to read at once while a head is incomplete.
const READ_CHUNK: usize = 4096;

/// The app connection's IO as hyper's HTTP/1 server should see it.
#[derive(Debug)]
pub struct StrictH1<S> {
    inner: S,
    framer: Framer,
    /// Bytes read but not given to hyper yet; the first `ready` are cleared for it.
    held: BytesMut,
    ready: usize,
    /// The framer has seen all of `held` and needs more bytes.
    wants_more: bool,
    ending: Option<Ending>,
}

/// How a connection ends once the guard has refused something.
#[derive(Debug)]
enum Ending {
    /// These bytes, then the end of the stream.
    Eof(Bytes),
    /// A read error (broken chunked framing: the body cannot be trusted).
    Error,
}

impl<S> StrictH1<S> {
    /// Guards `inner`, whose request heads may be at most `max_head` bytes (hyper's
    /// `max_header_size` must be the same, so that it answers 431 above it).
    pub fn new(inner: S, max_head: usize) -> Self {
        StrictH1 {
            inner,
            framer: Framer::new(max_head),
            held: BytesMut::new(),
            ready: 0,
            wants_more: false,
            ending: None,
        }
    }

    /// Acts on the framer's verdict about `held`.
    fn judge(&mut self, feed: Feed) {
        match feed {
            Feed::Release(n) => self.ready = n,
            Feed::More => self.wants_more = true,
            Feed::Malformed => {
                self.held.clear();
                self.ending = Some(Ending::Eof(Bytes::from_static(REJECTED_HEAD)));
            }
            Feed::TooLarge => self.ending = Some(Ending::Eof(self.held.split().freeze())),
            Feed::BadChunk => self.ending = Some(Ending::Error),
        }
    }
}

impl Ending {
    fn read(&mut self, buf: &mut ReadBuf<'_>) -> io::Result<()> {
        match self {
            Ending::Eof(rest) => {
                let n = rest.len().min(buf.remaining());
                buf.put_slice(&rest[..n]);
                rest.advance(n);
                Ok(())
            }
            Ending::Error => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "malformed chunked request body",
            )),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for StrictH1<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if let Some(ending) = &mut this.ending {
                return Poll::Ready(ending.read(buf));
            }
            if this.ready > 0 {
                let n = this.ready.min(buf.remaining());
                buf.put_slice(&this.held[..n]);
                this.held.advance(n);
                this.ready -= n;
                return Poll::Ready(Ok(()));
            }
            if !this.held.is_empty() && !this.wants_more {
                let feed = this.framer.feed(&this.held);
                this.judge(feed);
                continue;
            }
            if this.held.is_empty() && this.framer.in_body() {
                // Body bytes go straight into hyper's buffer; whatever follows the body (the
                // next head) is taken back out and held.
                let before = buf.filled().len();
                ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
                let read = &buf.filled()[before..];
                if read.is_empty() {
                    // The end of the stream: hyper reports the body as incomplete.
                    return Poll::Ready(Ok(()));
                }
                match this.framer.feed(read) {
                    Feed::Release(n) => {
                        this.held.extend_from_slice(&read[n..]);
                        buf.set_filled(before + n);
                        if n > 0 {
                            return Poll::Ready(Ok(()));
                        }
                    }
                    _ => {
                        buf.set_filled(before);
                        this.ending = Some(Ending::Error);
                        continue;
                    }
                }
            }
            // A head is incomplete: read more of it.
            this.held.reserve(READ_CHUNK);
            if ready!(poll_read_buf(Pin::new(&mut this.inner), cx, &mut this.held))? == 0 {
                // The client closed mid-head: hyper sees the end of the stream and closes
                // quietly; the partial head never reaches it.
                this.held.clear();
                this.ending = Some(Ending::Eof(Bytes::new()));
            }
            this.wants_more = false;
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for StrictH1<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests;
