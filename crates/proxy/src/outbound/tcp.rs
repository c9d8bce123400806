//! Outbound opaque TCP: one instance per connection. Connect within `connect_timeout` (to a
//! same-host app directly, or to the peer agent, which answers `OK` once it reached the app);
//! on a failure or `ERR`, try another instance; then copy both ways with half-close. With nowhere
//! to go the app's connection is closed at once, never left hanging.

use std::net::SocketAddrV4;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::Outbound;
use super::route::{Endpoint, Route};
use crate::access_log::{Direction, Entry};
use hostmesh_tls::PeerStream;
use hostmesh_wire::{self as wire, TcpPreface};

/// Instances tried per connection before giving up (breakers count connect failures).
pub const MAX_ATTEMPTS: u32 = 3;

pub async fn serve(ctx: Arc<Outbound>, mut app: TcpStream, dst: SocketAddrV4) {
    let Some(route) = ctx.routes.load().get(dst) else {
        return;
    };
    let _ = app.set_nodelay(true);
    let started = Instant::now();
    let mut tried = Vec::new();
    let mut attempts = 0u32;
    // The access log's entry and what it needs at the end (`None` while logs are off).
    let mut entry = ctx.access_log.is_on().then(|| {
        let mut e = Entry::new(Direction::Outbound, "tcp", &route.service);
        e.client = app.peer_addr().ok();
        e.caller = Some(ctx.self_host.clone());
        e
    });
    let mut last = None;
    let log = |entry: Option<Entry>, attempts, last: Option<usize>, bytes, error: Option<&str>| {
        if let Some(mut e) = entry {
            e.attempts = attempts;
            e.instance = last
                .and_then(|i| route.endpoints.get(i))
                .map(|ep: &super::route::Endpoint| format!("{}/{}", ep.host, ep.id));
            (e.bytes_in, e.bytes_out) = bytes;
            e.error = error.map(str::to_owned);
            e.duration = started.elapsed();
            ctx.access_log.log(e);
        }
    };
    while attempts < MAX_ATTEMPTS {
        let Some(idx) = route.pick(&tried, |_| true) else {
            break;
        };
        let ep = &route.endpoints[idx];
        if ep.local && !ctx.policies.allows(&route.service, &ctx.self_host) {
            // The caller is this host, which every other instance would refuse as well.
            ctx.metrics.policy_denied(&route.service, "outbound");
            log(entry, attempts, Some(idx), (0, 0), Some("forbidden"));
            return;
        }
        let Some(admission) = route.group.admit(&ep.breaker, Instant::now()) else {
            // Another connection took this instance's half-open probe.
            tried.push(idx);
            continue;
        };
        attempts += 1;
        last = Some(idx);
        route.count_zone(&ctx.metrics, ep);
        let inflight = ep.stats.start();
        let attempt_started = Instant::now();
        match connect(&ctx, &route, ep, started).await {
            Ok(mut upstream) => {
                inflight.finish(attempt_started.elapsed());
                ctx.report(&route, admission, true);
                ctx.metrics.tcp_opened(&route.service, "outbound");
                let copied = tokio::io::copy_bidirectional(&mut app, &mut upstream).await;
                let (up, down) = copied.unwrap_or((0, 0));
                ctx.metrics.tcp_closed(&route.service, "outbound", up, down);
                log(entry.take(), attempts, last, (up, down), None);
                return;
            }
            Err(Refused::Forbidden) => {
                // The peer's policy refuses this host: not the instance's doing, and every other
                // instance would refuse too. Closing `app` is the answer.
                drop((admission, inflight));
                ctx.metrics.policy_denied(&route.service, "outbound");
                log(entry.take(), attempts, last, (0, 0), Some("forbidden"));
                return;
            }
            Err(Refused::Failed(e)) => {
                inflight.failed();
                ctx.report(&route, admission, false);
                tracing::debug!(
                    service = route.service,
                    host = ep.host,
                    "tcp connect failed: {e}"
                );
                tried.push(idx);
            }
        }
    }
    ctx.metrics.tcp_refused(&route.service, "outbound");
    let reason = if attempts == 0 {
        "no-endpoints"
    } else {
        "upstream-unreachable"
    };
    log(entry, attempts, last, (0, 0), Some(reason));
    // Dropping `app` closes it now.
}

/// Why an attempt did not connect.
enum Refused {
    /// Unreachable, or the peer could not reach its app: another instance may do.
    Failed(String),
    /// The peer's access policy refuses this host.
    Forbidden,
}

impl From<String> for Refused {
    fn from(why: String) -> Self {
        Refused::Failed(why)
    }
}

impl From<&str> for Refused {
    fn from(why: &str) -> Self {
        Refused::Failed(why.to_owned())
    }
}

async fn connect(
    ctx: &Outbound,
    route: &Route,
    ep: &Endpoint,
    started: Instant,
) -> Result<PeerStream, Refused> {
    let timeout = ctx.settings.connect_timeout;
    if ep.local {
        let spec = ctx
            .local
            .get(&route.service, &ep.id)
            .ok_or("no longer defined on this host")?;
        let s = crate::connect::connect(spec.target, timeout)
            .await
            .map_err(|e| e.to_string())?;
        return Ok(PeerStream::Plain(s));
    }
    let s = crate::connect::connect(ep.peer, timeout)
        .await
        .map_err(|e| e.to_string())?;
    let mut s = ctx
        .pools
        .get()
        .peer_tls
        .tcp(s, &ep.host)
        .await
        .map_err(|e| format!("{}: {e}", ep.peer))?;
    let remaining = ctx
        .settings
        .request_timeout
        .saturating_sub(started.elapsed());
    let preface = TcpPreface {
        service: route.service.clone(),
        id: ep.id.clone(),
        deadline: remaining,
        caller: Some(ctx.self_host.clone()),
    };
    s.write_all(preface.encode().as_bytes())
        .await
        .map_err(|e| format!("preface to {}: {e}", ep.peer))?;
    // The peer connects to its app within its own connect timeout, then answers.
    let line = tokio::time::timeout(timeout * 2, read_line(&mut s))
        .await
        .map_err(|_| format!("{}: no answer to the preface", ep.peer))??;
    match line.as_slice() {
        b"OK" => Ok(s),
        b"ERR forbidden" => Err(Refused::Forbidden),
        other => Err(format!("{}: {}", ep.peer, String::from_utf8_lossy(other)).into()),
    }
}

/// Reads one short line byte by byte: the app's first bytes may follow `OK` in the same segment
/// and must not be swallowed by a read-ahead buffer.
async fn read_line(s: &mut PeerStream) -> Result<Vec<u8>, String> {
    let mut line = Vec::with_capacity(8);
    loop {
        let b = s
            .read_u8()
            .await
            .map_err(|e| format!("reading the answer: {e}"))?;
        if b == b'\n' {
            return Ok(line);
        }
        if line.len() >= wire::TCP_PREFACE_MAX {
            return Err("answer too long".into());
        }
        line.push(b);
    }
}
