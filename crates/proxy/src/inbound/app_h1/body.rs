//! An app's HTTP/1.1 response body as the inbound side passes it on over HTTP/2: read from the
//! app connection as the peer's stream asks for it, by the response's framing (a length, chunked
//! and decoded, or until the app closes), each read handed on as DATA without a copy. At its
//! end the connection goes back to the worker's idle list ([`idle::put`]) when the app lets it
//! be used again.
//!
//! A response cut short (the app closes or resets early, or its chunked framing is broken) ends
//! the body with an error, which hyper's server turns into a reset of the peer's stream: the
//! caller sees the response fail, never a shorter one.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use hyper::body::{Body, Frame, SizeHint};

use super::idle;
use crate::outbound::h1::response::Framing;
use crate::outbound::h1::upstream::Upstream;
use crate::outbound::strict_h1::ChunkedBody;

/// Room read at once from an app.
const READ_CHUNK: usize = 16 * 1024;

/// What is left of the body.
#[derive(Debug)]
enum Left {
    Bytes(u64),
    Chunked(ChunkedBody),
    UntilClose,
    Done,
}

#[derive(Debug)]
pub struct AppBody {
    /// `None` once the body ended (the connection went back or was closed).
    conn: Option<Upstream>,
    left: Left,
    /// The app lets the connection be used again after this response.
    reusable: bool,
    /// Chunk data decoded from one read and not yet handed on.
    pending: VecDeque<Bytes>,
    idle_timeout: Duration,
}

impl AppBody {
    /// The body after the response head: `conn.buf` holds whatever of it was read with the
    /// head.
    pub fn new(conn: Upstream, framing: Framing, reusable: bool, idle_timeout: Duration) -> Self {
        let left = match framing {
            Framing::Empty | Framing::Length(0) => Left::Done,
            Framing::Length(n) => Left::Bytes(n),
            Framing::Chunked => Left::Chunked(ChunkedBody::default()),
            Framing::UntilClose => Left::UntilClose,
        };
        let mut body = AppBody {
            conn: Some(conn),
            left,
            reusable,
            pending: VecDeque::new(),
            idle_timeout,
        };
        if matches!(body.left, Left::Done) {
            // hyper does not poll a body that says it has ended: give the connection back now.
            body.finish();
        }
        body
    }

    /// The body ended: the connection goes back to the idle list if the app allows it and sent
    /// nothing beyond the response.
    fn finish(&mut self) {
        self.left = Left::Done;
        if let Some(conn) = self.conn.take()
            && self.reusable
            && conn.buf.is_empty()
        {
            idle::put(conn, self.idle_timeout);
        }
    }
}

fn cut_short() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the app cut its response short",
    )
}

/// Reads what the app has into `buf`; `Ok(0)` when it closed.
fn poll_read(conn: &mut Upstream, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
    let buf: &mut BytesMut = &mut conn.buf;
    if buf.capacity() - buf.len() < READ_CHUNK / 4 {
        buf.reserve(READ_CHUNK);
    }
    loop {
        ready!(conn.stream.poll_read_ready(cx))?;
        match conn.stream.try_read_buf(buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            r => return Poll::Ready(r),
        }
    }
}

impl Body for AppBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = &mut *self;
        loop {
            if let Some(data) = this.pending.pop_front() {
                return Poll::Ready(Some(Ok(Frame::data(data))));
            }
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            if !conn.buf.is_empty() {
                match &mut this.left {
                    Left::Done => {}
                    Left::Bytes(left) => {
                        let take = usize::try_from(*left)
                            .unwrap_or(usize::MAX)
                            .min(conn.buf.len());
                        let data = conn.buf.split_to(take).freeze();
                        *left -= take as u64;
                        if *left == 0 {
                            this.finish();
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    Left::Chunked(chunks) => {
                        let mut spans = Vec::new();
                        let Some((n, done)) = chunks.decode(&conn.buf, &mut |r| spans.push(r))
                        else {
                            this.conn = None;
                            return Poll::Ready(Some(Err(io::Error::new(
                                io::ErrorKind::InvalidData,
                                "bad chunked framing from the app",
                            ))));
                        };
                        let read = conn.buf.split_to(n).freeze();
                        this.pending
                            .extend(spans.into_iter().map(|r| read.slice(r)));
                        if done {
                            this.finish();
                        }
                        continue;
                    }
                    Left::UntilClose => {
                        let data = conn.buf.split().freeze();
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
            }
            if matches!(this.left, Left::Done) {
                this.finish();
                continue;
            }
            match ready!(poll_read(conn, cx)) {
                Ok(0) if matches!(this.left, Left::UntilClose) => {
                    this.reusable = false;
                    this.finish();
                }
                Ok(0) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(cut_short())));
                }
                Ok(_) => {}
                Err(e) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(e)));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.conn.is_none() && self.pending.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        match &self.left {
            Left::Bytes(n) => SizeHint::with_exact(*n),
            Left::Done if self.pending.is_empty() => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}
