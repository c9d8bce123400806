//! The one body type the proxies pass around: any body, boxed, so app bodies stream through
//! untouched (no buffering) and agent-made bodies fit the same slot.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;
use hyper::body::{Body, Frame, SizeHint};

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

    #[tokio::test]
    async fn a_read_body_is_gone() {
        let (lent, reclaim) = lend(body("hello"));
        let bytes = lent.collect().await.expect("body").to_bytes();
        assert_eq!(bytes, "hello");
        assert!(reclaim.take().is_none());
    }
}
