//! The outbound side: connections this host's apps make to VIPs. The capture hands each one over
//! with the VIP:port it was dialed at; the route table (rebuilt per catalog snapshot) says which
//! service that is and which instances may take it.

mod http;
pub mod retry;
pub mod route;
mod tcp;

use std::net::{IpAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::body::Incoming;
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

use hostmesh_registrar::catalog::Snapshots;
use hostmesh_registrar::spec::Protocol;

use crate::balance::EndpointTable;
use crate::body::Lent;
use crate::breaker::{Admission, BreakerTable};
use crate::local::LocalInstances;
use crate::metrics::ProxyMetrics;
use crate::pool::Pools;
use route::{Endpoint, Route, RouteTable};

/// The `[proxy]` settings the data path uses.
#[derive(Debug, Clone)]
pub struct Settings {
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub idle_timeout: Duration,
    pub header_read_timeout: Duration,
    pub max_headers: usize,
    pub max_header_bytes: usize,
}

/// Header values that are the same for every request this agent sends, made once.
#[derive(Debug, Clone)]
pub struct WireHeaders {
    /// This host's name: `x-hostmesh-caller` for a same-host app, `x-hostmesh-src` for a peer.
    pub caller: ::http::HeaderValue,
    /// `forwarded: for=<this host's address>` for a same-host app.
    pub forwarded: ::http::HeaderValue,
}

impl WireHeaders {
    pub fn new(host: &str, addr: IpAddr) -> Option<Self> {
        Some(WireHeaders {
            caller: ::http::HeaderValue::from_str(host).ok()?,
            forwarded: ::http::HeaderValue::from_str(&format!("for={addr}")).ok()?,
        })
    }
}

#[derive(Debug)]
pub struct Outbound {
    pub self_host: String,
    pub wire_headers: WireHeaders,
    pub routes: ArcSwap<RouteTable>,
    pub stats: EndpointTable,
    pub breakers: BreakerTable,
    pub budgets: retry::Budgets,
    pub local: Arc<LocalInstances>,
    pub pools: Pools,
    pub settings: Settings,
    pub metrics: ProxyMetrics,
}

impl Outbound {
    /// Rebuilds the route table on every new snapshot until `cancel`.
    pub async fn follow(self: Arc<Self>, mut snapshots: Snapshots, cancel: CancellationToken) {
        loop {
            let snapshot = snapshots.borrow_and_update().clone();
            if let Some(snapshot) = snapshot {
                let table = RouteTable::build(
                    &snapshot,
                    &self.self_host,
                    &self.stats,
                    &self.breakers,
                    &self.metrics,
                    &self.budgets,
                );
                self.routes.store(Arc::new(table));
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                r = snapshots.changed() => if r.is_err() { return },
            }
        }
    }

    /// Takes one captured connection: serves it on its own task, holding `permit` (the
    /// `max_connections` bound) until it closes.
    pub fn accept(
        self: &Arc<Self>,
        stream: TcpStream,
        dst: SocketAddrV4,
        permit: OwnedSemaphorePermit,
    ) {
        let ctx = self.clone();
        tokio::spawn(async move {
            let route = ctx.routes.load().get(dst);
            match route.map(|r| r.protocol) {
                Some(Protocol::Tcp) => tcp::serve(ctx, stream, dst).await,
                Some(Protocol::Http | Protocol::Grpc) => http::serve(ctx, stream, dst).await,
                // Nothing behind this VIP:port: close at once rather than leave the app hanging.
                None => drop(stream),
            }
            drop(permit);
        });
    }

    /// Reports an attempt's result to the endpoint's breaker, counting ejections.
    fn report(&self, route: &Route, admission: Admission, ok: bool) {
        let outcome = if ok {
            admission.success()
        } else {
            admission.failure()
        };
        if outcome.is_ejection() {
            self.metrics.ejected(&route.service);
        }
    }

    /// Sends one attempt to an endpoint.
    async fn send(
        &self,
        route: &Route,
        ep: &Endpoint,
        req: hyper::Request<Lent>,
    ) -> Result<hyper::Response<Incoming>, hyper_util::client::legacy::Error> {
        if !ep.local {
            return self.pools.peers.request(req).await;
        }
        let client = match route.protocol {
            Protocol::Grpc => &self.pools.local_h2c,
            _ => &self.pools.local_http1,
        };
        client.request(req).await
    }
}
