//! Bodies that count their bytes for the access log: [`Counted`] on the request side (into a
//! shared counter, since the body moves into attempts), [`Logged`] on the response side, whose
//! entry is written when the body is dropped: after its last byte went to the client, or when
//! the client went away first.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::{AccessLog, Entry};

/// Bytes of a request body read so far; `None` while access logs are off (no counting).
pub type ReadCounter = Option<Arc<AtomicU64>>;

/// A new counter when `log` is on.
pub fn read_counter(log: &AccessLog) -> ReadCounter {
    log.is_on().then(Arc::default)
}

/// The length of `frame` when it is a data frame (trailers and errors carry no body bytes).
fn data_len<E>(frame: &Option<Result<Frame<Bytes>, E>>) -> Option<u64> {
    match frame {
        Some(Ok(frame)) => frame.data_ref().map(|d| d.len() as u64),
        _ => None,
    }
}

/// Adds a data frame's length to `counter`.
pub fn count<E>(counter: &ReadCounter, frame: &Option<Result<Frame<Bytes>, E>>) {
    if let (Some(c), Some(len)) = (counter, data_len(frame)) {
        c.fetch_add(len, Ordering::Relaxed);
    }
}

pin_project! {
    /// A request body that adds what is read from it to a [`ReadCounter`].
    #[derive(Debug)]
    pub struct Counted<B> {
        #[pin]
        inner: B,
        counter: ReadCounter,
    }
}

impl<B> Counted<B> {
    pub fn new(inner: B, counter: ReadCounter) -> Counted<B> {
        Counted { inner, counter }
    }

    pub fn get_ref(&self) -> &B {
        &self.inner
    }
}

impl<B: Body<Data = Bytes>> Body for Counted<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if let Poll::Ready(frame) = &polled {
            count(this.counter, frame);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// An entry waiting for its response body to end; written when dropped.
#[derive(Debug)]
pub struct Pending {
    entry: Option<Entry>,
    log: AccessLog,
    started: Instant,
    read: ReadCounter,
    sent: u64,
}

impl Pending {
    /// `entry` for a request that began at `started`, whose body bytes `read` counts.
    pub fn new(entry: Entry, log: AccessLog, started: Instant, read: ReadCounter) -> Pending {
        Pending {
            entry: Some(entry),
            log,
            started,
            read,
            sent: 0,
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let Some(mut entry) = self.entry.take() else {
            return;
        };
        entry.bytes_out = self.sent;
        if let Some(read) = &self.read {
            entry.bytes_in = read.load(Ordering::Relaxed);
        }
        entry.duration = self.started.elapsed();
        self.log.log(entry);
    }
}

pin_project! {
    /// A response body that counts what goes to the client and logs its entry when dropped.
    #[derive(Debug)]
    pub struct Logged<B> {
        #[pin]
        inner: B,
        pending: Pending,
    }
}

impl<B> Logged<B> {
    pub fn new(inner: B, pending: Pending) -> Logged<B> {
        Logged { inner, pending }
    }
}

impl<B: Body<Data = Bytes>> Body for Logged<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if let Poll::Ready(frame) = &polled {
            this.pending.sent += data_len(frame).unwrap_or(0);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
