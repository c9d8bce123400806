//! Idle connections, which a listener must not let hold its slots:
//!
//! - [`Idle`] tracks whether a connection is serving anything. A request is busy from its
//!   arrival until its response body has been sent or dropped ([`BusyBody`]).
//! - [`Idle::close_when_idle`] shuts a served HTTP/2 connection down gracefully (GOAWAY) once
//!   it has been idle for a timeout. hyper's h2 server has none: a client that sent the
//!   preface and SETTINGS and nothing more kept its connection, and its slot under
//!   `max_connections`, forever (60 such clients locked every app out of an agent with
//!   `max_connections = 50`). HTTP/1 needs none of this: hyper's `header_read_timeout` already
//!   closes a keep-alive connection that sends no next request.
//! - [`Capped`] admits connections up to a cap and, at the cap, makes room by closing the one
//!   idle longest (RFC 7766 §6.2.3 for DNS over TCP), so that held connections cannot lock new
//!   clients out; only when every connection is busy is the new one refused.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body, Frame, SizeHint};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// One connection's activity.
#[derive(Debug, Clone)]
pub struct Idle {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    timeout: Duration,
    active: AtomicUsize,
    /// When `active` last dropped to zero (or the connection began).
    idle_since: Mutex<Instant>,
}

impl Idle {
    pub fn new(timeout: Duration) -> Self {
        Idle {
            shared: Arc::new(Shared {
                timeout,
                active: AtomicUsize::new(0),
                idle_since: Mutex::new(Instant::now()),
            }),
        }
    }

    /// Marks one request busy until the returned guard is dropped.
    pub fn busy(&self) -> Busy {
        self.shared.active.fetch_add(1, Ordering::AcqRel);
        Busy {
            shared: self.shared.clone(),
        }
    }

    /// How long it has been idle; `None` while busy.
    pub fn idle_for(&self) -> Option<Duration> {
        if self.shared.active.load(Ordering::Acquire) > 0 {
            return None;
        }
        Some(lock(&self.shared.idle_since).elapsed())
    }

    /// Completes once the connection has had no busy request for the timeout.
    pub async fn expired(&self) {
        loop {
            let wake = if self.shared.active.load(Ordering::Acquire) == 0 {
                let since = *lock(&self.shared.idle_since);
                let deadline = since + self.shared.timeout;
                if Instant::now() >= deadline {
                    return;
                }
                deadline
            } else {
                // Busy now: look again a timeout later (cheap, and never early).
                Instant::now() + self.shared.timeout
            };
            tokio::time::sleep_until(wake).await;
        }
    }

    /// Runs `conn` until it ends, cancelling `stop` once idle. `conn` shuts itself down
    /// gracefully when `stop` is cancelled ([`crate::shutdown::Graceful`] on a child token of
    /// the drain token, so draining still reaches it). A client that does not finish the
    /// shutdown (hyper's h2 waits for the client to acknowledge a PING before its last GOAWAY)
    /// is dropped once idle for the timeout again: `None`. Nothing is lost then, since no
    /// request can start after the GOAWAY and none is in progress.
    /// (A named future rather than an `async fn`: the compiler cannot prove an `async fn`
    /// generic over hyper's connection `Send` for every lifetime.)
    pub fn close_when_idle<C: Future>(self, conn: C, stop: CancellationToken) -> CloseWhenIdle<C> {
        CloseWhenIdle {
            conn,
            idle: self.clone(),
            expired: Box::pin(async move { self.expired().await }),
            stop: Some(stop),
        }
    }
}

pin_project_lite::pin_project! {
    /// See [`Idle::close_when_idle`].
    pub struct CloseWhenIdle<C> {
        #[pin]
        conn: C,
        idle: Idle,
        expired: Pin<Box<dyn Future<Output = ()> + Send>>,
        // `Some` until the graceful shutdown was asked for.
        stop: Option<CancellationToken>,
    }
}

impl<C: Future> Future for CloseWhenIdle<C> {
    type Output = Option<C::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<C::Output>> {
        let mut this = self.project();
        if let Poll::Ready(out) = this.conn.as_mut().poll(cx) {
            return Poll::Ready(Some(out));
        }
        while this.expired.as_mut().poll(cx).is_ready() {
            let Some(stop) = this.stop.take() else {
                // Idle again after the GOAWAY: give up on the client.
                return Poll::Ready(None);
            };
            stop.cancel();
            // The connection starts its shutdown when polled; and the clock starts again.
            let idle = this.idle.clone();
            *this.expired = Box::pin(async move { idle.expired().await });
            if let Poll::Ready(out) = this.conn.as_mut().poll(cx) {
                return Poll::Ready(Some(out));
            }
        }
        Poll::Pending
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Plain bookkeeping: a panic elsewhere mid-update cannot leave it inconsistent.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A listener's open connections, at most `max`; see the module docs.
#[derive(Debug)]
pub struct Capped {
    max: usize,
    open: Mutex<Open>,
}

#[derive(Debug, Default)]
struct Open {
    next: u64,
    conns: HashMap<u64, (Idle, CancellationToken)>,
}

impl Open {
    fn evict_idlest(&mut self) -> bool {
        let idlest = self
            .conns
            .iter()
            .filter_map(|(id, (idle, _))| idle.idle_for().map(|d| (d, *id)))
            .max();
        let Some((_, id)) = idlest else {
            return false;
        };
        if let Some((_, closed)) = self.conns.remove(&id) {
            closed.cancel();
        }
        true
    }
}

/// What [`Capped::admit`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Below the cap.
    Room,
    /// At the cap: the connection idle longest was closed to make room.
    Evicted,
}

impl Capped {
    pub fn new(max: usize) -> Arc<Capped> {
        Arc::new(Capped {
            max,
            open: Mutex::new(Open::default()),
        })
    }

    /// Admits a new connection, making room if needed; `None` when at the cap with every
    /// connection busy. The connection must end when the slot's `closed` token (a child of
    /// `parent`) is cancelled, and hold the slot until it ends.
    pub fn admit(
        self: &Arc<Self>,
        idle_timeout: Duration,
        parent: &CancellationToken,
    ) -> Option<(Slot, Admission)> {
        let mut open = lock(&self.open);
        let mut admission = Admission::Room;
        if open.conns.len() >= self.max {
            if !open.evict_idlest() {
                return None;
            }
            admission = Admission::Evicted;
        }
        open.next += 1;
        let id = open.next;
        let idle = Idle::new(idle_timeout);
        let closed = parent.child_token();
        open.conns.insert(id, (idle.clone(), closed.clone()));
        Some((
            Slot {
                capped: self.clone(),
                id,
                idle,
                closed,
            },
            admission,
        ))
    }

    /// Closes the connection idle longest, to free its descriptor when they run out; false
    /// when every connection is busy.
    pub fn evict_idlest(&self) -> bool {
        lock(&self.open).evict_idlest()
    }

    /// Connections open now (tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        lock(&self.open).conns.len()
    }
}

/// One admitted connection's place under the cap; given back when dropped.
#[derive(Debug)]
pub struct Slot {
    capped: Arc<Capped>,
    id: u64,
    /// The connection's activity, which decides whether it may be evicted.
    pub idle: Idle,
    /// Cancelled when the connection is evicted (or its parent is).
    pub closed: CancellationToken,
}

impl Drop for Slot {
    fn drop(&mut self) {
        lock(&self.capped.open).conns.remove(&self.id);
    }
}

/// Held while a request is in progress.
#[derive(Debug)]
pub struct Busy {
    shared: Arc<Shared>,
}

impl Drop for Busy {
    fn drop(&mut self) {
        if self.shared.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            *lock(&self.shared.idle_since) = Instant::now();
        }
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its request busy until it is sent or dropped (a long
    /// gRPC stream is activity, not idleness).
    #[derive(Debug)]
    pub struct BusyBody<B> {
        #[pin]
        inner: B,
        busy: Option<Busy>,
    }
}

impl<B> BusyBody<B> {
    pub fn new(inner: B, busy: Busy) -> Self {
        BusyBody {
            inner,
            busy: Some(busy),
        }
    }
}

impl<B: Body> Body for BusyBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            this.busy.take();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn expires_only_after_a_quiet_timeout() {
        let idle = Idle::new(Duration::from_secs(10));
        let busy = idle.busy();
        let started = Instant::now();
        tokio::time::sleep(Duration::from_secs(25)).await;
        drop(busy);
        idle.expired().await;
        // Busy for 25 s, then quiet for the 10 s timeout.
        assert_eq!(started.elapsed(), Duration::from_secs(35));
    }

    #[tokio::test(start_paused = true)]
    async fn at_the_cap_the_idlest_makes_room_and_busy_ones_stay() {
        let capped = Capped::new(2);
        let t = Duration::from_secs(10);
        let agent = CancellationToken::new();
        let (old, _) = capped.admit(t, &agent).expect("room");
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (young, _) = capped.admit(t, &agent).expect("room");
        let busy_young = young.idle.busy();
        let (new, how) = capped.admit(t, &agent).expect("the old one makes room");
        assert_eq!(how, Admission::Evicted);
        assert!(old.closed.is_cancelled());
        assert!(!young.closed.is_cancelled());
        assert_eq!(capped.len(), 2);
        // Everyone busy: the next is refused.
        let _busy_new = new.idle.busy();
        assert!(capped.admit(t, &agent).is_none());
        // The evicted connection ending does not free someone else's slot.
        drop(old);
        assert_eq!(capped.len(), 2);
        drop(busy_young);
        assert!(capped.admit(t, &agent).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_keeps_its_request_busy_until_it_ends() {
        use http_body_util::{BodyExt, Full};
        let idle = Idle::new(Duration::from_secs(1));
        let body = BusyBody::new(
            Full::new(hyper::body::Bytes::from_static(b"x")),
            idle.busy(),
        );
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(idle.shared.active.load(Ordering::Acquire), 1);
        let bytes = body.collect().await.expect("collect").to_bytes();
        assert_eq!(&bytes[..], b"x");
        assert_eq!(idle.shared.active.load(Ordering::Acquire), 0);
    }
}
