//! The admin endpoint's listener, bounded like every other: at most [`MAX_CONNECTIONS`] at once
//! (at the cap, the connection idle longest is closed to make room, so held connections cannot
//! lock a health probe out), a request head within [`HEADER_READ_TIMEOUT`] (which also closes a
//! keep-alive connection that sends no next request), small heads only. axum's own `serve` has
//! none of these: 2,000 slowloris connections stayed open.
//!
//! When descriptors run out anyway, the idlest admin connection is closed to free one; with none
//! to close, one descriptor held in reserve is given up to accept and answer one connection at a
//! time, so `/ready` and `/live` still answer a probe while the agent is short of descriptors.

use std::convert::Infallible;
use std::fs::File;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use hostmesh_listen::descriptors::{exhaustion, out_of_resources};
use hostmesh_listen::idle::{BusyBody, Capped, Idle};
use hostmesh_listen::shutdown::Graceful;

/// Admin connections at once: probes, scrapes and the command line need a handful.
pub const MAX_CONNECTIONS: usize = 128;
/// A client must send a whole request head within this (slowloris), and a next one within
/// this on a kept-alive connection.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// A request is a path and a few headers.
const MAX_HEADERS: usize = 32;
/// Also hyper's read buffer, which must be at least 8 KiB.
const MAX_HEADER_BYTES: usize = 16 * 1024;
/// The connection served on the reserve descriptor must be done within this (a probe takes
/// milliseconds; the accept loop waits meanwhile).
const RESERVE_TIMEOUT: Duration = Duration::from_secs(1);
/// After running out of descriptors, wait this long before accepting again.
const EXHAUSTED_PAUSE: Duration = Duration::from_millis(50);

/// Serves `app` on `listener` until `cancel`.
pub async fn serve(listener: TcpListener, app: Router, cancel: CancellationToken) {
    let open = Capped::new(MAX_CONNECTIONS);
    let mut reserve = File::open("/dev/null").ok();
    loop {
        let accepted = tokio::select! {
            () = cancel.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                let Some((slot, _)) = open.admit(HEADER_READ_TIMEOUT, &cancel) else {
                    tracing::debug!(%peer, "admin: {MAX_CONNECTIONS} connections busy; closing a new one");
                    continue;
                };
                let (app, cancel) = (app.clone(), cancel.clone());
                tokio::spawn(async move {
                    // Evicted (idle, so nothing is lost): dropped, which closes it.
                    slot.closed
                        .run_until_cancelled(connection(
                            stream, peer, app, &cancel, &slot.idle, true,
                        ))
                        .await;
                });
            }
            Err(e) if out_of_resources(&e) => {
                exhaustion().record("admin", &e);
                // Free an idle admin connection's descriptor; else give up the reserve for one
                // connection (a probe, most likely), answered here before the next accept, and
                // take the reserve back.
                if !open.evict_idlest()
                    && reserve.take().is_some()
                    && let Ok(Ok((stream, peer))) =
                        tokio::time::timeout(EXHAUSTED_PAUSE, listener.accept()).await
                {
                    let idle = Idle::new(RESERVE_TIMEOUT);
                    // One request, then the reserve is taken back.
                    let serving = connection(stream, peer, app.clone(), &cancel, &idle, false);
                    let _ = tokio::time::timeout(RESERVE_TIMEOUT, serving).await;
                }
                reserve = reserve.or_else(|| File::open("/dev/null").ok());
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep(EXHAUSTED_PAUSE) => {}
                }
            }
            // One connection's own problem (reset before it was accepted).
            Err(e) => tracing::debug!("admin accept: {e}"),
        }
    }
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    cancel: &CancellationToken,
    idle: &Idle,
    keep_alive: bool,
) {
    let activity = idle.clone();
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        let busy = activity.busy();
        // What axum's `into_make_service_with_connect_info` would add: `/maint` is
        // loopback-only and reads the peer from here.
        req.extensions_mut().insert(ConnectInfo(peer));
        let app = app.clone();
        async move {
            let resp = app.oneshot(req).await;
            let resp = resp.unwrap_or_else(|never| match never {});
            Ok::<_, Infallible>(resp.map(|b| BusyBody::new(b, busy)))
        }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(Some(HEADER_READ_TIMEOUT))
        .max_headers(MAX_HEADERS)
        .max_buf_size(MAX_HEADER_BYTES)
        .keep_alive(keep_alive);
    let conn = builder.serve_connection(TokioIo::new(stream), svc);
    let conn = Graceful::new(conn, cancel, |c| c.graceful_shutdown());
    if let Err(e) = conn.await {
        tracing::debug!(%peer, "admin connection ended: {e}");
    }
}
