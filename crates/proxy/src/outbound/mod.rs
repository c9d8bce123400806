//! The outbound side: connections this host's apps make to VIPs. The capture hands each one over
//! with the VIP:port it was dialed at; the route table (rebuilt per catalog snapshot) says which
//! service that is and which instances may take it.

mod access;
mod attempts;
pub mod budget;
pub mod decision;
mod detect;
// pub(crate): the fuzz entry points (`crate::fuzzing`) drive these parsers directly.
pub(crate) mod h1;
mod http;
mod instance_request;
mod paired;
pub mod retry;
pub mod route;
pub(crate) mod strict_h1;
mod tcp;

use std::net::{IpAddr, SocketAddr, SocketAddrV4};
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use hostmesh_config::spec::Protocol;
use hostmesh_registrar::catalog::Snapshots;

use crate::body::{self, Lent, ProxyBody};
use crate::h2_client::RecvBody;
use crate::local::LocalInstances;
use crate::metrics::ProxyMetrics;
use crate::pool::WorkerPools;
use crate::settings::Settings;
use hostmesh_balance::EndpointKey;
use hostmesh_balance::breaker::Admission;
use paired::{Paired, PairedError};
use route::{Endpoint, Route, RouteTable};

pub use tcp::MAX_ATTEMPTS as TCP_MAX_ATTEMPTS;

/// Header values that are the same for every request this agent sends, made once.
#[derive(Debug, Clone)]
pub struct WireHeaders {
    /// This host's name: `x-hostmesh-caller` for a same-host app, `x-hostmesh-src` for a peer.
    pub caller: ::http::HeaderValue,
    /// `forwarded: for=<this host's address>` for a same-host app.
    pub forwarded: ::http::HeaderValue,
    /// Both as header lines, for the lean HTTP/1 path (`h1`).
    pub h1_lines: Vec<u8>,
}

impl WireHeaders {
    pub fn new(host: &str, addr: IpAddr) -> Option<Self> {
        let caller = ::http::HeaderValue::from_str(host).ok()?;
        let forwarded = ::http::HeaderValue::from_str(&format!("for={addr}")).ok()?;
        let h1_lines = crate::app_request::h1_lines(&caller, &forwarded);
        Some(WireHeaders {
            caller,
            forwarded,
            h1_lines,
        })
    }
}

/// The outbound side's state. Built once with [`Outbound::new`]; the admin endpoint reads it
/// through [`Outbound::route`], [`Outbound::request_timeout`], [`Outbound::readings`] and
/// [`Outbound::allows_same_host`], never through its fields.
#[derive(Debug)]
pub struct Outbound {
    pub(crate) self_host: String,
    /// `agent.zone`, for `locality = "zone"` routes.
    pub(crate) self_zone: Option<String>,
    pub(crate) wire_headers: WireHeaders,
    pub(crate) routes: ArcSwap<RouteTable>,
    /// Balancer stats, breakers and retry budgets, which outlive route tables.
    pub(crate) shared: Arc<route::Shared>,
    pub(crate) local: Arc<LocalInstances>,
    pub(crate) pools: WorkerPools,
    pub(crate) settings: Settings,
    pub(crate) metrics: ProxyMetrics,
    /// Access policy, checked here only for same-host instances (the peer checks the rest).
    pub(crate) policies: Arc<crate::access_table::Policies>,
    /// Fired when the agent starts draining (see `shutdown`).
    pub(crate) draining: CancellationToken,
    /// Spans per hop (off without an OTLP endpoint).
    pub(crate) tracer: crate::trace::Tracer,
    /// A line per request or connection (`[access_log]`).
    pub(crate) access_log: crate::access_log::AccessLog,
    /// The threads connections are served on.
    pub(crate) workers: Arc<crate::workers::Workers>,
}

/// What the agent's wiring hands the outbound side; the rest (route table, balancer and breaker
/// tables, retry budgets) starts empty and follows the catalog.
#[derive(Debug)]
pub struct OutboundParts {
    /// This host's name (`agent.host`).
    pub self_host: String,
    /// This host's zone (`agent.zone`).
    pub self_zone: Option<String>,
    pub wire_headers: WireHeaders,
    pub local: Arc<LocalInstances>,
    pub pools: WorkerPools,
    pub settings: Settings,
    pub metrics: ProxyMetrics,
    pub policies: Arc<crate::access_table::Policies>,
    pub draining: CancellationToken,
    pub tracer: crate::trace::Tracer,
    pub access_log: crate::access_log::AccessLog,
    pub workers: Arc<crate::workers::Workers>,
}

impl Outbound {
    pub fn new(parts: OutboundParts) -> Self {
        let OutboundParts {
            self_host,
            self_zone,
            wire_headers,
            local,
            pools,
            settings,
            metrics,
            policies,
            draining,
            tracer,
            access_log,
            workers,
        } = parts;
        Outbound {
            self_host,
            self_zone,
            wire_headers,
            routes: ArcSwap::default(),
            shared: Arc::default(),
            local,
            pools,
            settings,
            metrics,
            policies,
            draining,
            tracer,
            access_log,
            workers,
        }
    }

    /// The route a connection to `dst` takes now, if the current table has one.
    pub fn route(&self, dst: SocketAddrV4) -> Option<Arc<Route>> {
        self.routes.load().get(dst)
    }

    /// `agent.zone`: the zone `locality = "zone"` routes prefer.
    pub fn zone(&self) -> Option<&str> {
        self.self_zone.as_deref()
    }

    /// `[proxy] request_timeout`: the deadline when neither the client nor a route sets one.
    pub fn request_timeout(&self) -> std::time::Duration {
        self.settings.request_timeout
    }

    /// An instance's live balancer and breaker state from the shared tables, which outlive route
    /// tables (an instance no route lists any more keeps its readings until it leaves the
    /// catalog).
    pub fn readings(
        &self,
        key: &EndpointKey,
    ) -> (
        Option<Arc<hostmesh_balance::EndpointStats>>,
        Option<Arc<hostmesh_balance::breaker::Breaker>>,
    ) {
        (self.shared.stats.get(key), self.shared.breakers.get(key))
    }

    /// Whether `caller_host` may call `service` on this host (same-host instances are checked
    /// here; peers check the rest).
    pub fn allows_same_host(&self, service: &str, caller_host: &str) -> bool {
        self.policies.allows(service, caller_host)
    }
}

impl Outbound {
    /// Rebuilds the route table on every new snapshot until `cancel`.
    pub async fn follow(self: Arc<Self>, mut snapshots: Snapshots, cancel: CancellationToken) {
        loop {
            let snapshot = snapshots.borrow_and_update().clone();
            if let Some(snapshot) = snapshot {
                let table = RouteTable::build(
                    snapshot,
                    &self.self_host,
                    self.self_zone.as_deref(),
                    self.shared.clone(),
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
        self.workers.run(stream, move |stream| async move {
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

    /// Sends one attempt to an endpoint at `target`: on one of the app connection's own
    /// connections when it has them (`paired`), else through the shared pools. Also returns when
    /// the request could first go out, for the balancer: connection setup is not the endpoint's
    /// latency (see `pool`).
    async fn send(
        &self,
        route: &Route,
        ep: &Endpoint,
        target: SocketAddr,
        req: hyper::Request<Lent>,
        paired: Option<&Paired>,
    ) -> Result<(hyper::Response<ProxyBody>, Instant), SendError> {
        let now = Instant::now();
        if let Some(paired) = paired {
            let (resp, fresh) = paired
                .send(target, req, self.settings.connect_timeout)
                .await?;
            return Ok((resp.map(body::boxed), fresh.unwrap_or(now)));
        }
        let pools = self.pools.get();
        let resp = match (ep.local, route.protocol) {
            (false, _) => {
                let (resp, ready_at) = self.send_to_peer(target, req).await?;
                return Ok((resp.map(body::boxed), ready_at));
            }
            (true, Protocol::Grpc) => pools.local_h2c.request(req).await?.map(body::boxed),
            (true, _) => pools.local_http1.request(req).await?.map(body::boxed),
        };
        Ok((resp, self.ready_at(target, now)))
    }

    /// Sends one attempt to an instance on another host, on this worker's connection to its
    /// agent; returns as [`Outbound::send`] does.
    async fn send_to_peer(
        &self,
        target: SocketAddr,
        req: hyper::Request<Lent>,
    ) -> Result<(hyper::Response<RecvBody>, Instant), SendError> {
        let now = Instant::now();
        let resp = self.pools.get().peers.request(req).await?;
        Ok((resp, self.ready_at(target, now)))
    }

    /// When a request to `target` that started at `now` could first go out: later than `now`
    /// when it had to wait for a new connection.
    fn ready_at(&self, target: SocketAddr, now: Instant) -> Instant {
        self.pools
            .get()
            .connect_times
            .last(target)
            .filter(|t| *t > now)
            .unwrap_or(now)
    }
}

/// Why an attempt failed to get a response.
#[derive(Debug, thiserror::Error)]
enum SendError {
    #[error(transparent)]
    Pool(#[from] hyper_util::client::legacy::Error),
    #[error(transparent)]
    Paired(#[from] PairedError),
    #[error(transparent)]
    H2(#[from] crate::h2_client::H2Error),
}

impl SendError {
    /// Whether the app may have seen the request.
    fn failure(&self) -> retry::Failure {
        match self {
            SendError::Pool(e) => retry::classify_error(e),
            SendError::Paired(e) if e.never_reached() => retry::Failure::NeverReached,
            SendError::Paired(_) => retry::Failure::MayHaveReached,
            SendError::H2(e) if e.never_reached() => retry::Failure::NeverReached,
            SendError::H2(_) => retry::Failure::MayHaveReached,
        }
    }
}
