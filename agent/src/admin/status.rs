//! `GET /status`: the agent's view as JSON, for operators and for `hostmesh endpoints`.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::Serialize;

use hostmesh_registrar::catalog::StatusReport as CatalogReport;
use hostmesh_registrar::record::Health;
use hostmesh_registrar::register::StatusReport as RegistrarReport;

use super::AdminState;
use crate::balance::EndpointKey;

#[derive(Debug, Serialize)]
pub struct Status {
    pub host: String,
    pub version: &'static str,
    pub ready: bool,
    pub etcd: EtcdStatus,
    pub catalog: CatalogReport,
    pub registration: RegistrarReport,
    pub services: BTreeMap<String, ServiceStatus>,
    /// Listener, capture and VIP problems an operator should see.
    pub problems: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct EtcdStatus {
    pub endpoints: Vec<String>,
    pub connected: bool,
}

#[derive(Debug, Serialize)]
pub struct ServiceStatus {
    pub vip: Option<Ipv4Addr>,
    pub protocol: &'static str,
    pub endpoints: Vec<EndpointStatus>,
}

#[derive(Debug, Serialize)]
pub struct EndpointStatus {
    pub host: String,
    pub id: String,
    pub address: Option<IpAddr>,
    pub port: u16,
    pub health: Health,
    pub tags: Vec<String>,
    pub weight: u32,
    /// Filled by the balancer once the data path exists; `null` until then.
    pub ewma_ms: Option<f64>,
    pub inflight: Option<u64>,
    /// `closed`, `ejected` or `half-open`; `null` until this agent has routed to the instance.
    pub breaker: Option<String>,
    /// Milliseconds left of the ejection; `null` unless ejected.
    pub ejected_for_ms: Option<u64>,
}

pub async fn status(State(state): State<Arc<AdminState>>) -> Json<Status> {
    Json(build(&state))
}

pub fn build(state: &AdminState) -> Status {
    let catalog = state.catalog.status().report();
    let registration = state.registrar.report();
    let mut problems: Vec<String> = registration
        .vip_errors
        .iter()
        .map(|(name, e)| format!("VIP for {name}: {e}"))
        .collect();
    problems.extend(state.capture.problems());
    if catalog.refused_empty_listing {
        problems.push("etcd listed no keys; keeping the last good catalog".into());
    }
    problems.extend(catalog.refused_vip_changes.iter().map(|(name, c)| {
        format!(
            "VIP of {name} changed in etcd to {}; keeping {} (apps use it)",
            c.etcd, c.kept
        )
    }));
    let services = state
        .catalog
        .current()
        .map(|snap| {
            snap.services
                .values()
                .map(|svc| {
                    let endpoints = svc
                        .instances
                        .iter()
                        .map(|i| {
                            let key = EndpointKey::new(&svc.name, &i.host, &i.id);
                            let live = state.stats.stats.get(&key);
                            let now = tokio::time::Instant::now();
                            let breaker = state.stats.breakers.get(&key).map(|b| b.state(now));
                            EndpointStatus {
                                host: i.host.clone(),
                                id: i.id.clone(),
                                address: i.address,
                                port: i.port,
                                health: i.health,
                                tags: i.tags.clone(),
                                weight: i.weight,
                                ewma_ms: live.as_ref().map(|s| s.ewma_ms()),
                                inflight: live.as_ref().map(|s| s.in_flight()),
                                breaker: breaker.map(|b| b.as_str().to_owned()),
                                ejected_for_ms: breaker
                                    .and_then(|b| b.ejected_for(now))
                                    .map(millis),
                            }
                        })
                        .collect();
                    (
                        svc.name.clone(),
                        ServiceStatus {
                            vip: svc.vip,
                            protocol: svc.protocol.as_str(),
                            endpoints,
                        },
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    Status {
        host: state.host.clone(),
        version: crate::VERSION,
        ready: super::not_ready_reason(state).is_none(),
        etcd: EtcdStatus {
            endpoints: state.etcd_endpoints.clone(),
            connected: catalog.connected,
        },
        catalog,
        registration,
        services,
        problems,
    }
}

/// Whole milliseconds, saturating (for JSON).
pub fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
