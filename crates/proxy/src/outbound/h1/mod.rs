//! The lean HTTP/1 path: an app's HTTP/1.1 connection to an `http` service, proxied without
//! hyper's server. Request and response heads are parsed in place (httparse), rewritten once
//! into what goes out, and bodies are relayed as they came. A same-host instance gets the bytes
//! over upstream connections that belong to the app connection and run on its task; an instance
//! on another host gets an HTTP/2 request on the worker's peer connection (`peer`), whose answer
//! is written back as HTTP/1.1. Which instance, how often, and within which deadline is decided
//! by the same code as on hyper's path ([`Decision`], [`attempts::run`]).
//!
//! Why a path of its own: an app calling a service beside it on its host is the cheapest request
//! the mesh carries, and there the proxy's own cost is all there is. With two full hyper
//! dispatchers per request (server and client) the agent spent about twice HAProxy's user-space
//! CPU on it. See docs/ARCHITECTURE.md ("Data path", the lean HTTP/1 path) for the figures.
//!
//! The path takes only requests it can pass on exactly; anything else (another HTTP version, a
//! chunked, streamed or `Expect` request body, an upgrade, an absolute URI, anything malformed or
//! over a limit, a field a peer's HTTP/2 request cannot carry) is handed, before a byte of it is
//! consumed, to hyper's path, which serves the connection from then on.

pub(crate) mod fields;
mod peer;
pub(crate) mod request;
pub(crate) mod response;
pub(crate) mod timer;
pub(crate) mod upstream;

use std::io;
use std::net::SocketAddrV4;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use http::{Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

use hostmesh_config::spec::Protocol;

use super::access;
use super::attempts::{self, Exchange, Last, Refused, Timer};
use super::decision::Decision;
use super::retry::Failure;
use super::route::{Endpoint, Route};
use super::strict_h1::ChunkedBody;
use super::{Outbound, Settings};
use crate::body;
use crate::http_errors::{self, Reason};
use crate::trace::{Hop, Kind, TRACEPARENT};
use hostmesh_wire::headers::HeaderLookup;
use http_body_util::{BodyExt, Full};
use request::{Parsed, Request, TraceHeaders};
use response::{Framing, Response};
use timer::LazyTimer;
use upstream::{Idle, Upstream, UpstreamError};

/// How an app connection left the lean path.
#[derive(Debug)]
pub enum Ended {
    /// Served to its end.
    Done,
    /// The next request is hyper's: these bytes (that request onwards), then the stream.
    Handover(BytesMut, TcpStream),
}

/// Room read at once from an app connection.
const READ_CHUNK: usize = 8 * 1024;

/// Serves an HTTP/1 app connection to `dst` whose first bytes are `first`.
pub async fn serve(ctx: Arc<Outbound>, app: TcpStream, first: &[u8], dst: SocketAddrV4) -> Ended {
    let settings_timeout = ctx.settings.header_read_timeout;
    let mut buf = BytesMut::with_capacity(READ_CHUNK.max(first.len()));
    buf.extend_from_slice(first);
    let client = if ctx.access_log.is_on() {
        app.peer_addr().ok()
    } else {
        None
    };
    let mut conn = Conn {
        late: ctx.draining.is_cancelled(),
        client,
        ctx,
        dst,
        app,
        buf,
        out: Vec::with_capacity(1024),
        idle: Idle::default(),
        timer: LazyTimer::new(Instant::now() + settings_timeout),
        pipelined: false,
    };
    match conn.run().await {
        Ok(None) => Ended::Done,
        Ok(Some(())) => Ended::Handover(conn.buf, conn.app),
        Err(e) => {
            tracing::debug!(dst = %conn.dst, "outbound connection ended: {e}");
            Ended::Done
        }
    }
}

struct Conn {
    ctx: Arc<Outbound>,
    dst: SocketAddrV4,
    app: TcpStream,
    /// The app's bytes not yet consumed: the request being served, then any pipelined after it.
    buf: BytesMut,
    /// What is written next (a head with what follows it).
    out: Vec<u8>,
    idle: Idle,
    /// Every deadline's timer: the request head's, then the attempts'.
    timer: LazyTimer,
    /// Accepted while the agent drains: one request, then close.
    late: bool,
    /// The app's socket, for access log lines (`None` while they are off).
    client: Option<std::net::SocketAddr>,
    /// A request came with the one before it: the end of the client's stream is no sign it left.
    pipelined: bool,
}

impl Conn {
    /// Serves requests until the connection ends (`None`) or one must go to hyper's path.
    async fn run(&mut self) -> io::Result<Option<()>> {
        let settings = self.ctx.settings.clone();
        let mut draining = pin!(self.ctx.draining.clone().cancelled_owned());
        let mut head_deadline = Instant::now() + settings.header_read_timeout;
        loop {
            let req = loop {
                if !self.buf.is_empty() {
                    match Request::parse(&self.buf, settings.max_headers, settings.max_header_bytes)
                    {
                        Parsed::Lean(r) => break r,
                        Parsed::Handover => return Ok(Some(())),
                        Parsed::Partial => {}
                    }
                }
                tokio::select! {
                    biased;
                    n = read_more(&mut self.app, &mut self.buf) => {
                        if n? == 0 {
                            return Ok(None);
                        }
                    }
                    () = &mut draining, if self.buf.is_empty() && !self.late => return Ok(None),
                    () = self.timer.passed(head_deadline) => {
                        tracing::debug!(dst = %self.dst, "request head timed out");
                        return Ok(None);
                    }
                }
            };
            let Some(route) = self.ctx.routes.load().get(self.dst) else {
                // The service went away: as on hyper's path, it has no endpoints.
                self.answer(Reason::NoEndpoints, true).await?;
                return Ok(None);
            };
            if route.protocol != Protocol::Http {
                return Ok(Some(()));
            }
            // A route with instances elsewhere: the request as peers get it, made now so that one
            // that cannot be made goes to hyper's path before a byte of it is consumed.
            let peer_head = if route.endpoints.iter().any(|e| !e.local) {
                match peer::parts(&req, &self.buf) {
                    Some(head) => Some(head),
                    None => return Ok(Some(())),
                }
            } else {
                None
            };
            let close = self.serve(&route, req, peer_head, &settings).await?;
            if close || self.late || self.ctx.draining.is_cancelled() {
                let _ = self.app.shutdown().await;
                return Ok(None);
            }
            head_deadline = Instant::now() + settings.header_read_timeout;
        }
    }

    /// Serves one request to `route`; returns whether the connection must close after it.
    async fn serve(
        &mut self,
        route: &Route,
        req: Request,
        peer_head: Option<http::request::Parts>,
        settings: &Settings,
    ) -> io::Result<bool> {
        let started = Instant::now();
        let ctx = self.ctx.clone();
        let decision = Decision::new(
            route,
            req.path(&self.buf),
            &req.lookup(&self.buf),
            settings.request_timeout,
        );
        let deadline = started + decision.deadline.after;
        if self.buf.len() < req.len() {
            let (app, buf) = (&mut self.app, &mut self.buf);
            let body = self
                .timer
                .within(deadline, async {
                    while buf.len() < req.len() {
                        if read_more(app, buf).await? == 0 {
                            return Err(io::ErrorKind::UnexpectedEof.into());
                        }
                    }
                    Ok::<_, io::Error>(())
                })
                .await;
            match body {
                Ok(Ok(())) => {}
                // The client went away mid-body: nobody to answer.
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    self.answer(Reason::DeadlineExceeded, true).await?;
                    return Ok(true);
                }
            }
        }
        let hop = ctx.tracer.begin(
            req.lookup(&self.buf).first_str(TRACEPARENT),
            Kind::Client,
            &route.service,
            req.method.as_str(),
        );
        let entry = ctx.access_log.is_on().then(|| {
            let traceparent = match &hop {
                Some(h) => Some(h.traceparent()),
                None => (req.lookup(&self.buf).first_str(TRACEPARENT)).map(str::to_owned),
            };
            access::begin(
                &ctx,
                route,
                self.client,
                req.method.as_str(),
                req.path(&self.buf),
                traceparent.as_deref(),
            )
        });
        let safe = req.is_safe(&self.buf);
        let mut exchange = Lean {
            req: &req,
            buf: &self.buf,
            out: &mut self.out,
            idle: &mut self.idle,
            peer_request: peer_head.map(|mut head| {
                if let Some(h) = &hop {
                    h.write_headers(&mut head.headers);
                }
                let body = bytes::Bytes::copy_from_slice(&self.buf[req.head_len..req.len()]);
                (head, body)
            }),
            hop: hop.as_ref(),
            peer_fields_taken: false,
            traceparent: hop.as_ref().map(|h| {
                let mode = if h.continues() {
                    TraceHeaders::Replace
                } else {
                    TraceHeaders::ReplaceBoth
                };
                (format!("{TRACEPARENT}: {}\r\n", h.traceparent()), mode)
            }),
            max_head: settings.max_header_bytes,
            connect_timeout: settings.connect_timeout,
            safe,
        };
        let mut tally = attempts::Tally::default();
        // A client that leaves before its answer takes the request with it, as hyper's server
        // and nginx do: the attempt is dropped, which resets a peer's stream (its agent drops
        // the app's request) or closes a same-host app's connection. `None` then. Not watched
        // on a connection that pipelines (a request came with the one before it): such a client
        // may send them all and shut its sending side, and it waits for every answer still.
        self.pipelined |= self.buf.len() > req.len();
        let watch = !self.pipelined;
        let outcome = {
            let run = pin!(attempts::run(
                &ctx,
                route,
                &decision,
                deadline,
                safe,
                &mut exchange,
                &mut self.timer,
                &mut tally,
            ));
            unless_client_leaves(&self.app, watch, run).await
        };
        let status = match &outcome {
            Some(Ok(a) | Err(Last::Response(a))) => Lean::status(a),
            Some(Err(Last::Reason(r))) => r.status(),
            None => http_errors::CLIENT_CLOSED,
        };
        if let Some(hop) = hop {
            hop.finish(status.as_u16());
        }
        // Looked for only in answers other than 200, which an agent may have made.
        let error = match &outcome {
            _ if status == StatusCode::OK => None,
            Some(Err(Last::Reason(r))) => Some(r.as_str()),
            Some(Ok(Answer::Peer(resp)) | Err(Last::Response(Answer::Peer(resp)))) => {
                http_errors::reason_of(resp)
            }
            _ => None,
        };
        ctx.metrics.request_via(
            &route.metrics,
            &route.service,
            "outbound",
            (status.as_u16(), error),
            started.elapsed(),
        );
        self.buf.advance(req.len());
        // Decided as the response head goes out, so that a drain that began while the app
        // worked is in it too: the head says the connection closes, as hyper's does, and the
        // client sends nothing more on it.
        let mut close = req.close || self.late || ctx.draining.is_cancelled();
        let mut entry = entry.map(|mut e| {
            access::settle(
                &mut e,
                route,
                &tally,
                status.as_u16(),
                error,
                started.elapsed(),
            );
            e.bytes_in = req.body_len as u64;
            e
        });
        let mut sent = 0;
        let relayed = match outcome {
            None => Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the client left before its answer",
            )),
            Some(Ok(Answer::App(mut answer)) | Err(Last::Response(Answer::App(mut answer)))) => {
                close |= answer.head.framing == Framing::UntilClose;
                let relayed = relay(&mut self.app, &mut answer, close, &mut self.out, &mut sent);
                relayed.await.map(|reusable| {
                    if reusable {
                        self.idle.put(answer.up);
                    }
                })
            }
            Some(Ok(Answer::Peer(resp)) | Err(Last::Response(Answer::Peer(resp)))) => {
                let out = &mut self.out;
                peer::relay(&mut self.app, resp, &req.method, close, out, &mut sent).await
            }
            Some(Err(Last::Reason(r))) => {
                sent = http_errors::body_len(r) as u64;
                self.answer(r, close).await
            }
        };
        if let Some(mut e) = entry.take() {
            e.bytes_out = sent;
            e.duration = started.elapsed();
            ctx.access_log.log(e);
        }
        relayed?;
        Ok(close)
    }

    /// Writes the agent's own answer for `reason`.
    async fn answer(&mut self, reason: Reason, close: bool) -> io::Result<()> {
        self.out.clear();
        http_errors::write_http1(reason, close, &mut self.out);
        self.app.write_all(&self.out).await
    }
}

/// `work`'s output, or `None` once the app's client has closed or reset its connection (only
/// while `watching`). A client that sends more (a pipelined request, read after this answer) is
/// still there, and is not watched from then on. Watching costs
/// no system call while nothing happens: the request was read to its end, which left the socket
/// waiting for its next event (a short read clears tokio's readiness). The watch costs about 250
/// instructions per request on the one-hop path (12.93k to 13.18k: the socket's reader slot,
/// locked once per poll). Polled by hand, `work` pinned by the caller: `select!` with `peek`
/// took 660 (a waiter list entry locked in and out, the attempt's large future moved twice).
async fn unless_client_leaves<F: Future>(
    app: &TcpStream,
    mut watching: bool,
    mut work: Pin<&mut F>,
) -> Option<F::Output> {
    std::future::poll_fn(|cx| {
        if let Poll::Ready(out) = work.as_mut().poll(cx) {
            return Poll::Ready(Some(out));
        }
        if watching {
            let mut byte = [0; 1];
            match app.poll_peek(cx, &mut ReadBuf::new(&mut byte)) {
                Poll::Ready(Ok(0) | Err(_)) => return Poll::Ready(None),
                Poll::Ready(Ok(_)) => watching = false,
                Poll::Pending => {}
            }
        }
        Poll::Pending
    })
    .await
}

/// Reads what `stream` has into `buf`, first making room for `chunk` bytes when little is left;
/// `Ok(0)` when the peer closed.
async fn read_into(stream: &mut TcpStream, buf: &mut BytesMut, chunk: usize) -> io::Result<usize> {
    if buf.capacity() - buf.len() < chunk / 4 {
        buf.reserve(chunk);
    }
    stream.read_buf(buf).await
}

async fn read_more(stream: &mut TcpStream, buf: &mut BytesMut) -> io::Result<usize> {
    read_into(stream, buf, READ_CHUNK).await
}

/// Relays `answer` to the client: its head, then its body as it comes. Returns whether the
/// upstream connection can be used again. An error leaves the client's response cut short: the
/// caller closes the connection, which is how HTTP/1 says so.
/// `sent` counts the body bytes written (chunked framing included), also when it fails midway.
async fn relay(
    app: &mut TcpStream,
    answer: &mut AppAnswer,
    close: bool,
    out: &mut Vec<u8>,
    sent: &mut u64,
) -> io::Result<bool> {
    let AppAnswer { head, up } = answer;
    out.clear();
    head.write_to_client(&up.buf, close, out);
    up.buf.advance(head.head_len);
    let truncated = || {
        io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the app cut its response short",
        )
    };
    match head.framing {
        Framing::Empty => app.write_all(out).await?,
        Framing::Length(n) => {
            let mut left = n;
            loop {
                let take = usize::try_from(left)
                    .unwrap_or(usize::MAX)
                    .min(up.buf.len());
                send_body(app, out, &up.buf[..take]).await?;
                *sent += take as u64;
                up.buf.advance(take);
                left -= take as u64;
                if left == 0 {
                    break;
                }
                if up.read_more().await? == 0 {
                    return Err(truncated());
                }
            }
        }
        Framing::Chunked => {
            let mut chunks = ChunkedBody::default();
            loop {
                let (n, done) = chunks.feed(&up.buf).ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        "bad chunked framing from the app",
                    )
                })?;
                send_body(app, out, &up.buf[..n]).await?;
                *sent += n as u64;
                up.buf.advance(n);
                if done {
                    break;
                }
                if up.read_more().await? == 0 {
                    return Err(truncated());
                }
            }
        }
        Framing::UntilClose => {
            out.extend_from_slice(&up.buf);
            *sent += up.buf.len() as u64;
            up.buf.clear();
            app.write_all(out).await?;
            out.clear();
            while up.read_more().await? > 0 {
                app.write_all(&up.buf).await?;
                *sent += up.buf.len() as u64;
                up.buf.clear();
            }
            return Ok(false);
        }
    }
    // Bytes beyond the response were sent unasked: the connection's framing cannot be trusted.
    Ok(head.reusable && up.buf.is_empty())
}

/// Writes `body` bytes to the client: behind the head still waiting in `out` (one write for a
/// small response), else straight from the app's buffer (no copy for a large one).
async fn send_body(app: &mut TcpStream, out: &mut Vec<u8>, body: &[u8]) -> io::Result<()> {
    if !out.is_empty() {
        out.extend_from_slice(body);
        app.write_all(out).await?;
        out.clear();
    } else if !body.is_empty() {
        app.write_all(body).await?;
    }
    Ok(())
}

/// An answer from a same-host app or from a peer agent.
enum Answer {
    App(AppAnswer),
    Peer(http::Response<crate::h2_client::RecvBody>),
}

/// An app's answer: its response head, and the connection the rest of it comes on.
struct AppAnswer {
    head: Response,
    up: Upstream,
}

/// A request as the lean path carries it: to a same-host instance, head and (buffered) body
/// written in one piece.
struct Lean<'a> {
    req: &'a Request,
    buf: &'a [u8],
    out: &'a mut Vec<u8>,
    idle: &'a mut Idle,
    /// The hop's `traceparent` line, and what it replaces, when tracing is on.
    traceparent: Option<(String, TraceHeaders)>,
    /// The request as peers get it (before each attempt's own fields), when the route has
    /// instances on other hosts. The first attempt to a peer takes its fields; a later one
    /// makes them again from the client's head (`peer_fields_taken`): cloning the map for
    /// every request, and growing the clone for the attempt's fields, cost more than that.
    peer_request: Option<(http::request::Parts, bytes::Bytes)>,
    peer_fields_taken: bool,
    /// The hop being traced, whose fields a remade peer request gets again.
    hop: Option<&'a Hop>,
    max_head: usize,
    connect_timeout: Duration,
    /// The request may be sent again once it may have reached the app.
    safe: bool,
}

impl Exchange for Lean<'_> {
    type Response = Answer;

    async fn send(
        &mut self,
        ctx: &Outbound,
        route: &Route,
        ep: &Endpoint,
        remaining: Duration,
    ) -> Result<(Answer, Option<Instant>), Refused> {
        if !ep.local {
            let (head, body) = self.peer_request.as_mut().ok_or(Refused::Undefined)?;
            let fields = if std::mem::replace(&mut self.peer_fields_taken, true) {
                // `run` made these from this head once already: they can be made again.
                let mut again = peer::parts(self.req, self.buf).ok_or(Refused::Undefined)?;
                if let Some(h) = self.hop {
                    h.write_headers(&mut again.headers);
                }
                again.headers
            } else {
                std::mem::take(&mut head.headers)
            };
            let body = body::boxed(Full::new(body.clone()).map_err(|never| match never {}));
            let (req, target) = super::instance_request::build(
                ctx,
                route,
                ep,
                head,
                fields,
                remaining,
                body::lend(body).0,
                false,
            )
            .ok_or(Refused::Undefined)?;
            return ctx
                .send_to_peer(target, req)
                .await
                .map(|(resp, ready_at)| (Answer::Peer(resp), Some(ready_at)))
                .map_err(|e| Refused::Failed(e.failure(), e.to_string()));
        }
        let target = ctx
            .local
            .get(&route.service, &ep.id)
            .ok_or(Refused::Undefined)?
            .target;
        let mut timeout = [0u8; 64];
        let timeout = hostmesh_wire::timeout_line(remaining, &mut timeout);
        let (trace_line, trace) = match &self.traceparent {
            Some((line, mode)) => (line.as_bytes(), *mode),
            None => (&b""[..], TraceHeaders::Keep),
        };
        self.req.write_to_app(
            self.buf,
            &[timeout, &ctx.wire_headers.h1_lines, trace_line],
            trace,
            self.out,
        );
        let failed = |e: UpstreamError| {
            let f = if e.never_reached() {
                Failure::NeverReached
            } else {
                Failure::MayHaveReached
            };
            Refused::Failed(f, e.to_string())
        };
        let head_request = self.req.method == Method::HEAD;
        if let Some(mut up) = self.idle.take(target) {
            match up.exchange(self.out, head_request, self.max_head).await {
                Ok(head) => return Ok((Answer::App(AppAnswer { head, up }), None)),
                // A kept connection the app closed as the request went out: a request that may
                // be repeated goes again on a new connection to the same instance (as Go's and
                // hyper's clients do); any other fails as one that may have reached the app.
                Err(e) if e.before_response() && self.safe => {
                    tracing::debug!(%target, "kept connection closed under a request: {e}");
                }
                Err(e) => return Err(failed(e)),
            }
        }
        let mut up = Upstream::connect(target, self.connect_timeout)
            .await
            .map_err(failed)?;
        let ready_at = Instant::now();
        let head = up
            .exchange(self.out, head_request, self.max_head)
            .await
            .map_err(failed)?;
        Ok((Answer::App(AppAnswer { head, up }), Some(ready_at)))
    }

    fn status(answer: &Answer) -> StatusCode {
        match answer {
            Answer::App(a) => a.head.status,
            Answer::Peer(resp) => resp.status(),
        }
    }

    fn agent_error(answer: &Answer) -> Option<&str> {
        match answer {
            Answer::App(a) => a.head.agent_error(&a.up.buf),
            Answer::Peer(resp) => resp
                .headers()
                .get(hostmesh_wire::names::ERROR)
                .and_then(|v| v.to_str().ok()),
        }
    }

    fn ready_again(&mut self, failure: Failure, safe: bool) -> bool {
        // The body is in the buffer: it can always be sent again; whether it may is the rule.
        failure == Failure::NeverReached || safe
    }
}
