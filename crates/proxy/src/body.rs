//! The one body type the proxies pass around: any body, boxed, so app bodies stream through
//! untouched (no buffering) and agent-made bodies fit the same slot.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;
use hyper::body::{Body, Frame, Incoming, SizeHint};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type ProxyBody = BoxBody<Bytes, BoxError>;

/// Boxes any body whose errors can be boxed.
pub fn boxed<B>(body: B) -> ProxyBody
where
    B: hyper::body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed()
}

/// How much of an HTTP/2 request body [`ReadToEnd`] still reads once nobody wants it, and for
/// how long: what a client has in flight when the answer reaches it (a stream window, 1 MiB in
/// hyper), not an upload the answer has made pointless.
const DRAIN_BYTES: usize = 1 << 20;
const DRAIN_WITHIN: Duration = Duration::from_secs(5);

/// An HTTP/2 request body that, dropped before its end (the answer came first: an access
/// policy's 403, an app that replied without reading, a failed attempt), is read to its end in
/// the background rather than reset.
///
/// Why: h2 remembers only its 50 most recent resets, for a second. DATA the client had already
/// sent that then arrives on a stream reset and forgotten counts as the client's protocol error,
/// and after 1,024 of those in a connection's life h2 ends the connection (GOAWAY
/// ENHANCE_YOUR_CALM), failing every request on it: on the peer connection, every request from
/// one host to this one. Reading on leaves the stream open until the client's END_STREAM, as
/// nginx and HAProxy do. Past [`DRAIN_BYTES`] or [`DRAIN_WITHIN`] the body is dropped (reset)
/// after all: that client is uploading, not finishing.
///
/// HTTP/1 bodies are left to hyper, which reads a little on or closes the connection: there is
/// no stream to keep open.
#[derive(Debug)]
pub struct ReadToEnd<B: Drainable = Incoming> {
    body: Option<B>,
    drain: bool,
    /// Bytes read, for the access log (`None` while it is off).
    read: crate::access_log::body::ReadCounter,
}

/// A request body [`ReadToEnd`] can read on in the background: hyper's, or one straight off an
/// h2 stream (`h2_stream::RecvBody`).
pub trait Drainable: Body<Data = Bytes> + Unpin + Send + 'static {}

impl<B: Body<Data = Bytes> + Unpin + Send + 'static> Drainable for B {}

impl<B: Drainable> ReadToEnd<B> {
    /// The body of a request that came as `version`.
    pub fn new(body: B, version: http::Version) -> ReadToEnd<B> {
        ReadToEnd {
            body: Some(body),
            drain: version == http::Version::HTTP_2,
            read: None,
        }
    }

    /// Adds what is read to `read` (the access log's count of request body bytes).
    pub fn counting(mut self, read: crate::access_log::body::ReadCounter) -> ReadToEnd<B> {
        self.read = read;
        self
    }
}

impl<B: Drainable> Body for ReadToEnd<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        match this.body.as_mut() {
            Some(b) => {
                let polled = Pin::new(b).poll_frame(cx);
                if let Poll::Ready(frame) = &polled {
                    crate::access_log::body::count(&this.read, frame);
                }
                polled
            }
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.body.as_ref().map(Body::size_hint).unwrap_or_default()
    }
}

impl<B: Drainable> Drop for ReadToEnd<B> {
    fn drop(&mut self) {
        let unread = self
            .body
            .take()
            .filter(|b| self.drain && !b.is_end_stream());
        let Some(body) = unread else {
            return;
        };
        // Outside a runtime (never on the data path) the body is simply dropped.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(drain(body));
        }
    }
}

/// Reads `body` to its end, discarding it, within [`DRAIN_BYTES`] and [`DRAIN_WITHIN`]. hyper
/// gives the flow-control window back as it reads, so the client can finish.
async fn drain<B: Body<Data = Bytes> + Unpin>(mut body: B) -> Drained {
    let read = async {
        let mut left = DRAIN_BYTES;
        while let Some(Ok(frame)) = body.frame().await {
            let n = frame.data_ref().map_or(0, Bytes::len);
            left = match left.checked_sub(n) {
                Some(left) => left,
                None => return Drained::TooLarge,
            };
        }
        Drained::ToItsEnd
    };
    tokio::time::timeout(DRAIN_WITHIN, read)
        .await
        .unwrap_or(Drained::TooSlow)
}

/// How a drain ended (for the tests).
#[derive(Debug, PartialEq, Eq)]
enum Drained {
    ToItsEnd,
    TooLarge,
    TooSlow,
}

/// A body lent to one attempt: it is taken from its slot only when the attempt first polls it.
/// If the attempt fails before that (a refused connect), [`Reclaim::take`] gets it back and the
/// request can go to another instance: it provably never left this host.
pub struct Lent {
    shared: Arc<Shared>,
    taken: Option<ProxyBody>,
    end_stream: bool,
    hint: SizeHint,
}

/// The lender's side of a [`Lent`] body.
#[derive(Clone)]
pub struct Reclaim {
    shared: Arc<Shared>,
}

struct Shared {
    slot: Mutex<Option<ProxyBody>>,
    /// The body itself failed (the client's framing was bad, or it went away mid-body): an
    /// attempt that fails after this failed because of the client, not the instance.
    failed: AtomicBool,
}

impl std::fmt::Debug for Lent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lent").finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Reclaim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reclaim").finish_non_exhaustive()
    }
}

/// Lends `body` to one attempt.
pub fn lend(body: ProxyBody) -> (Lent, Reclaim) {
    let end_stream = body.is_end_stream();
    let hint = body.size_hint();
    let shared = Arc::new(Shared {
        slot: Mutex::new(Some(body)),
        failed: AtomicBool::new(false),
    });
    (
        Lent {
            shared: shared.clone(),
            taken: None,
            end_stream,
            hint,
        },
        Reclaim { shared },
    )
}

impl Reclaim {
    /// The body, if the attempt never started reading it.
    pub fn take(&self) -> Option<ProxyBody> {
        self.shared
            .slot
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    /// Whether reading the body itself failed: the client's fault, whatever the attempt says.
    pub fn body_failed(&self) -> bool {
        self.shared.failed.load(Ordering::Relaxed)
    }
}

impl Body for Lent {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.taken.is_none() {
            let body = self
                .shared
                .slot
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            match body {
                Some(b) => self.taken = Some(b),
                // Reclaimed by the lender: this attempt was abandoned.
                None => return Poll::Ready(Some(Err("request body reclaimed".into()))),
            }
        }
        let polled = match self.taken.as_mut() {
            Some(b) => Pin::new(b).poll_frame(cx),
            None => Poll::Ready(None),
        };
        if let Poll::Ready(Some(Err(_))) = &polled {
            self.shared.failed.store(true, Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.taken {
            Some(b) => b.is_end_stream(),
            None => self.end_stream,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.taken {
            Some(b) => b.size_hint(),
            None => self.hint,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Full;

    fn body(s: &'static str) -> ProxyBody {
        boxed(
            Full::new(Bytes::from_static(s.as_bytes()))
                .map_err(|never: std::convert::Infallible| match never {}),
        )
    }

    #[tokio::test]
    async fn an_unread_body_comes_back() {
        let (lent, reclaim) = lend(body("hello"));
        assert!(!lent.is_end_stream());
        drop(lent);
        let back = reclaim.take().expect("never polled: reclaimable");
        let bytes = back.collect().await.expect("body").to_bytes();
        assert_eq!(bytes, "hello");
    }

    #[tokio::test]
    async fn a_failing_body_is_told_apart() {
        /// A client body whose framing breaks at once (as hyper reports a bad chunk size).
        struct BadChunk;
        impl Body for BadChunk {
            type Data = Bytes;
            type Error = BoxError;
            fn poll_frame(
                self: Pin<&mut Self>,
                _: &mut Context<'_>,
            ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
                Poll::Ready(Some(Err("invalid chunk size".into())))
            }
        }
        let failing = boxed(BadChunk);
        let (lent, reclaim) = lend(failing);
        assert!(!reclaim.body_failed());
        assert!(lent.collect().await.is_err());
        assert!(reclaim.body_failed());
        let (ok, reclaim) = lend(body("hello"));
        ok.collect().await.expect("body");
        assert!(!reclaim.body_failed());
    }

    /// A body of `chunks` frames of 64 KiB, then (if `ends`) its end, else nothing ever again.
    struct Upload {
        chunks: usize,
        ends: bool,
    }

    impl Body for Upload {
        type Data = Bytes;
        type Error = BoxError;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            if self.chunks > 0 {
                self.chunks -= 1;
                Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![0u8; 1 << 16])))))
            } else if self.ends {
                Poll::Ready(None)
            } else {
                Poll::Pending
            }
        }
    }

    fn upload(chunks: usize, ends: bool) -> Upload {
        Upload { chunks, ends }
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_body_is_read_to_its_end_within_bounds() {
        assert_eq!(drain(upload(3, true)).await, Drained::ToItsEnd);
        assert_eq!(drain(upload(16, true)).await, Drained::ToItsEnd);
        assert_eq!(drain(upload(17, true)).await, Drained::TooLarge);
        let started = tokio::time::Instant::now();
        assert_eq!(drain(upload(1, false)).await, Drained::TooSlow);
        assert_eq!(started.elapsed(), DRAIN_WITHIN);
    }

    #[tokio::test]
    async fn a_read_body_is_gone() {
        let (lent, reclaim) = lend(body("hello"));
        let bytes = lent.collect().await.expect("body").to_bytes();
        assert_eq!(bytes, "hello");
        assert!(reclaim.take().is_none());
    }
}
