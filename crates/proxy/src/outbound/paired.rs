//! Upstream HTTP/1.1 connections owned by one app connection, for same-host `http` instances.
//!
//! An app's HTTP/1 connection sends one request at a time, so it needs at most one upstream
//! connection per instance it is balanced to. Holding those here, instead of checking them out of
//! a shared pool, saves the pool's lock and bookkeeping; and driving them from the app
//! connection's own task (see [`Paired::drive`]) saves the hand-off to a separate connection task
//! and back for every request, which on two cores was the largest single cost of the proxy. The
//! upstream connections close with the app connection.
//!
//! HTTP/2 app connections serve each stream on a task of its own, so they keep using the shared
//! pool: a connection driven from the app connection's task would not be polled while a stream
//! task waits on it.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::time::Instant;

use crate::body::Lent;
use crate::connect::{ConnectError, connect};

/// At most this many upstream connections per app connection (an app connection balanced over
/// more same-host instances than this reconnects more often; nothing else changes). The lean
/// HTTP/1 path (`h1`) keeps as many.
pub(super) const MAX_UPSTREAMS: usize = 4;

type Driver = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Why a paired send failed.
#[derive(Debug, thiserror::Error)]
pub enum PairedError {
    /// No connection: the request never left this host.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The connection failed with the request (maybe) on it.
    #[error(transparent)]
    Http(#[from] hyper::Error),
}

impl PairedError {
    /// Whether the request provably never reached the app.
    pub fn never_reached(&self) -> bool {
        match self {
            PairedError::Connect(_) => true,
            // hyper hands the request back when it could not start writing it; such an error
            // is not surfaced here (the request is resent), so anything else may have reached.
            PairedError::Http(_) => false,
        }
    }
}

/// The upstream connections of one app connection.
#[derive(Default)]
pub struct Paired {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Idle senders by target, oldest first.
    idle: Vec<(SocketAddr, http1::SendRequest<Lent>)>,
    /// The connections' own futures, polled by [`Paired::drive`].
    drivers: Vec<Driver>,
}

impl std::fmt::Debug for Paired {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.lock();
        f.debug_struct("Paired")
            .field("idle", &inner.idle.len())
            .field("drivers", &inner.drivers.len())
            .finish()
    }
}

impl Paired {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `main` (the app connection) and, on the same task, every upstream connection it
    /// opened, until `main` ends. The upstream connections are dropped (closed) with it.
    pub fn drive<F: Future>(&self, main: F) -> Drive<'_, F> {
        Drive { paired: self, main }
    }

    fn poll_drivers(&self, cx: &mut Context<'_>) {
        let mut inner = self.lock();
        inner
            .drivers
            .retain_mut(|d| d.as_mut().poll(cx).is_pending());
    }

    /// Sends `req` (origin-form URI, Host set) to `target` on an idle connection of this app
    /// connection, or a new one. Returns the response and, when a new connection was made, when
    /// it was ready (connection setup is not the instance's latency).
    pub async fn send(
        &self,
        target: SocketAddr,
        mut req: Request<Lent>,
        connect_timeout: Duration,
    ) -> Result<(Response<Incoming>, Option<Instant>), PairedError> {
        loop {
            let (mut sender, fresh) = match self.take_idle(target) {
                Some(s) => (s, None),
                None => (
                    self.connect(target, connect_timeout).await?,
                    Some(Instant::now()),
                ),
            };
            match sender.try_send_request(req).await {
                Ok(resp) => {
                    self.put_idle(target, sender);
                    return Ok((resp, fresh));
                }
                Err(mut e) => match e.take_message() {
                    // A kept connection that closed before the request went out: nothing was
                    // written, so send it on a new one.
                    Some(back) if fresh.is_none() => req = back,
                    _ => return Err(PairedError::Http(e.into_error())),
                },
            }
        }
    }

    fn take_idle(&self, target: SocketAddr) -> Option<http1::SendRequest<Lent>> {
        let mut inner = self.lock();
        inner.idle.retain(|(_, s)| !s.is_closed());
        let at = inner
            .idle
            .iter()
            .position(|(t, s)| *t == target && s.is_ready())?;
        Some(inner.idle.remove(at).1)
    }

    fn put_idle(&self, target: SocketAddr, sender: http1::SendRequest<Lent>) {
        let mut inner = self.lock();
        if inner.idle.len() >= MAX_UPSTREAMS {
            // Dropping the sender closes that connection once its response is done.
            inner.idle.remove(0);
        }
        inner.idle.push((target, sender));
    }

    async fn connect(
        &self,
        target: SocketAddr,
        timeout: Duration,
    ) -> Result<http1::SendRequest<Lent>, PairedError> {
        let stream = connect(target, timeout).await?;
        // The handshake only sets up hyper's state; it does no I/O and cannot fail here.
        let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
        self.lock().drivers.push(Box::pin(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%target, "upstream connection ended: {e}");
            }
        }));
        Ok(sender)
    }
}

pin_project_lite::pin_project! {
    /// The future of [`Paired::drive`]. A named type rather than an `async fn`: hyper's
    /// connection futures inside a generic `async fn` trip a rustc limitation on higher-ranked
    /// lifetimes when the result must be `Send`.
    #[derive(Debug)]
    pub struct Drive<'a, F> {
        paired: &'a Paired,
        #[pin]
        main: F,
    }
}

impl<F: Future> Future for Drive<'_, F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        // Upstream first (a response that just arrived reaches the waiting request in this same
        // poll), then the app side, then upstream again (a request just handed over is written
        // now rather than after another wake-up).
        this.paired.poll_drivers(cx);
        let out = this.main.poll(cx);
        if out.is_pending() {
            this.paired.poll_drivers(cx);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use crate::body;

    fn get(path: &str) -> Request<Lent> {
        let (lent, _) = body::lend(body::boxed(
            Full::new(Bytes::new()).map_err(|never| match never {}),
        ));
        Request::builder()
            .uri(path)
            .header("host", "app")
            .body(lent)
            .expect("valid request")
    }

    /// An app that answers every request on a connection with its connection number, and
    /// closes each connection after `per_conn` requests.
    /// Reads only request heads: the tests send no bodies.
    async fn app(per_conn: usize) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let mut n = 0;
            loop {
                let (mut s, _) = listener.accept().await.expect("accept");
                n += 1;
                let conn = n;
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    for i in 1..=per_conn {
                        let mut got = 0;
                        while !buf[..got].windows(4).any(|w| w == b"\r\n\r\n") {
                            match s.read(&mut buf[got..]).await {
                                Ok(0) | Err(_) => return,
                                Ok(k) => got += k,
                            }
                        }
                        let body = conn.to_string();
                        // Like nginx after `keepalive_requests`: say so on the last response.
                        let close = if i == per_conn {
                            "connection: close\r\n"
                        } else {
                            ""
                        };
                        let resp = format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n{close}\r\n{body}",
                            body.len()
                        );
                        if s.write_all(resp.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    async fn text(resp: Response<Incoming>) -> String {
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        String::from_utf8(bytes.to_vec()).expect("utf-8")
    }

    #[tokio::test]
    async fn reuses_one_connection_and_replaces_a_closed_one() {
        let addr = app(2).await;
        let paired = Paired::default();
        let mut conns = Vec::new();
        paired
            .drive(async {
                for _ in 0..5 {
                    let (resp, _) = paired
                        .send(addr, get("/"), Duration::from_secs(1))
                        .await
                        .expect("send");
                    conns.push(text(resp).await);
                }
            })
            .await;
        // Two requests per connection, then the app closes it and a new one takes over.
        assert_eq!(conns, ["1", "1", "2", "2", "3"]);
    }

    #[tokio::test]
    async fn a_refused_connect_never_reached() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        let paired = Paired::default();
        let err = paired
            .drive(paired.send(addr, get("/"), Duration::from_secs(1)))
            .await
            .expect_err("nothing listens");
        assert!(err.never_reached(), "{err}");
    }
}
