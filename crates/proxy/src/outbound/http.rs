//! Outbound HTTP: an app's connection to a VIP, served with hyper (HTTP/1.x or h2, detected from
//! the first bytes). Each request goes to one instance picked by the balancer: a same-host
//! instance directly at its `target`, any other through its host's agent over HTTP/2. Bodies
//! stream both ways. A request that provably never left this host (the connect failed before its
//! body was read, or the peer says it has no such instance) is tried on another instance.
//!
//! The HTTP version is sniffed here rather than by hyper-util's `auto` server so that HTTP/1
//! connections (the common case for legacy apps) can own their same-host upstream connections
//! and drive them on their own task (see `paired`).

use std::convert::Infallible;
use std::mem::take;
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HOST, HeaderValue};
use http::request::Parts;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Body as _;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::time::Instant;

use hostmesh_config::spec::Protocol;

use super::access;
use super::attempts::{self, Exchange, Last, Refused};
use super::decision::Decision;
use super::detect::{self, Version};
use super::h1;
use super::instance_request;
use super::paired::Paired;
use super::retry::{self, Failure};
use super::route::{Endpoint, Route};
use super::strict_h1::StrictH1;
use super::{Outbound, Settings};
use crate::access_log::{
    self, Entry,
    body::{Logged, Pending},
};
use crate::body::{self, ProxyBody};
use crate::client_left;
use crate::h2_limits;
use crate::http_errors::{self, Reason};
use crate::prefixed::Prefixed;
use crate::trace::{Hop, Kind};
use hostmesh_listen::idle::{BusyBody, Idle};
use hostmesh_listen::shutdown::Graceful;
use hostmesh_wire as wire;
use hostmesh_wire::headers;

/// Serves one captured app connection until it closes.
pub async fn serve(ctx: Arc<Outbound>, mut stream: TcpStream, dst: SocketAddrV4) {
    let _ = stream.set_nodelay(true);
    // The app's socket, for access log lines.
    let client = if ctx.access_log.is_on() {
        stream.peer_addr().ok()
    } else {
        None
    };
    let Some((version, mut head)) =
        detect::sniff(&mut stream, ctx.settings.header_read_timeout).await
    else {
        return;
    };
    if version == Version::Http1 {
        // HTTP/1.1 to same-host instances takes the lean path, which hands the connection back
        // at the first request it does not take.
        let http = ctx.routes.load().get(dst).map(|r| r.protocol) == Some(Protocol::Http);
        if http {
            match h1::serve(ctx.clone(), stream, &head, dst).await {
                h1::Ended::Done => return,
                h1::Ended::Handover(rest, s) => {
                    head = rest.to_vec();
                    stream = s;
                }
            }
        }
    }
    let io = Prefixed::new(head, stream);
    let ctx_settings = ctx.settings.clone();
    let draining = ctx.draining.clone();
    let ended = match version {
        Version::Http1 => {
            // Same-host upstream connections belong to this connection and run on its task.
            let paired = Arc::new(Paired::default());
            let svc = {
                let paired = paired.clone();
                service_fn(move |req| {
                    let ctx = ctx.clone();
                    let paired = paired.clone();
                    async move { Ok::<_, Infallible>(handle(ctx, dst, client, req, Some(paired)).await) }
                })
            };
            let late = draining.is_cancelled();
            let mut builder = http1_server(&ctx_settings);
            // Arrived while the agent drains: one request, then close.
            builder.keep_alive(!late);
            // Request heads pass the strict framing guard before hyper parses them.
            let io = TokioIo::new(StrictH1::new(io, ctx_settings.max_header_bytes));
            let conn = builder.serve_connection(io, svc);
            if late {
                paired.drive(conn).await
            } else {
                let conn = Graceful::new(conn, &draining, |c| c.graceful_shutdown());
                paired.drive(conn).await
            }
        }
        Version::Http2 => {
            let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
            builder.timer(TokioTimer::new());
            h2_limits::app_server(&mut builder, &ctx_settings);
            let idle = Idle::new(ctx_settings.idle_timeout);
            let svc = {
                let idle = idle.clone();
                service_fn(move |req| {
                    let ctx = ctx.clone();
                    let busy = idle.busy();
                    async move {
                        let resp = handle(ctx, dst, client, req, None).await;
                        Ok::<_, Infallible>(resp.map(|b| BusyBody::new(b, busy)))
                    }
                })
            };
            let conn = builder.serve_connection(TokioIo::new(io), svc);
            // A GOAWAY when the agent drains, or after idle_timeout with no request.
            let stop = draining.child_token();
            let conn = Graceful::new(conn, &stop, |c| c.graceful_shutdown());
            idle.close_when_idle(conn, stop).await.unwrap_or(Ok(()))
        }
    };
    if let Err(e) = ended {
        tracing::debug!(%dst, "outbound connection ended: {e}");
    }
}

/// hyper's HTTP/1 server as app connections get it.
pub(super) fn http1_server(settings: &Settings) -> hyper::server::conn::http1::Builder {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .max_headers(settings.max_headers)
        // The same limit as the strict guard's, which passes longer heads on for hyper's 431.
        .max_header_size(settings.max_header_bytes)
        .max_buf_size(settings.max_header_bytes.max(8192))
        // A client that trickles its request head is cut off (slowloris).
        .header_read_timeout(Some(settings.header_read_timeout));
    builder
}

async fn handle(
    ctx: Arc<Outbound>,
    dst: SocketAddrV4,
    client: Option<SocketAddr>,
    req: Request<Incoming>,
    paired: Option<Arc<Paired>>,
) -> Response<ProxyBody> {
    let started = Instant::now();
    // An answer that comes before the body is all in leaves it to be read to its end.
    let version = req.version();
    let read = access_log::body::read_counter(&ctx.access_log);
    let mut req = req.map(|b| body::ReadToEnd::new(b, version).counting(read.clone()));
    let route = ctx.routes.load().get(dst);
    let grpc_client = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    let Some(route) = route else {
        return http_errors::response(Reason::NoEndpoints, grpc_client);
    };
    let method = req.method().clone();
    let hop = ctx
        .tracer
        .hop(req.headers_mut(), Kind::Client, &route.service, &method);
    let entry = ctx.access_log.is_on().then(|| {
        let traceparent = match &hop {
            Some(h) => Some(h.traceparent()),
            None => (req.headers().get(crate::trace::TRACEPARENT))
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        };
        let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
        access::begin(
            &ctx,
            &route,
            client,
            method.as_str(),
            path,
            traceparent.as_deref(),
        )
    });
    let mut begun = Begun {
        ctx: &ctx,
        route: &route,
        started,
        hop,
        entry,
        tally: attempts::Tally::default(),
        answered: false,
    };
    let resp = forward(
        &ctx,
        &route,
        req,
        started,
        paired.as_deref(),
        &mut begun.tally,
    )
    .await;
    begun.answered = true;
    let (hop, entry, tally) = (begun.hop.take(), begun.entry.take(), take(&mut begun.tally));
    if let Some(hop) = hop {
        hop.finish(resp.status().as_u16());
    }
    ctx.metrics.request_via(
        &route.metrics,
        &route.service,
        "outbound",
        (resp.status().as_u16(), http_errors::reason_of(&resp)),
        started.elapsed(),
    );
    match entry {
        None => resp,
        Some(mut e) => {
            let error = http_errors::reason_of(&resp);
            let status = resp.status().as_u16();
            access::settle(&mut e, &route, &tally, status, error, started.elapsed());
            let pending = Pending::new(e, ctx.access_log.clone(), started.into_std(), read);
            resp.map(|b| body::boxed(Logged::new(b, pending)))
        }
    }
}

/// What [`handle`] began for a request (its trace hop, access log entry and attempts), finished
/// as the lean path finishes a request whose client left (499) when hyper drops the request
/// before it is answered: the client closed its connection, or reset its HTTP/2 stream. hyper
/// then drops the attempts too, which resets a peer's stream or closes an app's connection.
struct Begun<'a> {
    ctx: &'a Outbound,
    route: &'a Route,
    started: Instant,
    hop: Option<Hop>,
    entry: Option<Entry>,
    tally: attempts::Tally,
    answered: bool,
}

impl Drop for Begun<'_> {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        let (ctx, route) = (self.ctx, self.route);
        let (status, took) = client_left::finish(
            &ctx.metrics,
            &route.metrics,
            &route.service,
            "outbound",
            self.started,
            self.hop.take(),
        );
        if let Some(mut e) = self.entry.take() {
            access::settle(&mut e, route, &self.tally, status, None, took);
            e.duration = took;
            ctx.access_log.log(e);
        }
    }
}

/// The request body across attempts: small bodies are buffered so a safe request can be
/// replayed; larger ones stream, and come back only if an attempt never read them.
enum ReqBody {
    Buffered(Bytes),
    Streaming(ProxyBody),
    Gone,
}

impl ReqBody {
    async fn new(incoming: body::ReadToEnd, deadline: Instant) -> Result<ReqBody, Reason> {
        if incoming.is_end_stream() {
            return Ok(ReqBody::Buffered(Bytes::new()));
        }
        let small = incoming
            .size_hint()
            .upper()
            .is_some_and(|n| n <= retry::MAX_REPLAY_BODY);
        if !small {
            return Ok(ReqBody::Streaming(body::boxed(incoming)));
        }
        match tokio::time::timeout_at(deadline, incoming.collect()).await {
            Ok(Ok(collected)) => Ok(ReqBody::Buffered(collected.to_bytes())),
            Ok(Err(_)) => Err(Reason::BadRequest),
            Err(_) => Err(Reason::DeadlineExceeded),
        }
    }

    /// The body for one attempt, and (when streaming) the way to get it back.
    fn lend(&mut self) -> (body::Lent, Option<body::Reclaim>) {
        match std::mem::replace(self, ReqBody::Gone) {
            ReqBody::Buffered(bytes) => {
                let (lent, _) = body::lend(body::boxed(
                    Full::new(bytes.clone()).map_err(|never| match never {}),
                ));
                *self = ReqBody::Buffered(bytes);
                (lent, None)
            }
            ReqBody::Streaming(b) => {
                let (lent, reclaim) = body::lend(b);
                (lent, Some(reclaim))
            }
            ReqBody::Gone => {
                let empty = http_body_util::Empty::new().map_err(|never| match never {});
                (body::lend(body::boxed(empty)).0, None)
            }
        }
    }

    /// Whether a next attempt can carry the body after `failure`.
    fn ready_again(
        &mut self,
        failure: Failure,
        safe: bool,
        reclaim: Option<body::Reclaim>,
    ) -> bool {
        match self {
            ReqBody::Buffered(_) => failure == Failure::NeverReached || safe,
            _ => match (failure, reclaim.and_then(|r| r.take())) {
                (Failure::NeverReached, Some(b)) => {
                    *self = ReqBody::Streaming(b);
                    true
                }
                _ => false,
            },
        }
    }
}

async fn forward(
    ctx: &Outbound,
    route: &Route,
    req: Request<body::ReadToEnd>,
    started: Instant,
    paired: Option<&Paired>,
    tally: &mut attempts::Tally,
) -> Response<ProxyBody> {
    let grpc = route.protocol == Protocol::Grpc;
    let (mut parts, incoming) = req.into_parts();
    let decision = Decision::new(
        route,
        parts.uri.path(),
        &parts.headers,
        ctx.settings.request_timeout,
    );
    let deadline = started + decision.deadline.after;
    headers::strip_hop_by_hop(&mut parts.headers);
    let safe = retry::is_safe(&parts.method, &parts.headers);
    headers::strip_client_internal(&mut parts.headers);
    parts.headers.remove(wire::names::RETRYABLE);
    let authority = parts
        .uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| {
            parts
                .headers
                .get(HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
        });
    if let Some(a) = &authority
        && let Ok(v) = HeaderValue::from_str(a)
    {
        // The app sees the name its client used, whichever HTTP version carried it.
        parts.headers.insert(HOST, v);
    }
    let body = match ReqBody::new(incoming, deadline).await {
        Ok(b) => b,
        Err(reason) => return http_errors::response(reason, grpc),
    };
    let mut exchange = HyperExchange {
        parts,
        body,
        reclaim: None,
        paired,
    };
    let resp = match attempts::run(
        ctx,
        route,
        &decision,
        deadline,
        safe,
        &mut exchange,
        &mut attempts::PerAttempt,
        tally,
    )
    .await
    {
        Ok(resp) | Err(Last::Response(resp)) => resp,
        Err(Last::Reason(r)) => return http_errors::response(r, grpc),
    };
    let (mut rparts, rbody) = resp.into_parts();
    headers::strip_hop_by_hop(&mut rparts.headers);
    Response::from_parts(rparts, rbody)
}

/// A request as hyper carries it: to any instance, the body lent to each attempt.
struct HyperExchange<'a> {
    parts: Parts,
    body: ReqBody,
    /// The way back to the body lent to the last attempt, when it streams.
    reclaim: Option<body::Reclaim>,
    paired: Option<&'a Paired>,
}

impl Exchange for HyperExchange<'_> {
    type Response = Response<ProxyBody>;

    async fn send(
        &mut self,
        ctx: &Outbound,
        route: &Route,
        ep: &Endpoint,
        remaining: Duration,
    ) -> Result<(Response<ProxyBody>, Option<Instant>), Refused> {
        let (lent, reclaim) = self.body.lend();
        self.reclaim = reclaim;
        let paired = self
            .paired
            .filter(|_| ep.local && route.protocol == Protocol::Http);
        // A same-host instance that is no longer defined here never saw the request.
        let (req, target) = instance_request::build(
            ctx,
            route,
            ep,
            &self.parts,
            self.parts.headers.clone(),
            remaining,
            lent,
            paired.is_some(),
        )
        .ok_or(Refused::Undefined)?;
        ctx.send(route, ep, target, req, paired)
            .await
            .map(|(resp, ready_at)| (resp, Some(ready_at)))
            .map_err(|e| Refused::Failed(e.failure(), e.to_string()))
    }

    fn status(resp: &Response<ProxyBody>) -> StatusCode {
        resp.status()
    }

    fn agent_error(resp: &Response<ProxyBody>) -> Option<&str> {
        resp.headers()
            .get(wire::names::ERROR)
            .and_then(|v| v.to_str().ok())
    }

    fn ready_again(&mut self, failure: Failure, safe: bool) -> bool {
        self.body.ready_again(failure, safe, self.reclaim.take())
    }

    fn body_failed(&self) -> bool {
        self.reclaim
            .as_ref()
            .is_some_and(body::Reclaim::body_failed)
    }
}
