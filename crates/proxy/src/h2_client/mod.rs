//! The HTTP/2 connections the agent opens: to peer agents (over mTLS unless `tls.mode =
//! "disabled"`) and to this host's `grpc` apps (h2c). One per peer or app per data path worker,
//! opened by the first request that needs it and shared by every request of the worker's to
//! it, driven by a task on the worker.
//!
//! Why not hyper-util's pooled client, as before: for a multiplexed connection its pool is
//! bookkeeping per request (a checkout future, a `Pooled` guard and its return, a key built from
//! the URI, the client cloned), about a tenth of both agents' CPU on the two-host path.
//!
//! Why the h2 crate directly rather than hyper's HTTP/2 client over it: hyper hands every request
//! to the connection's task through a channel, spawns a task per request that waits for its
//! response and passes it back through another channel, and (for a body) a third that pipes it.
//! Here the request's own task opens the stream and waits for the response head, and only a body
//! that does not go out at once gets a task ([`Pipe`]).
//!
//! The pool's other duties are kept: one connection attempt at a time per authority (requests
//! that arrive meanwhile wait for it), a request that never went out because the connection had
//! just closed (a GOAWAY, a dead connection not yet noticed) goes once more on a new one, a
//! connection no request used for `idle_timeout` is let go (its streams finish first), and one
//! with open streams whose peer stops answering pings is given up.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use h2::client::SendRequest;
use http::header::CONTENT_LENGTH;
use http::uri::Authority;
use http::{HeaderValue, Method, Request, Response, Uri};
use hyper::body::Body as _;
use tokio::sync::{OnceCell, oneshot};
use tokio::time::Instant;

use crate::body::Lent;
use crate::connect::TimedConnector;
use hostmesh_tls::PeerConnector;
use hostmesh_wire::headers;

use crate::h2_stream::{self, Pipe};

/// A response body from a peer or a `grpc` app; its stream counts as open on its connection
/// until the body ends or is dropped.
pub type RecvBody = h2_stream::RecvBody<OpenStream>;

/// One connection attempt's outcome, shared by the requests that waited for it.
type Attempt = Arc<OnceCell<Result<Sender, Arc<str>>>>;

/// How long a peer connection may take past its TCP connect (TLS and HTTP/2 handshakes) before
/// the attempt fails: as long as the peer gives a new connection to say something.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// While streams are open, a ping every `interval`, and the connection is given up if the
/// answer takes longer than `timeout`: a dead peer is found in seconds rather than at each
/// request's deadline. An idle connection is not pinged (gRPC servers count pings on a
/// connection without streams as abuse).
#[derive(Debug, Clone, Copy)]
struct Pings {
    interval: Duration,
    timeout: Duration,
}

const PINGS: Pings = Pings {
    interval: Duration::from_secs(10),
    timeout: Duration::from_secs(5),
};

/// Why a request got no response.
#[derive(Debug, thiserror::Error)]
pub enum H2Error {
    /// No connection: nothing was sent.
    #[error("connecting: {0}")]
    Connect(Arc<str>),
    #[error("request has no authority")]
    NoAuthority,
    /// The connection would not open a stream for it (it was closing, or the head cannot go in
    /// HTTP/2): nothing was sent.
    #[error("not sent: {0}")]
    NotSent(h2::Error),
    /// The stream failed once the request was on it.
    #[error(transparent)]
    Stream(h2::Error),
}

impl H2Error {
    /// Whether the other side provably never processed the request: not sent, or HTTP/2's
    /// REFUSED_STREAM.
    pub fn never_reached(&self) -> bool {
        match self {
            H2Error::Connect(_) | H2Error::NoAuthority | H2Error::NotSent(_) => true,
            H2Error::Stream(e) => refused_stream(e),
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

/// Counts a stream as open on its connection until dropped (the keep-alive pings only while
/// some are).
#[derive(Debug)]
pub struct OpenStream(Arc<ConnState>);

impl OpenStream {
    fn new(conn: &Arc<ConnState>) -> OpenStream {
        conn.open.fetch_add(1, Ordering::Relaxed);
        OpenStream(conn.clone())
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What a connection's task and its requests share.
#[derive(Debug, Default)]
struct ConnState {
    /// The connection ended, or would open no more streams: the next request opens another.
    closed: AtomicBool,
    /// Streams whose response has not ended, or whose request body is still going out.
    open: AtomicUsize,
}

/// An open connection: the handle streams are opened with, and its shared state.
#[derive(Clone)]
struct Sender {
    send: SendRequest<Bytes>,
    state: Arc<ConnState>,
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
    pings: Pings,
    conns: Arc<Mutex<Conns>>,
}

#[derive(Default)]
struct Conns {
    /// By the authority as the agent writes it, not `Authority` (whose hash lowercases and
    /// hashes it a byte at a time: a thousand instructions per request, per callgrind).
    /// foldhash: the authorities are the agent's own (peers and apps), not chosen by a caller.
    by_authority: foldhash::HashMap<Box<str>, Conn>,
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
            pings: PINGS,
            conns: Arc::default(),
        }
    }

    /// Sends `req` (an absolute URI naming the peer or app) on its connection, opening it first
    /// if there is none, and returns the response head once it comes. The request body goes out
    /// meanwhile, and after it if the response comes first.
    pub async fn request(&self, req: Request<Lent>) -> Result<Response<RecvBody>, H2Error> {
        let (mut head, body) = req.into_parts();
        let key = head.uri.authority().cloned().ok_or(H2Error::NoAuthority)?;
        prepare(&mut head, &body);
        let end = body.is_end_stream();
        let (mut send, state) = self.ready(&key, &head.uri).await?;
        let (response, stream) = send
            .send_request(Request::from_parts(head, ()), end)
            .map_err(H2Error::NotSent)?;
        let cancel = if end {
            None
        } else {
            pipe(body, stream, &state).await
        };
        let open = OpenStream::new(&state);
        let resp = response.await.map_err(H2Error::Stream)?;
        if let Some(mut cancel) = cancel {
            // The response came: the body goes on.
            cancel.0.take();
        }
        let (head, recv) = resp.into_parts();
        let body = RecvBody::new(recv, &head.headers, open);
        Ok(Response::from_parts(head, body))
    }

    /// A handle to `key`'s connection that may open a stream now (it waits while the connection
    /// has as many open as the other side allows).
    async fn ready(
        &self,
        key: &Authority,
        uri: &Uri,
    ) -> Result<(SendRequest<Bytes>, Arc<ConnState>), H2Error> {
        let sender = self.sender(key, uri).await?;
        match sender.send.ready().await {
            Ok(send) => Ok((send, sender.state)),
            Err(e) => {
                // The connection closed, or is closing (a GOAWAY), before the request went out:
                // once more, on a new connection.
                tracing::debug!(to = %key, "HTTP/2 connection closed under a request ({e}); reconnecting");
                sender.state.closed.store(true, Ordering::Relaxed);
                let sender = self.sender(key, uri).await?;
                let send = sender.send.ready().await.map_err(H2Error::NotSent)?;
                Ok((send, sender.state))
            }
        }
    }

    /// The open connection to `key`, or the one being opened, or a new one.
    async fn sender(&self, key: &Authority, uri: &Uri) -> Result<Sender, H2Error> {
        let (attempt, sweep) = {
            let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let usable = |a: &Attempt| match a.get() {
                Some(Ok(send)) => !send.state.closed.load(Ordering::Relaxed),
                Some(Err(_)) => false,
                None => true,
            };
            let attempt = match conns.by_authority.get_mut(key.as_str()) {
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
                    conns.by_authority.insert(key.as_str().into(), conn);
                    attempt
                }
            };
            (attempt, !std::mem::replace(&mut conns.swept, true))
        };
        if sweep {
            tokio::spawn(self.clone().sweep());
        }
        // Boxed: opening a connection (TLS, the HTTP/2 handshake) is a large future that every
        // request's future would otherwise carry and move, for the rare one that connects.
        let connect = || Box::pin(self.connect(uri.clone()));
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
            crate::h2_limits::client()
                .handshake::<_, Bytes>(io.into_inner())
                .await
                .map_err(|e| Arc::<str>::from(format!("HTTP/2 handshake: {e}")))
        };
        let (send, mut conn) = tokio::time::timeout(HANDSHAKE_TIMEOUT, opened)
            .await
            .map_err(|_| Arc::<str>::from("handshake timed out"))??;
        let state = Arc::new(ConnState::default());
        let pings = conn.ping_pong();
        let task_state = state.clone();
        let every = self.pings;
        tokio::spawn(async move {
            let watch = async {
                match pings {
                    Some(pings) => keep_alive(pings, every, &task_state).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                ended = conn => if let Err(e) = ended {
                    tracing::debug!("HTTP/2 connection ended: {e}");
                },
                () = watch => {}
            }
            task_state.closed.store(true, Ordering::Relaxed);
        });
        Ok(Sender { send, state })
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

/// Starts sending `body` on `stream`. Most bodies go out at once; one that has to wait (for the
/// client, or for the other side's window) goes on on a task of its own, and the guard returned
/// resets the stream if it is dropped before the response came (the request was given up).
async fn pipe(
    body: Lent,
    stream: h2::SendStream<Bytes>,
    state: &Arc<ConnState>,
) -> Option<CancelOnDrop> {
    let mut pipe = Pipe::new(body, stream, OpenStream::new(state));
    let done =
        std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut pipe).poll(cx).is_ready())).await;
    if done {
        return None;
    }
    let (cancel, cancelled) = oneshot::channel();
    tokio::spawn(pipe.cancelled_by(cancelled));
    Some(CancelOnDrop(Some(cancel)))
}

/// Resets a request body's stream (see [`Pipe`]) when dropped still armed.
struct CancelOnDrop(Option<oneshot::Sender<()>>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(cancel) = self.0.take() {
            let _ = cancel.send(());
        }
    }
}

/// What HTTP/2 requires of a request head that HTTP/1 allowed: no connection-specific fields
/// (h2 refuses to send them), and a body's known length stated, as hyper's client did (an empty
/// body's only for methods whose requests have defined body semantics).
fn prepare(head: &mut http::request::Parts, body: &Lent) {
    headers::strip_hop_by_hop(&mut head.headers);
    let no_body_semantics = matches!(
        head.method,
        Method::GET | Method::HEAD | Method::DELETE | Method::CONNECT
    );
    if let Some(len) = body.size_hint().exact()
        && (len != 0 || !no_body_semantics)
        && !head.headers.contains_key(CONTENT_LENGTH)
    {
        head.headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
    }
}

/// Pings while streams are open; returns when the connection ended or a ping went unanswered
/// in time (the caller then drops the connection, failing its streams).
async fn keep_alive(mut pings: h2::PingPong, every: Pings, state: &ConnState) {
    loop {
        tokio::time::sleep(every.interval).await;
        if state.open.load(Ordering::Relaxed) == 0 {
            continue;
        }
        match tokio::time::timeout(every.timeout, pings.ping(h2::Ping::opaque())).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => return,
            Err(_) => {
                tracing::info!(
                    "HTTP/2 peer did not answer a ping within {:?}; closing the connection",
                    every.timeout
                );
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests;
