//! Inbound opaque TCP: read the preface, connect to the named local instance, answer `OK` or
//! `ERR <reason>`, then relay.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use hostmesh_config::spec::Protocol;

use super::{Inbound, PeerIo, caller};
use crate::access_log::{Direction, Entry};
use hostmesh_wire::{self as wire, TcpPreface};

const PREFACE_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves one peer's TCP stream. `caller` is the host proven by its certificate (`None` with TLS
/// disabled).
pub async fn serve(
    ctx: Arc<Inbound>,
    mut peer_stream: impl PeerIo,
    peer: SocketAddr,
    caller: Option<Arc<str>>,
) {
    let line = match tokio::time::timeout(PREFACE_TIMEOUT, read_line(&mut peer_stream)).await {
        Ok(Some(line)) => line,
        _ => {
            let _ = peer_stream.write_all(b"ERR bad-preface\n").await;
            return;
        }
    };
    let preface = match TcpPreface::parse(&line) {
        Ok(p) => p,
        Err(reason) => {
            let _ = peer_stream
                .write_all(format!("ERR {reason}\n").as_bytes())
                .await;
            return;
        }
    };
    let Some(spec) = ctx
        .local
        .get(&preface.service, &preface.id)
        .filter(|s| s.protocol == Protocol::Tcp)
    else {
        let _ = peer_stream.write_all(b"ERR no-local-instance\n").await;
        return;
    };
    let caller = caller::of_preface(caller.as_ref(), &preface);
    let started = std::time::Instant::now();
    let log = |error: Option<&str>, (bytes_in, bytes_out): (u64, u64)| {
        if ctx.access_log.is_on() {
            let mut e = Entry::new(Direction::Inbound, "tcp", &spec.service);
            e.client = Some(peer);
            e.caller = caller.as_deref().map(str::to_owned);
            e.instance = Some(format!("{}/{}", ctx.host, spec.id));
            e.attempts = 1;
            (e.bytes_in, e.bytes_out) = (bytes_in, bytes_out);
            e.error = error.map(str::to_owned);
            e.duration = started.elapsed();
            ctx.access_log.log(e);
        }
    };
    if !ctx
        .policies
        .allows(&spec.service, caller.as_deref().unwrap_or(""))
    {
        ctx.metrics.policy_denied(&spec.service, "inbound");
        let _ = peer_stream.write_all(b"ERR forbidden\n").await;
        log(Some("forbidden"), (0, 0));
        return;
    }
    let timeout = ctx
        .settings
        .connect_timeout
        .min(preface.deadline.max(Duration::from_millis(1)));
    let app = match crate::connect::connect(spec.target, timeout).await {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(service = spec.service, "inbound tcp: {e}");
            let _ = peer_stream.write_all(b"ERR upstream-unreachable\n").await;
            log(Some("upstream-unreachable"), (0, 0));
            return;
        }
    };
    if peer_stream.write_all(b"OK\n").await.is_err() {
        return;
    }
    let mut app = app;
    ctx.metrics.tcp_opened(&spec.service, "inbound");
    tracing::trace!(%peer, caller = caller.as_deref(), service = spec.service, "inbound tcp relaying");
    let (up, down) = tokio::io::copy_bidirectional(&mut peer_stream, &mut app)
        .await
        .unwrap_or((0, 0));
    ctx.metrics.tcp_closed(&spec.service, "inbound", up, down);
    log(None, (up, down));
}

async fn read_line(s: &mut impl PeerIo) -> Option<Vec<u8>> {
    let mut line = Vec::with_capacity(64);
    loop {
        let b = s.read_u8().await.ok()?;
        if b == b'\n' {
            return Some(line);
        }
        if line.len() >= wire::TCP_PREFACE_MAX {
            return None;
        }
        line.push(b);
    }
}
