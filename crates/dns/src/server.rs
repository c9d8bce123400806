//! The DNS shim's server: binds UDP and TCP on `[dns] listen`, follows the catalog, and runs the
//! listener tasks until cancelled.
//!
//! Limits, all global because every local client arrives from 127.0.0.1 and a per-source limit
//! would throttle the whole host:
//! - mesh names are answered inline by the task that read the packet (microseconds, no
//!   allocation of a task), so they never queue;
//! - forwarded queries hold one of [`MAX_IN_FLIGHT`] slots while waiting for upstream; with
//!   none free, UDP queries are dropped (the client retries) and TCP ones get SERVFAIL;
//! - TCP: at most [`MAX_TCP_CONNECTIONS`] connections (more are closed at once), see `tcp.rs`.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hostmesh_registrar::catalog::Snapshots;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::forward::Forwarder;
use super::metrics::DnsMetrics;
use super::shared::Shared;
use super::table::{Table, Zone};
use super::upstream;
use hostmesh_config::{DnsSection, Upstream};

/// Forwarded queries waiting on upstream at once, over UDP and TCP together. Each holds an
/// upstream socket, so this also bounds the file descriptors the shim uses.
pub(crate) const MAX_IN_FLIGHT: usize = 512;
/// Open TCP connections at once.
pub const MAX_TCP_CONNECTIONS: usize = 256;
/// Tasks reading the UDP socket (each answers mesh names inline).
const MAX_UDP_WORKERS: usize = 4;
/// A port-0 listen picks the UDP port first and then needs the same TCP port free.
const PORT_PICK_TRIES: usize = 20;

/// The DNS shim, bound and ready to [`run`](DnsServer::run).
#[derive(Debug)]
pub struct DnsServer {
    udp: UdpSocket,
    tcp: TcpListener,
    local_addr: SocketAddr,
    zone: Arc<Zone>,
    forwarder: Option<Forwarder>,
    metrics: DnsMetrics,
    pub(crate) limits: Limits,
}

/// The bounds [`DnsServer::run`] enforces; the constants above, smaller in tests.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) in_flight: usize,
    pub(crate) tcp_connections: usize,
}

impl DnsServer {
    /// Binds UDP and TCP on `section.listen` now, so a bind failure is reported at agent start
    /// (the agent exits 1 with it). Reads `/etc/resolv.conf` now when `upstream` has `system`.
    pub async fn bind(section: &DnsSection, metrics: DnsMetrics) -> io::Result<DnsServer> {
        let resolv_conf = if section.upstream.contains(&Upstream::System) {
            match std::fs::read_to_string(upstream::RESOLV_CONF) {
                Ok(text) => Some(text),
                Err(e) => {
                    tracing::warn!("dns: cannot read {}: {e}", upstream::RESOLV_CONF);
                    None
                }
            }
        } else {
            None
        };
        Self::bind_with(section, metrics, resolv_conf.as_deref()).await
    }

    pub(crate) async fn bind_with(
        section: &DnsSection,
        metrics: DnsMetrics,
        resolv_conf: Option<&str>,
    ) -> io::Result<DnsServer> {
        let (udp, tcp) = bind_pair(section.listen).await?;
        let local_addr = udp.local_addr()?;

        let resolved = upstream::resolve(&section.upstream, resolv_conf, local_addr);
        for ours in &resolved.dropped_self {
            tracing::info!("dns: not forwarding to {ours}: that is this shim (it would loop)");
        }
        if resolved.system_empty {
            tracing::warn!(
                "dns: upstream \"system\": {} names no nameserver besides this shim{}",
                upstream::RESOLV_CONF,
                if resolved.servers.is_empty() {
                    format!("; names outside {:?} will get REFUSED", section.domain)
                } else {
                    String::new()
                }
            );
        }
        let forwarder = if resolved.servers.is_empty() {
            None
        } else {
            Some(Forwarder::new(resolved.servers).map_err(io::Error::other)?)
        };
        let mut zone = Zone::new(&section.domain, section.ttl, forwarder.is_some())?;
        if section.consul {
            zone = zone.with_consul();
        }
        let zone = Arc::new(zone);
        tracing::info!(
            "dns: listening on {local_addr} (udp, tcp) for {}{}; other names {}",
            zone.domain,
            if zone.consul() { " and consul." } else { "" },
            match &forwarder {
                Some(f) => format!("forwarded to {:?}", f.servers()),
                None => "refused".to_owned(),
            }
        );
        Ok(DnsServer {
            udp,
            tcp,
            local_addr,
            zone,
            forwarder,
            metrics,
            limits: Limits {
                in_flight: MAX_IN_FLIGHT,
                tcp_connections: MAX_TCP_CONNECTIONS,
            },
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `cancel`; swaps its lookup table whenever `snapshots` changes.
    pub async fn run(self, mut snapshots: Snapshots, cancel: CancellationToken) {
        let initial = snapshots.borrow_and_update().clone();
        let shared = Arc::new(Shared {
            table: ArcSwap::from_pointee(Table::build(self.zone.clone(), initial.as_deref())),
            forwarder: self.forwarder,
            metrics: self.metrics,
            in_flight: Arc::new(Semaphore::new(self.limits.in_flight)),
        });
        let udp = Arc::new(self.udp);
        let mut tasks = JoinSet::new();
        tasks.spawn(follow_catalog(snapshots, self.zone, shared.clone()));
        let workers = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, MAX_UDP_WORKERS);
        for _ in 0..workers {
            tasks.spawn(super::udp::serve(
                udp.clone(),
                shared.clone(),
                cancel.clone(),
            ));
        }
        tasks.spawn(super::tcp::accept(
            self.tcp,
            self.limits.tcp_connections,
            shared,
            cancel.clone(),
        ));

        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                Some(done) = tasks.join_next() => {
                    if let Err(e) = done
                        && e.is_panic()
                    {
                        tracing::error!("dns: a listener task panicked: {e}");
                    }
                }
            }
        }
        tasks.shutdown().await;
        tracing::debug!("dns: stopped");
    }
}

/// Rebuilds the table on every new snapshot; queries keep reading the previous one until the
/// swap. When the catalog's sender goes away the last table stays.
async fn follow_catalog(mut snapshots: Snapshots, zone: Arc<Zone>, shared: Arc<Shared>) {
    while snapshots.changed().await.is_ok() {
        let snapshot = snapshots.borrow_and_update().clone();
        let table = Table::build(zone.clone(), snapshot.as_deref());
        shared.table.store(Arc::new(table));
    }
}

/// UDP and TCP on the same address; with port 0, the same port for both.
async fn bind_pair(listen: SocketAddr) -> io::Result<(UdpSocket, TcpListener)> {
    let context = |proto: &str, e: io::Error| {
        io::Error::new(e.kind(), format!("dns listen {listen} ({proto}): {e}"))
    };
    if listen.port() != 0 {
        let udp = UdpSocket::bind(listen)
            .await
            .map_err(|e| context("udp", e))?;
        let tcp = TcpListener::bind(listen)
            .await
            .map_err(|e| context("tcp", e))?;
        return Ok((udp, tcp));
    }
    let mut last = None;
    for _ in 0..PORT_PICK_TRIES {
        let udp = UdpSocket::bind(listen)
            .await
            .map_err(|e| context("udp", e))?;
        match TcpListener::bind(udp.local_addr()?).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => last = Some(e),
            Err(e) => return Err(context("tcp", e)),
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Err(context(
        "tcp",
        last.unwrap_or_else(|| io::Error::from(io::ErrorKind::AddrInUse)),
    ))
}
