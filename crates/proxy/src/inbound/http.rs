//! Inbound HTTP: HTTP/2 from peer agents. Each request names the instance in `x-hostmesh-dst`;
//! it goes to that instance's `target` (HTTP/1.1 for `http` apps, h2c for `grpc` apps) with the
//! caller's identity and the remaining deadline, or is answered 503 `no-local-instance`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http::header::HeaderValue;
use http::{Request, Response};
use http_body_util::BodyExt as _;
use hyper::body::{Body as _, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::time::Instant;

use hostmesh_config::spec::Protocol;

use super::{Inbound, PeerIo, app_h1, caller};
use crate::access_log::body::{Logged, Pending};
use crate::access_log::{self, Direction, Entry, trace_id_of};
use crate::app_request;
use crate::body::{self, ProxyBody};
use crate::h2_limits;
use crate::http_errors::{self, Reason};
use crate::outbound::retry;
use crate::pool;
use crate::trace::Kind;
use hostmesh_listen::idle::{BusyBody, Idle};
use hostmesh_wire as wire;
use hostmesh_wire::headers;

/// Serves one peer connection. `caller` is the host proven by the peer's certificate (mTLS);
/// `None` only with TLS disabled, where the peer's `x-hostmesh-src` claim is taken instead.
pub async fn serve(
    ctx: Arc<Inbound>,
    stream: impl PeerIo,
    peer: SocketAddr,
    caller: Option<Arc<str>>,
) {
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder.timer(TokioTimer::new());
    h2_limits::peer_server(&mut builder, &ctx.settings);
    let stop = ctx.draining.child_token();
    // The peer's pool drops a connection idle for idle_timeout; twice that here is only a
    // backstop, so that the peer (which knows when it is about to send) normally closes first.
    let idle = Idle::new(ctx.settings.idle_timeout.saturating_mul(2));
    // What the app sees in `forwarded`: the same for every request of the connection.
    let forwarded = HeaderValue::from_str(&format!("for={}", peer.ip()))
        .unwrap_or(HeaderValue::from_static("for=unknown"));
    let svc = {
        let idle = idle.clone();
        service_fn(move |req| {
            let ctx = ctx.clone();
            let caller = caller.clone();
            let forwarded = forwarded.clone();
            let busy = idle.busy();
            async move {
                let resp = handle(ctx, peer, caller, &forwarded, req).await;
                Ok::<_, Infallible>(resp.map(|b| BusyBody::new(b, busy)))
            }
        })
    };
    let conn = builder.serve_connection(TokioIo::new(stream), svc);
    // A GOAWAY once draining starts (or the backstop fires): the peer finishes what it sent
    // and reconnects for more.
    let conn = hostmesh_listen::shutdown::Graceful::new(conn, &stop, |c| c.graceful_shutdown());
    if let Some(Err(e)) = idle.close_when_idle(conn, stop).await {
        tracing::debug!(%peer, "inbound connection ended: {e}");
    }
}

async fn handle(
    ctx: Arc<Inbound>,
    peer: SocketAddr,
    caller: Option<Arc<str>>,
    forwarded: &HeaderValue,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    let started = Instant::now();
    let version = req.version();
    let (mut parts, incoming) = req.into_parts();
    // Every early answer below leaves the peer's body to be read to its end (`ReadToEnd`).
    let read = access_log::body::read_counter(&ctx.access_log);
    let incoming = body::ReadToEnd::new(incoming, version).counting(read.clone());
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
    if header(wire::VERSION_HEADER) != Some(wire::VERSION) {
        return http_errors::response(Reason::BadRequest, false);
    }
    let Some((service, id)) = header(wire::DST).and_then(|d| d.split_once('/')) else {
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
    let timeout = header(wire::TIMEOUT)
        .and_then(wire::parse_timeout)
        .unwrap_or(ctx.settings.request_timeout);
    // Read before `write_map` drops the agent's own fields.
    let replayable = retry::is_safe_with(&parts.method, header(wire::RETRYABLE));
    let caller = caller::of_request(caller.as_ref(), &parts.headers);
    if !ctx
        .policies
        .allows(service, caller.as_deref().unwrap_or(""))
    {
        ctx.metrics.policy_denied(service, "inbound");
        ctx.metrics.request(
            service,
            "inbound",
            (403, Some(Reason::Forbidden.as_str())),
            started.elapsed(),
        );
        let resp = http_errors::response(Reason::Forbidden, grpc);
        let entry = ctx.access_log.is_on().then(|| {
            let traceparent = header(crate::trace::TRACEPARENT);
            entry(&ctx, &spec, peer, caller.as_deref(), &parts, traceparent)
        });
        return logged(&ctx, entry, resp, started, read);
    }
    let entry = ctx.access_log.is_on().then(|| {
        let traceparent = header(crate::trace::TRACEPARENT);
        entry(&ctx, &spec, peer, caller.as_deref(), &parts, traceparent)
    });
    let caller = caller.unwrap_or_else(|| peer.ip().to_string());
    // A caller is a host name (from a certificate or the peer's claim, both checked) or an IP.
    let caller = HeaderValue::from_str(&caller).unwrap_or(HeaderValue::from_static("unknown"));
    // The deadline as the peer sent it, when it did (the app sees what this hop waits for).
    let timeout_value = parts
        .headers
        .get(wire::names::TIMEOUT)
        .filter(|v| v.to_str().ok().and_then(wire::parse_timeout).is_some())
        .cloned()
        .unwrap_or_else(|| app_request::timeout_value(timeout));
    app_request::write_map(
        &mut parts.headers,
        &app_request::Added {
            caller: &caller,
            forwarded,
            timeout: &timeout_value,
            grpc,
        },
    );
    let hop = ctx
        .tracer
        .hop(&mut parts.headers, Kind::Server, service, &parts.method);
    let path = pool::path_of(&parts.uri);
    // The request's deadline counts from its arrival, on every branch below. `None`: it
    // passed before the app's response head.
    let deadline = started + timeout;
    let sent = if !grpc && app_h1::takes(&parts, &incoming) {
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
            tokio::time::timeout_at(deadline, pools.local_h2c.request(req))
                .await
                .ok()
                .map(|r| {
                    r.map(|resp| resp.map(body::boxed))
                        .map_err(|e| (e.is_connect(), e.to_string()))
                })
        } else {
            parts.version = http::Version::HTTP_11;
            let req = Request::from_parts(parts, body::boxed(incoming));
            tokio::time::timeout_at(deadline, pools.local_http1_direct.request(req))
                .await
                .ok()
                .map(|r| {
                    r.map(|resp| resp.map(body::boxed))
                        .map_err(|e| (e.is_connect(), e.to_string()))
                })
        }
    };
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
    ctx.metrics.request(
        service,
        "inbound",
        (resp.status().as_u16(), http_errors::reason_of(&resp)),
        started.elapsed(),
    );
    logged(&ctx, entry, resp, started, read)
}

/// The access log entry of a peer's request to `spec` (the trace id is the request's own: the
/// hop keeps it).
fn entry(
    ctx: &Inbound,
    spec: &hostmesh_config::spec::InstanceSpec,
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
fn logged(
    ctx: &Inbound,
    entry: Option<Entry>,
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
    let pending = Pending::new(e, ctx.access_log.clone(), started.into_std(), read);
    resp.map(|b| body::boxed(Logged::new(b, pending)))
}
