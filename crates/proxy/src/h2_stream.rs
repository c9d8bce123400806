//! Bodies on the h2 crate's streams, for the agent's HTTP/2 client (`h2_client`) and its
//! inbound server (`inbound::http`): a body sent as the other side's flow control allows
//! ([`Pipe`]), and one received, read as a [`hyper::body::Body`] that gives the window back as
//! it is read ([`RecvBody`]). Each holds a guard `G` (what counts the stream as open) until it
//! ends.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use h2::{RecvStream, SendStream};
use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::oneshot;

use crate::body::BoxError;

/// A body received on an h2 stream: a response to the agent's request, or a peer's request.
#[derive(Debug)]
pub struct RecvBody<G = ()> {
    recv: RecvStream,
    /// What `content-length` says is still to come.
    remaining: Option<u64>,
    data_done: bool,
    _guard: G,
}

impl<G> RecvBody<G> {
    /// `head`'s body: its `content-length` is the size hint (h2 holds the stream to it).
    pub(crate) fn new(recv: RecvStream, head: &http::HeaderMap, guard: G) -> RecvBody<G> {
        let length = head
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse().ok());
        RecvBody {
            recv,
            remaining: length,
            data_done: false,
            _guard: guard,
        }
    }
}

impl<G: Unpin> Body for RecvBody<G> {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        let this = &mut *self;
        if !this.data_done {
            match ready!(this.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    // Read: the sender may send as much again.
                    let _ = this.recv.flow_control().release_capacity(data.len());
                    if let Some(n) = &mut this.remaining {
                        *n = n.saturating_sub(data.len() as u64);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) => return Poll::Ready(early_response(e)),
                None => this.data_done = true,
            }
        }
        match ready!(this.recv.poll_trailers(cx)) {
            Ok(trailers) => Poll::Ready(trailers.map(|t| Ok(Frame::trailers(t)))),
            Err(e) => Poll::Ready(early_response(e)),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.remaining.map(SizeHint::with_exact).unwrap_or_default()
    }
}

/// A reset with NO_ERROR ends the body rather than failing it: the sender answered without
/// reading the whole request (RFC 9113, 8.1).
fn early_response(e: h2::Error) -> Option<Result<Frame<Bytes>, h2::Error>> {
    if e.reason() == Some(h2::Reason::NO_ERROR) {
        None
    } else {
        Some(Err(e))
    }
}

/// Sends a body on its stream, no faster than the other side's window allows, until its end,
/// a failure, or (a request's body, while its response has not come) the request being given
/// up on.
pub(crate) struct Pipe<B, G> {
    body: B,
    stream: SendStream<Bytes>,
    /// Fired (or dropped) by the request while it waits for the response: fired, the request
    /// was given up on and the stream is reset; dropped unfired, the response came and the body
    /// goes on (a gRPC stream's requests may follow its response head).
    cancel: Option<oneshot::Receiver<()>>,
    _guard: G,
}

impl<B, G> Pipe<B, G>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    pub(crate) fn new(body: B, stream: SendStream<Bytes>, guard: G) -> Pipe<B, G> {
        Pipe {
            body,
            stream,
            cancel: None,
            _guard: guard,
        }
    }

    /// The same, reset when `cancel` fires.
    pub(crate) fn cancelled_by(mut self, cancel: oneshot::Receiver<()>) -> Pipe<B, G> {
        self.cancel = Some(cancel);
        self
    }

    fn send(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), h2::Error>> {
        loop {
            // Room for a byte before the next chunk is read: the client's body is read no
            // faster than the other side takes it.
            self.stream.reserve_capacity(1);
            if self.stream.capacity() == 0 {
                loop {
                    match ready!(self.stream.poll_capacity(cx)) {
                        Some(Ok(0)) => {}
                        Some(Ok(_)) => break,
                        Some(Err(e)) => return Poll::Ready(Err(e)),
                        // The stream is gone (reset): nothing more can go out.
                        None => return Poll::Ready(Err(h2::Reason::CANCEL.into())),
                    }
                }
            } else if let Poll::Ready(reason) = self.stream.poll_reset(cx)? {
                return Poll::Ready(Err(reason.into()));
            }
            let frame = match ready!(Pin::new(&mut self.body).poll_frame(cx)) {
                Some(Ok(frame)) => frame,
                Some(Err(e)) => {
                    // The body broke: the other side must not take what came as all of it.
                    self.stream.send_reset(h2::Reason::INTERNAL_ERROR);
                    tracing::debug!("body failed midway: {}", e.into());
                    return Poll::Ready(Ok(()));
                }
                None => {
                    self.stream.reserve_capacity(0);
                    return Poll::Ready(self.stream.send_data(Bytes::new(), true));
                }
            };
            match frame.into_data() {
                Ok(data) => {
                    let end = self.body.is_end_stream();
                    if !data.is_empty() || end {
                        self.stream.send_data(data, end)?;
                    }
                    if end {
                        return Poll::Ready(Ok(()));
                    }
                }
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        self.stream.reserve_capacity(0);
                        return Poll::Ready(self.stream.send_trailers(trailers));
                    }
                }
            }
        }
    }
}

impl<B, G> Future for Pipe<B, G>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
    G: Unpin,
{
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        if let Some(cancel) = &mut this.cancel {
            match Pin::new(cancel).poll(cx) {
                Poll::Ready(Ok(())) => {
                    this.stream.send_reset(h2::Reason::CANCEL);
                    return Poll::Ready(());
                }
                Poll::Ready(Err(_)) => this.cancel = None,
                Poll::Pending => {}
            }
        }
        match ready!(this.send(cx)) {
            Ok(()) => {}
            Err(e) => tracing::debug!("body not sent to its end: {e}"),
        }
        Poll::Ready(())
    }
}
