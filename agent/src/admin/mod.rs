//! The admin endpoint: the status page `/`, `/live`, `/ready`, `/status`, `/traffic`, `/explain`,
//! `/metrics` (docs/reference/admin.md), and the loopback-only `POST /maint/...`. No GET changes
//! state.

pub mod explain;
mod listener;
mod maint;
mod page;
pub mod status;
pub mod traffic;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use hostmesh_registrar::catalog::Catalog;
use hostmesh_registrar::register::{Maintenance, RegistrarStatus};

use crate::metrics::Metrics;

pub use listener::{HEADER_READ_TIMEOUT, MAX_CONNECTIONS};

/// What the admin handlers read. Shared, read-only apart from the readiness flag.
#[derive(Debug)]
pub struct AdminState {
    pub host: String,
    /// `[dns] domain`, to read names such as `orders.mesh` (`/explain`).
    pub domain: String,
    pub etcd_endpoints: Vec<String>,
    pub catalog: Catalog,
    pub registrar: Arc<RegistrarStatus>,
    /// The operator's maintenance switch (`POST /maint`).
    pub maintenance: Arc<Maintenance>,
    /// This host's instances, to resolve `maint SERVICE` to instance ids.
    pub local: Arc<hostmesh_proxy::local::LocalInstances>,
    pub metrics: Arc<Metrics>,
    pub capture: hostmesh_capture::CaptureStatus,
    /// What lockdown locks now, for `/status`.
    pub lockdown: Arc<hostmesh_capture::lockdown::Lockdown>,
    /// Live balancer state per endpoint (EWMA, in flight) for `/status`.
    pub stats: Arc<hostmesh_proxy::outbound::Outbound>,
    /// Unparsable access policies are problems in `/status`.
    pub policies: Arc<hostmesh_proxy::access_table::Policies>,
    /// Set once every listener of the agent is up.
    pub listeners_up: AtomicBool,
    /// Set when the connection caps may need more descriptors than `nofile` allows.
    pub descriptors: Option<String>,
    /// The last minute of traffic samples, taken only when `/traffic` is asked (the status page).
    pub traffic: traffic::History,
}

/// Serves the admin endpoint on an already bound listener until `cancel`.
pub async fn serve(listener: TcpListener, state: Arc<AdminState>, cancel: CancellationToken) {
    let app = Router::new()
        .route("/", get(page::page))
        .route("/live", get(|| async { "live\n" }))
        .route("/ready", get(ready))
        .route("/status", get(status::status))
        .route("/explain", get(explain::explain))
        .route("/metrics", get(metrics))
        .route("/traffic", get(traffic::traffic))
        .route("/maint/{service}/{switch}", post(maint::service))
        .route("/maint/{service}/{id}/{switch}", post(maint::instance))
        .with_state(state);
    listener::serve(listener, app, cancel).await;
}

/// 200 once the agent can serve: listeners up and a catalog loaded (etcd or disk).
async fn ready(State(state): State<Arc<AdminState>>) -> Response {
    match not_ready_reason(&state) {
        None => (StatusCode::OK, "ready\n").into_response(),
        Some(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        )
            .into_response(),
    }
}

pub fn not_ready_reason(state: &AdminState) -> Option<&'static str> {
    if !state.listeners_up.load(Ordering::Acquire) {
        Some("listeners are not up yet")
    } else if state.catalog.current().is_none() {
        Some("no catalog loaded yet (etcd unreachable and nothing saved in data_dir)")
    } else {
        None
    }
}

async fn metrics(State(state): State<Arc<AdminState>>) -> Response {
    state
        .catalog
        .status()
        .update_metrics(&state.metrics.registry_side);
    update_endpoint_gauges(&state);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}

/// `hostmesh_endpoints{service,state}`: instances by catalog health, and how many of them this
/// agent's breakers hold out (computed at scrape time), for the services this agent has routed
/// to or runs an instance of. Not for every service in the catalog: every agent sees the same
/// catalog, and with 10,000 services the series were 40,000 lines (2.3 MB, 20-30 ms to write)
/// in every agent's /metrics, at every scrape, on every host.
fn update_endpoint_gauges(state: &AdminState) {
    let Some(snapshot) = state.catalog.current() else {
        return;
    };
    let now = tokio::time::Instant::now();
    let proxy = &state.metrics.proxy;
    for svc in snapshot.services.values() {
        let mut counts = [0i64; 4];
        // Balancer readings exist for an instance once a route to it was built here.
        let mut routed = false;
        for i in &svc.instances {
            let slot = match i.health {
                hostmesh_registrar::record::Health::Passing => 0,
                hostmesh_registrar::record::Health::Critical => 1,
                hostmesh_registrar::record::Health::Maintenance => 2,
            };
            counts[slot] += 1;
            let key = hostmesh_balance::EndpointKey::new(&svc.name, &i.host, &i.id);
            let (stats, breaker) = state.stats.readings(&key);
            routed |= stats.is_some();
            if breaker
                .is_some_and(|b| !matches!(b.state(now), hostmesh_balance::breaker::State::Closed))
            {
                counts[3] += 1;
            }
        }
        if !routed && state.local.ids(&svc.name).is_empty() {
            continue;
        }
        let names = ["passing", "critical", "maintenance", "ejected"];
        for (name, n) in names.into_iter().zip(counts) {
            proxy.endpoints(&svc.name, name, n);
        }
    }
}
