//! The HTTP/2 connections the agent opens: to peer agents (over mTLS unless `tls.mode =
//! "disabled"`) and to this host's `grpc` apps (h2c). One per peer or app per data path worker,
//! opened by the first request that needs it and shared by every request of the worker's to
//! it, driven by a task on the worker.
//!
//! Why not hyper-util's pooled client, as before: for a multiplexed connection its pool is
//! bookkeeping per request (a checkout future, a `Pooled` guard and its return, a key built from
//! the URI, the client cloned), about a tenth of both agents' CPU on the two-host path. One
//! `SendRequest` per connection kept here is a map lookup and a clone.
//!
//! The pool's other duties are kept: one connection attempt at a time per authority (requests
//! that arrive meanwhile wait for it), a request that never went out because the connection had
//! just closed (a GOAWAY, a dead connection not yet noticed) goes once more on a new one, and a
//! connection no request used for `idle_timeout` is let go (its streams finish first).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::uri::Authority;
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::http2::{Builder, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::sync::OnceCell;
use tokio::time::Instant;

use crate::body::Lent;
use crate::connect::TimedConnector;
use hostmesh_tls::PeerConnector;

type Sender = SendRequest<Lent>;
/// One connection attempt's outcome, shared by the requests that waited for it.
type Attempt = Arc<OnceCell<Result<Sender, Arc<str>>>>;

/// How long a peer connection may take past its TCP connect (TLS and HTTP/2 handshakes) before
/// the attempt fails: as long as the peer gives a new connection to say something.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a request got no response.
#[derive(Debug, thiserror::Error)]
pub enum H2Error {
    /// No connection: nothing was sent.
    #[error("connecting: {0}")]
    Connect(Arc<str>),
    #[error("request has no authority")]
    NoAuthority,
    #[error(transparent)]
    Http(#[from] hyper::Error),
}

impl H2Error {
    /// Whether the other side provably never processed the request: no connection, or HTTP/2's
    /// REFUSED_STREAM (also what a GOAWAY means for streams above its last stream id).
    pub fn never_reached(&self) -> bool {
        match self {
            H2Error::Connect(_) | H2Error::NoAuthority => true,
            H2Error::Http(e) => refused_stream(e),
        }
    }

    /// Whether there was no connection to send it on.
    pub fn is_connect(&self) -> bool {
        matches!(self, H2Error::Connect(_))
    }
}

/// Whether `e` is, or was caused by, HTTP/2's REFUSED_STREAM (also what a GOAWAY means for
/// streams above its last stream id): the peer did not process the request at all.
pub fn refused_stream(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(h2) = err.downcast_ref::<h2::Error>()
            && h2.reason() == Some(h2::Reason::REFUSED_STREAM)
        {
            return true;
        }
        source = err.source();
    }
    false
}

struct Conn {
    attempt: Attempt,
    used: Instant,
}

/// One worker's connections, by the authority of the requests' URIs (a peer's `host@address`:
/// the TLS connector demands that host's certificate; an app's `address`).
#[derive(Clone)]
pub struct H2Client {
    connector: PeerConnector<TimedConnector>,
    idle_timeout: Duration,
    conns: Arc<Mutex<Conns>>,
}

#[derive(Default)]
struct Conns {
    by_authority: HashMap<Authority, Conn>,
    /// A task lets idle connections go while there are any (see [`H2Client::sweep`]).
    swept: bool,
}

impl std::fmt::Debug for H2Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H2Client")
            .field("idle_timeout", &self.idle_timeout)
            .finish_non_exhaustive()
    }
}

impl H2Client {
    /// With TLS disabled in `connector`, plain h2c (this host's apps).
    pub fn new(connector: PeerConnector<TimedConnector>, idle_timeout: Duration) -> Self {
        H2Client {
            connector,
            idle_timeout,
            conns: Arc::default(),
        }
    }

    /// Sends `req` (an absolute URI naming the peer or app) on its connection, opening it first
    /// if there is none.
    pub async fn request(&self, req: Request<Lent>) -> Result<Response<Incoming>, H2Error> {
        let uri = req.uri().clone();
        let key = uri.authority().cloned().ok_or(H2Error::NoAuthority)?;
        let mut send = self.sender(&key, &uri).await?;
        let mut refused = match send.try_send_request(req).await {
            Ok(resp) => return Ok(resp),
            Err(e) => e,
        };
        let Some(req) = refused.take_message() else {
            return Err(refused.into_error().into());
        };
        // The connection closed before the request went out: once more, on a new connection
        // (`sender` passes over a closed one).
        tracing::debug!(to = %key, "HTTP/2 connection closed under a request; reconnecting");
        let mut send = self.sender(&key, &uri).await?;
        Ok(send.send_request(req).await?)
    }

    /// The open connection to `key`, or the one being opened, or a new one.
    async fn sender(&self, key: &Authority, uri: &Uri) -> Result<Sender, H2Error> {
        let (attempt, sweep) = {
            let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let usable = |a: &Attempt| match a.get() {
                Some(Ok(send)) => !send.is_closed(),
                Some(Err(_)) => false,
                None => true,
            };
            let attempt = match conns.by_authority.get_mut(key) {
                Some(conn) if usable(&conn.attempt) => {
                    conn.used = now;
                    if let Some(Ok(send)) = conn.attempt.get() {
                        return Ok(send.clone());
                    }
                    conn.attempt.clone()
                }
                _ => {
                    let attempt = Attempt::default();
                    let conn = Conn {
                        attempt: attempt.clone(),
                        used: now,
                    };
                    conns.by_authority.insert(key.clone(), conn);
                    attempt
                }
            };
            (attempt, !std::mem::replace(&mut conns.swept, true))
        };
        if sweep {
            tokio::spawn(self.clone().sweep());
        }
        let connect = || self.connect(uri.clone());
        match attempt.get_or_init(connect).await {
            Ok(send) => Ok(send.clone()),
            Err(e) => Err(H2Error::Connect(e.clone())),
        }
    }

    /// Opens a connection to what `uri` names and starts its task on this thread's runtime.
    async fn connect(&self, uri: Uri) -> Result<Sender, Arc<str>> {
        let mut connector = self.connector.clone();
        let opened = async {
            let io = tower_service::Service::call(&mut connector, uri)
                .await
                .map_err(|e| Arc::<str>::from(e.to_string()))?;
            let mut builder = Builder::new(TokioExecutor::new());
            builder
                .timer(TokioTimer::new())
                // Find a dead peer in seconds rather than at the next request's timeout.
                .keep_alive_interval(Duration::from_secs(10))
                .keep_alive_timeout(Duration::from_secs(5))
                .keep_alive_while_idle(false);
            crate::h2_limits::client(&mut builder);
            builder
                .handshake(io)
                .await
                .map_err(|e| Arc::<str>::from(format!("HTTP/2 handshake: {e}")))
        };
        let (send, conn) = tokio::time::timeout(HANDSHAKE_TIMEOUT, opened)
            .await
            .map_err(|_| Arc::<str>::from("handshake timed out"))??;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("HTTP/2 connection ended: {e}");
            }
        });
        Ok(send)
    }

    /// Lets go of connections no request used for `idle_timeout` until there are none.
    async fn sweep(self) {
        let idle_timeout = self.idle_timeout;
        crate::sweep::until_empty(idle_timeout, || {
            let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            conns
                .by_authority
                .retain(|_, p| now.duration_since(p.used) < idle_timeout);
            let empty = conns.by_authority.is_empty();
            conns.swept = !empty;
            empty
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::convert::Infallible;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::{BodyExt, Empty};
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use tokio::net::TcpListener;
    use tokio::task::JoinSet;

    use super::*;
    use crate::pool::WorkerPools;
    use hostmesh_tls::PeerTls;

    /// A peer answering every request 200 over h2c; the count of connections it accepted, and
    /// a way to cut them all.
    async fn peer() -> (String, Arc<AtomicUsize>, Arc<Mutex<JoinSet<()>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let conns = Arc::new(Mutex::new(JoinSet::new()));
        let (count, set) = (accepted.clone(), conns.clone());
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let svc = service_fn(|_req| async {
                    Ok::<_, Infallible>(Response::new(http_body_util::Full::new(
                        bytes::Bytes::from_static(b"ok"),
                    )))
                });
                let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc);
                set.lock().unwrap().spawn(async move {
                    let _ = conn.await;
                });
            }
        });
        (format!("http://peer-b@{addr}/x"), accepted, conns)
    }

    fn client() -> H2Client {
        let pools = WorkerPools::new(
            1,
            Duration::from_secs(1),
            Duration::from_secs(30),
            PeerTls::disabled(),
        );
        pools.get().peers.clone()
    }

    fn get(uri: &str) -> Request<Lent> {
        let empty = Empty::new().map_err(|never| match never {});
        let mut req = Request::new(crate::body::lend(crate::body::boxed(empty)).0);
        *req.uri_mut() = uri.parse().unwrap();
        req
    }

    fn open(client: &H2Client) -> usize {
        let conns = client.conns.lock().unwrap();
        conns
            .by_authority
            .values()
            .filter(|p| matches!(p.attempt.get(), Some(Ok(s)) if !s.is_closed()))
            .count()
    }

    #[tokio::test]
    async fn requests_share_one_connection_and_a_closed_one_is_replaced() {
        let (uri, accepted, conns) = peer().await;
        let client = client();
        let mut calls = JoinSet::new();
        for _ in 0..20 {
            let (client, req) = (client.clone(), get(&uri));
            calls.spawn(async move { client.request(req).await.map(|r| r.status()) });
        }
        while let Some(status) = calls.join_next().await {
            assert_eq!(status.unwrap().unwrap(), 200);
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "one connection for all");

        conns.lock().unwrap().abort_all();
        tokio::time::timeout(Duration::from_secs(5), async {
            while open(&client) > 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the client saw its connection close");
        let resp = client.request(get(&uri)).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(accepted.load(Ordering::SeqCst), 2, "a new connection");
    }

    #[tokio::test]
    async fn a_peer_that_is_not_there_never_saw_the_request() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let err = client()
            .request(get(&format!("http://peer-b@{addr}/x")))
            .await
            .unwrap_err();
        assert!(err.never_reached(), "{err}");
    }
}
