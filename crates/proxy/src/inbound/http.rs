//! Inbound HTTP: HTTP/2 from peer agents. Each request names the instance in `x-hostmesh-dst`;
//! it goes to that instance's `target` (HTTP/1.1 for `http` apps, h2c for `grpc` apps) with the
//! caller's identity and the remaining deadline, or is answered 503 `no-local-instance`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;

use bytes::Bytes;
use h2::RecvStream;
use h2::server::SendResponse;
use http::header::{CONTENT_LENGTH, HeaderValue};
use http::{Request, Response};
use http_body_util::BodyExt as _;
use hyper::body::Body as _;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use hostmesh_config::spec::{InstanceSpec, Protocol};

use super::{Inbound, PeerIo, app_h1, caller};
use crate::access_log::body::{Logged, Pending};
use crate::access_log::{self, Direction, Entry, trace_id_of};
use crate::app_request;
use crate::body::{self, ProxyBody};
use crate::client_left;
use crate::h2_limits;
use crate::h2_stream::{Pipe, RecvBody};
use crate::http_errors::{self, Reason};
use crate::local::Local;
use crate::outbound::retry;
use crate::pool;
use crate::trace::{Hop, Kind};
use hostmesh_listen::idle::{Busy, Idle};
use hostmesh_wire as wire;
use hostmesh_wire::headers;

/// Serves one peer connection. `caller` is the host proven by the peer's certificate (mTLS);
/// `None` only with TLS disabled, where the peer's `x-hostmesh-src` claim is taken instead.
///
/// On the h2 crate directly, not hyper's server over it, which wraps each stream in its own
/// service, body and dispatch types: about a tenth of this side's instructions per request
/// (callgrind, two hosts over h2c). Each stream still gets a task of its own: one task running
/// all of a connection's streams (tried first) cost more instructions per request, not fewer.
pub async fn serve(
    ctx: Arc<Inbound>,
    stream: impl PeerIo,
    peer: SocketAddr,
    caller: Option<Arc<str>>,
) {
    let stop = ctx.draining.child_token();
    // The peer's pool drops a connection idle for idle_timeout; twice that here is only a
    // backstop, so that the peer (which knows when it is about to send) normally closes first.
    // It also bounds a peer that never finishes the handshake.
    let idle = Idle::new(ctx.settings.idle_timeout.saturating_mul(2));
    let shared = Arc::new(Peer {
        addr: peer,
        forwarded: HeaderValue::from_str(&format!("for={}", peer.ip()))
            .unwrap_or(HeaderValue::from_static("for=unknown")),
        callers: caller::Callers::new(caller.as_deref(), peer.ip()),
    });
    let served = {
        let (idle, stop) = (idle.clone(), stop.clone());
        async move {
            let mut conn = h2_limits::peer_server(&ctx.settings)
                .handshake::<_, Bytes>(stream)
                .await?;
            let serve = |req, mut respond: SendResponse<Bytes>| {
                let busy = idle.busy();
                let (ctx, shared) = (ctx.clone(), shared.clone());
                // Boxed: tokio moves a task's future several times as it spawns and ends it
                // (each a copy of the whole future, some KB here), a box only once.
                tokio::spawn(Box::pin(async move {
                    let resp = answer(&ctx, &shared, req, &mut respond).await;
                    if let Some(resp) = resp {
                        send(respond, resp, busy).await;
                    }
                }));
            };
            accept(&mut conn, &stop, serve).await
        }
    };
    // A GOAWAY once draining starts (or the backstop fires): the peer finishes what it sent
    // and reconnects for more.
    if let Some(Err(e)) = idle.close_when_idle(served, stop).await {
        tracing::debug!(%peer, "inbound connection ended: {e}");
    }
}

/// Hands each stream the peer opens to `serve` until the connection ends, with a GOAWAY once
/// `stop` fires (the streams already opened are still answered).
async fn accept<T: PeerIo>(
    conn: &mut h2::server::Connection<T, Bytes>,
    stop: &CancellationToken,
    mut serve: impl FnMut(Request<RecvStream>, SendResponse<Bytes>),
) -> Result<(), h2::Error> {
    let mut stopping = std::pin::pin!(stop.cancelled());
    let mut stopped = false;
    std::future::poll_fn(|cx| {
        if !stopped && stopping.as_mut().poll(cx).is_ready() {
            stopped = true;
            conn.graceful_shutdown();
        }
        loop {
            match conn.poll_accept(cx) {
                Poll::Ready(Some(Ok((req, respond)))) => serve(req, respond),
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e)),
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
    })
    .await
}

/// The peer of one connection: what all of its requests have in common, made once.
#[derive(Debug)]
struct Peer {
    addr: SocketAddr,
    /// What the app sees in `forwarded`.
    forwarded: HeaderValue,
    callers: caller::Callers,
}

/// The response to a peer's request, or `None` if the peer reset the stream first (it gave up:
/// the app's request is dropped with it).
async fn answer(
    ctx: &Inbound,
    peer: &Peer,
    req: Request<RecvStream>,
    respond: &mut SendResponse<Bytes>,
) -> Option<Response<ProxyBody>> {
    let (head, recv) = req.into_parts();
    let body = RecvBody::new(recv, &head.headers, ());
    let handling = handle(ctx, peer, Request::from_parts(head, body));
    let mut handling = std::pin::pin!(handling);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(resp) = handling.as_mut().poll(cx) {
            return Poll::Ready(Some(resp));
        }
        respond.poll_reset(cx).map(|_| None)
    })
    .await
}

/// Sends `resp` on the stream: its head, then its body as the peer's window allows. `busy`
/// marks the connection in use until the body is all sent.
async fn send(mut respond: SendResponse<Bytes>, resp: Response<ProxyBody>, busy: Busy) {
    let (mut head, body) = resp.into_parts();
    let end = body.is_end_stream();
    if !end
        && let Some(len) = body.size_hint().exact()
        && !head.headers.contains_key(CONTENT_LENGTH)
    {
        head.headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
    }
    match respond.send_response(Response::from_parts(head, ()), end) {
        Ok(stream) if !end => Pipe::new(body, stream, busy).await,
        Ok(_) => {}
        Err(e) => {
            // A head h2 refuses (a connection-specific field the app sent and nothing stripped)
            // or a stream already gone.
            tracing::debug!("inbound: response not sent: {e}");
            respond.send_reset(h2::Reason::INTERNAL_ERROR);
        }
    }
}

async fn handle(ctx: &Inbound, peer: &Peer, req: Request<RecvBody>) -> Response<ProxyBody> {
    let started = Instant::now();
    let version = req.version();
    let (mut parts, incoming) = req.into_parts();
    // Every early answer below leaves the peer's body to be read to its end (`ReadToEnd`).
    let read = access_log::body::read_counter(&ctx.access_log);
    let incoming = body::ReadToEnd::new(incoming, version).counting(read.clone());
    let ours = wire::PeerFields::of(&parts.headers);
    if text(ours.version) != Some(wire::VERSION) {
        return http_errors::response(Reason::BadRequest, false);
    }
    let Some((service, id)) = text(ours.dst).and_then(|d| d.split_once('/')) else {
        return http_errors::response(Reason::BadRequest, false);
    };
    let Some(spec) = ctx
        .local
        .get(service, id)
        .filter(|s| s.protocol != Protocol::Tcp)
    else {
        return http_errors::response(Reason::NoLocalInstance, false);
    };
    let service = spec.service.as_str();
    let grpc = spec.protocol == Protocol::Grpc;
    // The deadline as the peer sent it, when it did (the app sees what this hop waits for).
    let sent_timeout = ours
        .timeout
        .and_then(|v| Some((wire::parse_timeout(v.to_str().ok()?)?, v)));
    let timeout = sent_timeout.map_or(ctx.settings.request_timeout, |(t, _)| t);
    // Read before `write_map` drops the agent's own fields.
    let replayable = retry::is_safe_with(&parts.method, text(ours.retryable));
    let caller = peer.callers.of_request(ours.src);
    let log_entry = |caller: Option<&str>| {
        ctx.access_log.is_on().then(|| {
            let traceparent = parts.headers.get(crate::trace::TRACEPARENT);
            let traceparent = traceparent.and_then(|v| v.to_str().ok());
            Box::new(entry(ctx, &spec, peer.addr, caller, &parts, traceparent))
        })
    };
    if !ctx.policies.allows(service, caller.host().unwrap_or("")) {
        ctx.metrics.policy_denied(service, "inbound");
        ctx.metrics.request(
            service,
            "inbound",
            (403, Some(Reason::Forbidden.as_str())),
            started.elapsed(),
        );
        let resp = http_errors::response(Reason::Forbidden, grpc);
        let entry = log_entry(caller.host());
        return logged(ctx, entry, resp, started, read);
    }
    let entry = log_entry(caller.host());
    let timeout_value = match sent_timeout {
        Some((_, v)) => v.clone(),
        None => wire::timeout_value(timeout),
    };
    let added = app_request::Added {
        caller: caller.value(),
        forwarded: &peer.forwarded,
        timeout: &timeout_value,
        grpc,
    };
    // The HTTP/1.1 leg (`app_h1`) writes the app's head from the peer's fields in one pass,
    // leaving out what `write_map` removes: editing the map (a removal per `x-hostmesh-*` field,
    // an insert per added one) was 3,400 of this side's 46k instructions per request. A hop
    // being traced rewrites `traceparent` in the map after those edits, so then the map is
    // edited first, as on the other legs.
    let app_leg = !grpc && app_h1::takes(&parts, &incoming);
    let edited = !app_leg || ctx.tracer.is_on();
    if edited {
        app_request::write_map(&mut parts.headers, &added);
    }
    let hop = ctx
        .tracer
        .hop(&mut parts.headers, Kind::Server, service, &parts.method);
    // From here on the request waits for the app: a peer that resets the stream drops it
    // (`answer`), and `begun` finishes it then.
    let mut begun = Begun {
        ctx,
        local: &spec,
        started,
        hop,
        entry,
        answered: false,
    };
    let path = pool::path_of(&parts.uri);
    // The request's deadline counts from its arrival, on every branch below. `None`: it
    // passed before the app's response head.
    let deadline = started + timeout;
    let sent = if app_leg {
        // A small body is read whole first (see `app_h1`); a peer that resets it meanwhile is
        // gone, and its answer with it. Most requests have none to wait for.
        let body = if incoming.is_end_stream() {
            Some(Ok(bytes::Bytes::new()))
        } else {
            tokio::time::timeout_at(deadline, incoming.collect())
                .await
                .ok()
                .map(|r| {
                    r.map(|b| b.to_bytes())
                        .map_err(|e| (false, format!("reading the request body: {e}")))
                })
        };
        match body {
            None => None,
            Some(Err(e)) => Some(Err(e)),
            Some(Ok(body)) => app_h1::send(
                &parts,
                (!edited).then_some(&added),
                &path,
                &spec.authority,
                spec.target,
                &ctx.settings,
                replayable,
                &body,
                deadline,
            )
            .await
            .map(|r| r.map_err(|e| (e.never_reached(), e.to_string()))),
        }
    } else {
        let Some(uri) = pool::absolute_uri(spec.authority.clone(), path) else {
            return http_errors::response(Reason::BadRequest, grpc);
        };
        parts.uri = uri;
        let pools = ctx.pools.get();
        if grpc {
            parts.version = http::Version::HTTP_2;
            let req = Request::from_parts(parts, body::lend(body::boxed(incoming)).0);
            // Boxed here and below: the rarer legs' futures would otherwise size (and be moved
            // with) every request's task.
            tokio::time::timeout_at(deadline, Box::pin(pools.local_h2c.request(req)))
                .await
                .ok()
                .map(|r| {
                    r.map(|resp| resp.map(body::boxed))
                        .map_err(|e| (e.is_connect(), e.to_string()))
                })
        } else {
            parts.version = http::Version::HTTP_11;
            let req = Request::from_parts(parts, body::boxed(incoming));
            tokio::time::timeout_at(deadline, Box::pin(pools.local_http1_direct.request(req)))
                .await
                .ok()
                .map(|r| {
                    r.map(|resp| resp.map(body::boxed))
                        .map_err(|e| (e.is_connect(), e.to_string()))
                })
        }
    };
    begun.answered = true;
    let (hop, entry) = (begun.hop.take(), begun.entry.take());
    let resp = match sent {
        None => http_errors::response(Reason::DeadlineExceeded, grpc),
        Some(Err((true, e))) => {
            tracing::debug!(service, target = %spec.target, "inbound: app unreachable: {e}");
            http_errors::response(Reason::UpstreamUnreachable, grpc)
        }
        Some(Err((false, e))) => {
            tracing::debug!(service, target = %spec.target, "inbound: app failed: {e}");
            http_errors::response(Reason::UpstreamReset, grpc)
        }
        Some(Ok(mut resp)) => {
            headers::strip_hop_by_hop(resp.headers_mut());
            resp
        }
    };
    if let Some(hop) = hop {
        hop.finish(resp.status().as_u16());
    }
    ctx.metrics.request_via(
        &spec.metrics,
        service,
        "inbound",
        (resp.status().as_u16(), http_errors::reason_of(&resp)),
        started.elapsed(),
    );
    logged(ctx, entry, resp, started, read)
}

/// A peer's request on its way to the app. Dropped before it is `answered` (the peer reset the
/// stream: its caller left, or its deadline passed), it finishes the request as one whose client
/// left, 499, as the outbound side counts it: in the metrics, the trace span and the access log.
struct Begun<'a> {
    ctx: &'a Inbound,
    local: &'a Local,
    started: Instant,
    hop: Option<Hop>,
    entry: Option<Box<Entry>>,
    answered: bool,
}

impl Drop for Begun<'_> {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        let (ctx, local) = (self.ctx, self.local);
        let (status, took) = client_left::finish(
            &ctx.metrics,
            &local.metrics,
            &local.service,
            "inbound",
            self.started,
            self.hop.take(),
        );
        if let Some(mut e) = self.entry.take() {
            e.status = Some(status);
            e.duration = took;
            ctx.access_log.log(*e);
        }
    }
}

/// A field's value as text, if it has one and that is visible ASCII.
fn text(v: Option<&HeaderValue>) -> Option<&str> {
    v.and_then(|v| v.to_str().ok())
}

/// The access log entry of a peer's request to `spec` (the trace id is the request's own: the
/// hop keeps it).
fn entry(
    ctx: &Inbound,
    spec: &InstanceSpec,
    peer: SocketAddr,
    caller: Option<&str>,
    parts: &http::request::Parts,
    traceparent: Option<&str>,
) -> Entry {
    let mut e = Entry::new(Direction::Inbound, spec.protocol.as_str(), &spec.service);
    e.client = Some(peer);
    e.caller = caller.map(str::to_owned);
    e.instance = Some(format!("{}/{}", ctx.host, spec.id));
    e.method = Some(parts.method.as_str().to_owned());
    e.path = Some(
        parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned(),
    );
    e.trace_id = traceparent.and_then(trace_id_of);
    e.attempts = 1;
    e
}

/// `resp` with its entry written when its body has gone to the peer (as it is without one).
/// The entry is boxed while the app answers: logs are off by default, and the request's task
/// should not carry (and move) an entry's room for nothing.
fn logged(
    ctx: &Inbound,
    entry: Option<Box<Entry>>,
    resp: Response<ProxyBody>,
    started: Instant,
    read: access_log::body::ReadCounter,
) -> Response<ProxyBody> {
    let Some(mut e) = entry else {
        return resp;
    };
    e.status = Some(resp.status().as_u16());
    e.error = http_errors::reason_of(&resp).map(str::to_owned);
    e.to_headers = Some(started.elapsed());
    let pending = Pending::new(*e, ctx.access_log.clone(), started.into_std(), read);
    resp.map(|b| body::boxed(Logged::new(b, pending)))
}
