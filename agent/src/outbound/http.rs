//! Outbound HTTP: an app's connection to a VIP, served with hyper (HTTP/1.x or h2, detected from
//! the first bytes). Each request goes to one instance picked by the balancer: a same-host
//! instance directly at its `target`, any other through its host's agent over HTTP/2. Bodies
//! stream both ways. A request that provably never left this host (the connect failed before its
//! body was read, or the peer says it has no such instance) is tried on another instance.

use std::convert::Infallible;
use std::net::SocketAddrV4;
use std::sync::Arc;
use std::time::Duration;

use http::header::{HOST, HeaderValue};
use http::request::Parts;
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpStream;
use tokio::time::Instant;

use hostmesh_registrar::spec::Protocol;

use super::Outbound;
use super::route::{Endpoint, Route};
use crate::body::{self, ProxyBody};
use crate::headers;
use crate::http_errors::{self, Reason};
use crate::wire;

/// Attempts per request: the first pick plus failovers for requests that never left the host.
const MAX_ATTEMPTS: usize = 3;

/// Serves one captured app connection until it closes.
pub async fn serve(ctx: Arc<Outbound>, stream: TcpStream, dst: SocketAddrV4) {
    let _ = stream.set_nodelay(true);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .max_headers(ctx.settings.max_headers)
        .max_buf_size(ctx.settings.max_header_bytes.max(8192))
        // A client that trickles its request head is cut off (slowloris).
        .header_read_timeout(Some(ctx.settings.header_read_timeout));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(ctx.settings.max_header_bytes).unwrap_or(u32::MAX));
    let svc = service_fn(move |req| {
        let ctx = ctx.clone();
        async move { Ok::<_, Infallible>(handle(ctx, dst, req).await) }
    });
    if let Err(e) = builder.serve_connection(TokioIo::new(stream), svc).await {
        tracing::debug!(%dst, "outbound connection ended: {e}");
    }
}

async fn handle(
    ctx: Arc<Outbound>,
    dst: SocketAddrV4,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    let started = Instant::now();
    let route = ctx.routes.load().get(dst);
    let grpc_client = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    let Some(route) = route else {
        return http_errors::response(Reason::NoEndpoints, grpc_client);
    };
    let resp = forward(&ctx, &route, req, started).await;
    ctx.metrics.request(
        &route.service,
        "outbound",
        resp.status().as_u16(),
        started.elapsed(),
    );
    resp
}

/// The deadline for a request: the client's `x-hostmesh-timeout` or `grpc-timeout`, whichever is
/// shortest, else the configured `request_timeout`.
fn deadline_for(parts: &Parts, default: Duration, grpc: bool) -> Duration {
    let mut timeout = default;
    if let Some(t) = parts
        .headers
        .get(wire::TIMEOUT)
        .and_then(|v| v.to_str().ok())
        .and_then(wire::parse_timeout)
    {
        timeout = timeout.min(t);
    }
    if grpc
        && let Some(t) = parts
            .headers
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_grpc_timeout)
    {
        timeout = timeout.min(t);
    }
    timeout
}

/// gRPC's `grpc-timeout`: up to 8 digits and a unit (H, M, S, m, u, n).
fn parse_grpc_timeout(v: &str) -> Option<Duration> {
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

async fn forward(
    ctx: &Outbound,
    route: &Route,
    req: Request<Incoming>,
    started: Instant,
) -> Response<ProxyBody> {
    let grpc = route.protocol == Protocol::Grpc;
    let (mut parts, incoming) = req.into_parts();
    let deadline = started + deadline_for(&parts, ctx.settings.request_timeout, grpc);
    headers::strip_hop_by_hop(&mut parts.headers);
    headers::strip_client_internal(&mut parts.headers);
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
    let mut body = body::boxed(incoming);
    let mut tried: Vec<usize> = Vec::new();
    let mut last = Reason::NoEndpoints;
    for _ in 0..MAX_ATTEMPTS {
        let Some(idx) = route.pick(&tried) else {
            break;
        };
        let ep = &route.endpoints[idx];
        let now = Instant::now();
        if now >= deadline {
            return http_errors::response(Reason::DeadlineExceeded, grpc);
        }
        let (lent, reclaim) = body::lend(body);
        let req = match build(ctx, route, ep, &parts, deadline - now, lent) {
            Some(r) => r,
            None => {
                // A same-host instance that is no longer defined here: try another.
                tried.push(idx);
                last = Reason::NoLocalInstance;
                body = match reclaim.take() {
                    Some(b) => b,
                    None => return http_errors::response(last, grpc),
                };
                continue;
            }
        };
        let inflight = ep.stats.start();
        let sent = tokio::time::timeout_at(deadline, ctx.send(route, ep, req)).await;
        match sent {
            Err(_) => {
                inflight.failed();
                return http_errors::response(Reason::DeadlineExceeded, grpc);
            }
            Ok(Ok(resp)) => {
                let refused_by_peer = resp
                    .headers()
                    .get(wire::ERROR)
                    .is_some_and(|v| v == Reason::NoLocalInstance.as_str());
                if refused_by_peer && let Some(b) = reclaim.take() {
                    inflight.failed();
                    tried.push(idx);
                    last = Reason::NoLocalInstance;
                    body = b;
                    continue;
                }
                // Connection setup is not the endpoint's latency (see `pool`).
                let target = req_target(ctx, route, ep);
                let sent = ctx
                    .pools
                    .connect_times
                    .last(&target)
                    .filter(|t| *t > now)
                    .unwrap_or(now);
                inflight.finish(sent.elapsed());
                let (mut rparts, rbody) = resp.into_parts();
                headers::strip_hop_by_hop(&mut rparts.headers);
                return Response::from_parts(rparts, body::boxed(rbody));
            }
            Ok(Err(e)) if e.is_connect() => {
                inflight.failed();
                tracing::debug!(
                    service = route.service,
                    host = ep.host,
                    "connect failed: {e}"
                );
                tried.push(idx);
                last = Reason::UpstreamUnreachable;
                body = match reclaim.take() {
                    Some(b) => b,
                    None => return http_errors::response(last, grpc),
                };
            }
            Ok(Err(e)) => {
                inflight.failed();
                tracing::debug!(
                    service = route.service,
                    host = ep.host,
                    "request failed: {e}"
                );
                return http_errors::response(Reason::UpstreamReset, grpc);
            }
        }
    }
    http_errors::response(last, grpc)
}

/// The address an attempt connects to, as the connector records it.
fn req_target(ctx: &Outbound, route: &Route, ep: &Endpoint) -> String {
    if ep.local {
        ctx.local
            .get(&route.service, &ep.id)
            .map(|s| s.target.to_string())
            .unwrap_or_default()
    } else {
        ep.peer.to_string()
    }
}

/// The request for one attempt: to the app directly (same host) or to the peer agent.
fn build(
    ctx: &Outbound,
    route: &Route,
    ep: &Endpoint,
    parts: &Parts,
    remaining: Duration,
    body: body::Lent,
) -> Option<Request<body::Lent>> {
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut req = Request::new(body);
    *req.method_mut() = parts.method.clone();
    *req.headers_mut() = parts.headers.clone();
    let h = req.headers_mut();
    h.insert(
        wire::TIMEOUT,
        HeaderValue::from_str(&wire::format_timeout(remaining)).ok()?,
    );
    let target = if ep.local {
        let spec = ctx.local.get(&route.service, &ep.id)?;
        h.insert(wire::CALLER, HeaderValue::from_str(&ctx.self_host).ok()?);
        h.insert(
            "forwarded",
            HeaderValue::from_str(&format!("for={}", ctx.self_addr)).ok()?,
        );
        headers::strip_wire(h);
        if route.protocol == Protocol::Grpc {
            h.remove(HOST);
        }
        spec.target
    } else {
        h.insert(
            wire::DST,
            HeaderValue::from_str(&format!("{}/{}", route.service, ep.id)).ok()?,
        );
        h.insert(wire::SRC, HeaderValue::from_str(&ctx.self_host).ok()?);
        h.insert(
            wire::VERSION_HEADER,
            HeaderValue::from_static(wire::VERSION),
        );
        ep.peer
    };
    *req.uri_mut() = Uri::builder()
        .scheme("http")
        .authority(target.to_string())
        .path_and_query(path)
        .build()
        .ok()?;
    Some(req)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse() {
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("1S"), Some(Duration::from_secs(1)));
        assert_eq!(parse_grpc_timeout("123456789S"), None);
        assert_eq!(parse_grpc_timeout("S"), None);
        assert_eq!(parse_grpc_timeout(""), None);
    }
}
