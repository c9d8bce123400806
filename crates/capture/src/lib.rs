//! How connections to VIPs reach the agent (docs/reference/http.md, "Capture").
//!
//! Two modes, one output: every captured connection is handed to a [`Handler`] together with the
//! VIP and port the app dialed and the connection permit it was accepted under.
//! - [`nft`]: one nftables table owned by the agent sends TCP for `vip_range` to the outbound
//!   listener; the dialed VIP:port comes back from SO_ORIGINAL_DST ([`original_dst`]). Apps may
//!   bind anything, the wildcard included. Needs CAP_NET_ADMIN.
//! - [`listen`]: a listener per VIP:port that follows the catalog snapshot; unprivileged, but an
//!   app holding the wildcard address on the same port blocks that one bind (reported in
//!   [`status`], retried, never fatal).
//!
//! [`Capture::start`] runs whichever mode the config names; [`Capture::shutdown`] stops it and
//! removes the nftables table.
//!
//! [`lockdown`] lives here too, for the nftables runner it shares with [`nft`] (`nft_cmd`): its
//! own table, which refuses direct connections from other hosts to this host's apps, with a
//! lifecycle of its own (it outlives the agent; capture's table does not).

pub mod listen;
pub mod lockdown;
pub mod nft;
mod nft_cmd;
pub mod original_dst;
pub mod status;
#[cfg(test)]
mod test_netns;

use std::io;
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use ipnet::Ipv4Net;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use hostmesh_registrar::catalog::Snapshots;

pub use listen::ListenCapture;
pub use nft::NftCapture;
pub use status::CaptureStatus;

/// Receives every captured connection: the stream, the VIP:port the app dialed, and the permit
/// that counts it against `max_connections` (drop it when the connection ends). Called on the
/// accept loop, so it must not block: spawn a task and return.
pub type Handler = Arc<dyn Fn(TcpStream, SocketAddrV4, OwnedSemaphorePermit) + Send + Sync>;

/// What every capture mode hands its connections to, shared by all its listeners.
#[derive(Clone)]
pub struct Handoff {
    pub handler: Handler,
    /// `proxy.max_connections` permits, shared with every other listener of the agent. A permit
    /// is taken before `accept`, so at the cap new connections wait in the kernel's backlog
    /// instead of being accepted and then starved.
    pub semaphore: Arc<Semaphore>,
    pub metrics: CaptureMetrics,
}

impl Handoff {
    pub fn new(handler: Handler, semaphore: Arc<Semaphore>, metrics: CaptureMetrics) -> Self {
        Handoff {
            handler,
            semaphore,
            metrics,
        }
    }
}

impl std::fmt::Debug for Handoff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handoff")
            .field("available_permits", &self.semaphore.available_permits())
            .finish_non_exhaustive()
    }
}

/// Capture's metric handles, created once and cloned into every listener.
#[derive(Debug, Clone, Default)]
pub struct CaptureMetrics {
    /// Failed attempts to bind a VIP:port (listen mode), every retry included.
    pub bind_failures: Counter,
    /// VIP:ports that currently cannot be bound (listen mode): the one to alert on.
    pub bind_problems: Gauge,
    /// Listening sockets capture holds: VIP:port listeners, or the one outbound listener (nft).
    pub listeners: Gauge,
    pub accept_errors: Counter,
    /// Redirected connections closed because their original destination was not a VIP.
    pub rejected: Counter,
    /// Times the nftables table had vanished (a firewall reload?) and was put back.
    pub table_reinstalls: Counter,
}

impl CaptureMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = CaptureMetrics::default();
        registry.register(
            "hostmesh_capture_bind_failures",
            "Failed attempts to listen on a VIP:port (listen capture), retries included",
            m.bind_failures.clone(),
        );
        registry.register(
            "hostmesh_capture_bind_problems",
            "VIP:ports that currently cannot be listened on (listen capture)",
            m.bind_problems.clone(),
        );
        registry.register(
            "hostmesh_capture_listeners",
            "Listening sockets held by capture (VIP:port listeners, or the nft outbound listener)",
            m.listeners.clone(),
        );
        registry.register(
            "hostmesh_capture_accept_errors",
            "Errors from accept on capture listeners",
            m.accept_errors.clone(),
        );
        registry.register(
            "hostmesh_capture_rejected",
            "Redirected connections closed because their original destination was not a VIP",
            m.rejected.clone(),
        );
        registry.register(
            "hostmesh_capture_table_reinstalls",
            "Times the agent's nftables table had vanished and was installed again",
            m.table_reinstalls.clone(),
        );
        m
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("nft not found: install nftables or set proxy.capture = \"listen\"")]
    NftNotFound,
    #[error(
        "nft capture needs CAP_NET_ADMIN (run the agent as root or grant it the capability), \
         or set proxy.capture = \"listen\": {0}"
    )]
    PermissionDenied(String),
    #[error("nft failed: {0}")]
    Nft(String),
    #[error("proxy.outbound_listen {0}: nft capture needs an IPv4 address")]
    NotIpv4(SocketAddr),
    #[error("proxy.outbound_listen {addr}: {source}")]
    Listen { addr: SocketAddr, source: io::Error },
}

/// How often nft mode checks that its table is still there.
const TABLE_CHECK_INTERVAL: Duration = Duration::from_secs(10);

/// A running capture, whichever the mode.
#[derive(Debug)]
pub struct Capture {
    status: CaptureStatus,
    cancel: CancellationToken,
    accept: Option<JoinHandle<()>>,
    /// nft: the task that owns the table and removes it on the way out.
    keeper: Option<JoinHandle<Result<(), CaptureError>>>,
    listen: Option<ListenCapture>,
}

impl Capture {
    /// Starts the configured mode and returns once it can capture.
    ///
    /// nft: binds `outbound_listen` first (so no redirected connection ever meets a closed port),
    /// then replaces any leftover table with a fresh one; an error here means nothing is
    /// installed. listen: returns at once; listeners follow `snapshots` from now on.
    ///
    /// Stops when `cancel` fires or on [`Capture::shutdown`].
    pub async fn start(
        mode: hostmesh_config::Capture,
        vip_range: Ipv4Net,
        outbound_listen: SocketAddr,
        snapshots: Snapshots,
        handoff: Handoff,
        cancel: &CancellationToken,
    ) -> Result<Capture, CaptureError> {
        let cancel = cancel.child_token();
        match mode {
            hostmesh_config::Capture::Nft => {
                let listener = bind(outbound_listen).map_err(|source| CaptureError::Listen {
                    addr: outbound_listen,
                    source,
                })?;
                let table = NftCapture::install(vip_range, outbound_listen).await?;
                let status = CaptureStatus::new("nft");
                tracing::info!(%vip_range, outbound = %outbound_listen, "nft capture installed");
                let accept = tokio::spawn(NftCapture::serve(
                    listener,
                    vip_range,
                    handoff.clone(),
                    cancel.clone(),
                ));
                let keeper = tokio::spawn(table.keep(
                    TABLE_CHECK_INTERVAL,
                    status.clone(),
                    handoff.metrics,
                    cancel.clone(),
                ));
                Ok(Capture {
                    status,
                    cancel,
                    accept: Some(accept),
                    keeper: Some(keeper),
                    listen: None,
                })
            }
            hostmesh_config::Capture::Listen => {
                let listen = ListenCapture::start(snapshots, handoff, cancel.clone());
                Ok(Capture {
                    status: listen.status(),
                    cancel,
                    accept: None,
                    keeper: None,
                    listen: Some(listen),
                })
            }
        }
    }

    /// The shared handle `/status` reads problems from.
    pub fn status(&self) -> CaptureStatus {
        self.status.clone()
    }

    /// Stops accepting, closes every capture listener and removes the nftables table.
    /// Connections already handed over are not touched.
    pub async fn shutdown(mut self) -> Result<(), CaptureError> {
        self.cancel.cancel();
        if let Some(accept) = self.accept.take() {
            let _ = accept.await;
        }
        if let Some(listen) = self.listen.take() {
            listen.stop().await;
        }
        match self.keeper.take() {
            Some(keeper) => keeper
                .await
                .unwrap_or_else(|e| Err(CaptureError::Nft(format!("table keeper: {e}")))),
            None => Ok(()),
        }
    }
}

/// A listening socket with SO_REUSEADDR, so a restarted agent rebinds at once despite
/// connections of its predecessor in TIME_WAIT. (It does not let us share a port with a
/// listening wildcard socket on Linux: that still fails with EADDRINUSE.)
pub(crate) fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Counts one listening socket in the `listeners` gauge for as long as it lives.
pub(crate) struct Held(Gauge);

impl Held {
    pub(crate) fn new(gauge: &Gauge) -> Self {
        gauge.inc();
        Held(gauge.clone())
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Pause after an accept error that means "out of resources" (file descriptors, memory): trying
/// again at once would spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The accept loop both modes share: a permit first, then accept, then `on_conn`. Returns when
/// `cancel` fires or the semaphore is closed; the listener is closed by dropping it.
pub(crate) async fn accept_loop<F>(
    listener: TcpListener,
    handoff: &Handoff,
    cancel: &CancellationToken,
    mut on_conn: F,
) where
    F: FnMut(TcpStream, SocketAddr, OwnedSemaphorePermit),
{
    loop {
        let permit = tokio::select! {
            biased;
            () = cancel.cancelled() => return,
            permit = handoff.semaphore.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_closed) => return,
            },
        };
        let accepted = tokio::select! {
            biased;
            () = cancel.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                // Proxied bytes should leave as soon as they arrive; Nagle only adds latency.
                let _ = stream.set_nodelay(true);
                on_conn(stream, peer, permit);
            }
            Err(e) => {
                handoff.metrics.accept_errors.inc();
                if hostmesh_listen::descriptors::out_of_resources(&e) {
                    hostmesh_listen::descriptors::exhaustion().record("outbound", &e);
                    tokio::select! {
                        () = cancel.cancelled() => return,
                        () = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                    }
                } else {
                    // One connection's problem (reset or aborted before we got to it).
                    tracing::debug!("accept: {e}");
                }
            }
        }
    }
}

/// "5 s" or "200 ms", for messages an operator reads.
pub(crate) fn human(d: Duration) -> String {
    if d.subsec_millis() == 0 && d.as_secs() > 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{} ms", d.as_millis())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn metric_names() {
        let mut registry = Registry::default();
        let m = CaptureMetrics::register(&mut registry);
        m.bind_failures.inc();
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for name in [
            "hostmesh_capture_bind_failures_total 1",
            "hostmesh_capture_listeners 0",
            "hostmesh_capture_accept_errors_total 0",
            "hostmesh_capture_bind_problems 0",
        ] {
            assert!(text.contains(name), "{name} missing from\n{text}");
        }
    }

    #[test]
    fn human_durations() {
        assert_eq!(human(Duration::from_secs(5)), "5 s");
        assert_eq!(human(Duration::from_millis(200)), "200 ms");
    }

    #[test]
    fn error_messages_say_what_to_do() {
        assert_eq!(
            CaptureError::NftNotFound.to_string(),
            "nft not found: install nftables or set proxy.capture = \"listen\""
        );
        let e = CaptureError::PermissionDenied("Operation not permitted".into()).to_string();
        assert!(e.contains("CAP_NET_ADMIN"), "{e}");
    }
}
