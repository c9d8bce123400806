//! `GET /status`: the agent's view as JSON, for operators and for `hostmesh endpoints`.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use hostmesh_registrar::catalog::{Instance, StatusReport as CatalogReport};
use hostmesh_registrar::record::Health;
use hostmesh_registrar::register::StatusReport as RegistrarReport;

use super::AdminState;
use hostmesh_balance::breaker::{Breaker, State as BreakerState};
use hostmesh_balance::{EndpointKey, EndpointStats};
use hostmesh_proxy::outbound::Outbound;

#[derive(Debug, Serialize)]
pub struct Status {
    pub host: String,
    pub version: &'static str,
    pub ready: bool,
    pub etcd: EtcdStatus,
    pub catalog: CatalogReport,
    pub registration: RegistrarReport,
    pub lockdown: LockdownStatus,
    pub tls: TlsStatus,
    pub reloads: ReloadStatus,
    pub services: BTreeMap<String, ServiceStatus>,
    /// Listener, capture and VIP problems an operator should see.
    pub problems: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct EtcdStatus {
    pub endpoints: Vec<String>,
    pub connected: bool,
}

/// What this agent locks down (`proxy.lockdown`): the ports of its nftables table.
#[derive(Debug, Serialize)]
pub struct LockdownStatus {
    pub enabled: bool,
    /// `inet hostmesh_lockdown`, for `nft list table`.
    pub table: &'static str,
    pub ports: Vec<LockedPortStatus>,
}

#[derive(Debug, Serialize)]
pub struct LockedPortStatus {
    pub port: u16,
    /// The networks still allowed to connect directly (`allow_direct` of its instances).
    pub allow_direct: Vec<String>,
}

impl LockdownStatus {
    fn new(report: &hostmesh_capture::lockdown::LockdownReport) -> Self {
        LockdownStatus {
            enabled: report.enabled,
            table: hostmesh_capture::lockdown::TABLE,
            ports: report
                .ports
                .iter()
                .map(|p| LockedPortStatus {
                    port: p.port,
                    allow_direct: p.allow.iter().map(|n| n.to_string()).collect(),
                })
                .collect(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct ServiceStatus {
    pub vip: Option<Ipv4Addr>,
    pub protocol: &'static str,
    pub endpoints: Vec<EndpointStatus>,
    /// The route policy as stored (`hostmesh route set`); `null` without one.
    pub route: Option<serde_json::Value>,
    /// The access policy as stored (`hostmesh policy set`); `null` without one.
    pub policy: Option<serde_json::Value>,
}

/// Certificate expiry (mTLS).
#[derive(Debug, Serialize)]
pub struct TlsStatus {
    /// Seconds until this host's certificate expires (negative once it has); `null` with
    /// `tls.mode = "disabled"`.
    pub cert_expiry_seconds: Option<f64>,
}

/// SIGHUP reloads since the agent started.
#[derive(Debug, Serialize)]
pub struct ReloadStatus {
    pub ok: u64,
    pub rejected: u64,
    /// `ok` or `rejected`; `null` before the first reload.
    pub last_result: Option<&'static str>,
    /// When the last reload came (RFC 3339, UTC).
    pub last_at: Option<String>,
}

/// One instance as the catalog has it and as this agent's balancer and breaker see it now: an
/// endpoint of `/status`, and the common part of an `/explain` candidate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndpointStatus {
    pub host: String,
    pub id: String,
    pub address: Option<IpAddr>,
    /// Its host's `agent.zone`; `null` when the host has none.
    #[serde(default)]
    pub zone: Option<String>,
    pub port: u16,
    pub health: Health,
    pub tags: Vec<String>,
    pub weight: u32,
    /// Its host refuses direct connections to it from other hosts (`proxy.lockdown`).
    #[serde(default)]
    pub locked: bool,
    /// Filled by the balancer once the data path exists; `null` until then.
    pub ewma_ms: Option<f64>,
    pub inflight: Option<u64>,
    /// `closed`, `ejected` or `half-open`; `null` until this agent has routed to the instance.
    pub breaker: Option<String>,
    /// Milliseconds left of the ejection; `null` unless ejected.
    pub ejected_for_ms: Option<u64>,
}

impl EndpointStatus {
    pub fn new(i: &Instance, live: &Readings) -> Self {
        EndpointStatus {
            host: i.host.clone(),
            id: i.id.clone(),
            address: i.address,
            zone: i.zone.clone(),
            port: i.port,
            health: i.health,
            tags: i.tags.clone(),
            weight: i.weight,
            locked: i.locked,
            ewma_ms: live.ewma_ms,
            inflight: live.inflight,
            breaker: live.breaker_name(),
            ejected_for_ms: live.ejected_for_ms,
        }
    }
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
    let lockdown = state.lockdown.report();
    problems.extend(lockdown.problem.clone());
    problems.extend(state.descriptors.clone());
    problems.extend(state.policies.problems());
    if catalog.refused_empty_listing {
        problems.push("etcd listed no keys; keeping the last good catalog".into());
    }
    problems.extend(catalog.refused_vip_changes.iter().map(|(name, c)| {
        format!(
            "VIP of {name} changed in etcd to {}; keeping {} (apps use it)",
            c.etcd, c.kept
        )
    }));
    problems.extend(catalog.refused_duplicate_vips.iter().map(|(name, d)| {
        format!(
            "VIP {} of {name} in etcd belongs to {}; {name} gets no VIP until its key is fixed",
            d.vip, d.held_by
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
                            let live = Readings::of(&state.stats, &key, Instant::now());
                            EndpointStatus::new(i, &live)
                        })
                        .collect();
                    (
                        svc.name.clone(),
                        ServiceStatus {
                            vip: svc.vip,
                            protocol: svc.protocol.as_str(),
                            endpoints,
                            route: snap.routes.get(&svc.name).cloned(),
                            policy: snap.policies.get(&svc.name).cloned(),
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
        lockdown: LockdownStatus::new(&lockdown),
        tls: TlsStatus {
            cert_expiry_seconds: state.metrics.tls.expiry_seconds(),
        },
        reloads: {
            let (ok, rejected, last) = state.metrics.reloads();
            ReloadStatus {
                ok,
                rejected,
                last_result: last.map(|(_, r)| r),
                last_at: last.map(|(t, _)| humantime::format_rfc3339_seconds(t).to_string()),
            }
        },
        services,
        problems,
    }
}

/// What the balancer and the breaker know of one endpoint at one instant. `/status` and
/// `/explain` both report it, and an operator comparing the two must see the same numbers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Readings {
    /// Each `None` when this agent keeps no such state for the endpoint (it has no route to it).
    pub ewma_ms: Option<f64>,
    pub inflight: Option<u64>,
    pub breaker: Option<BreakerState>,
    pub ejected_for_ms: Option<u64>,
}

impl Readings {
    /// From the handles the caller found: a route's own, or the shared tables'.
    pub fn new(stats: Option<&EndpointStats>, breaker: Option<&Breaker>, now: Instant) -> Self {
        let breaker = breaker.map(|b| b.state(now));
        Readings {
            ewma_ms: stats.map(EndpointStats::ewma_ms),
            inflight: stats.map(EndpointStats::in_flight),
            breaker,
            ejected_for_ms: breaker.and_then(|b| b.ejected_for(now)).map(millis),
        }
    }

    /// From the shared tables, which outlive route tables (see [`hostmesh_balance::EndpointMap`]).
    pub fn of(outbound: &Outbound, key: &EndpointKey, now: Instant) -> Self {
        let (stats, breaker) = outbound.readings(key);
        Readings::new(stats.as_deref(), breaker.as_deref(), now)
    }

    /// `closed`, `ejected` or `half-open`, as the JSON spells it.
    pub fn breaker_name(&self) -> Option<String> {
        self.breaker.map(|b| b.as_str().to_owned())
    }
}

/// Whole milliseconds, saturating (for JSON).
pub fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use super::*;
    use hostmesh_balance::breaker::{BreakerConfig, BreakerGroup};

    #[tokio::test(start_paused = true)]
    async fn readings_show_the_ejection_and_its_time_left() {
        let none = Readings::new(None, None, Instant::now());
        assert_eq!(
            (none.ewma_ms, none.inflight, none.breaker),
            (None, None, None)
        );
        assert_eq!((none.breaker_name(), none.ejected_for_ms), (None, None));

        let members: Vec<Arc<Breaker>> = ["a", "b"]
            .iter()
            .map(|h| Arc::new(Breaker::new(EndpointKey::new("orders", h, "1"))))
            .collect();
        let group = Arc::new(BreakerGroup::new(BreakerConfig::default(), members.clone()));
        for _ in 0..BreakerConfig::default().consecutive_failures {
            group.admit(&members[0], Instant::now()).unwrap().failure();
        }
        tokio::time::advance(Duration::from_secs(1)).await;
        let stats = EndpointStats::new();
        let live = Readings::new(Some(&stats), Some(&members[0]), Instant::now());
        assert_eq!(live.inflight, Some(0));
        assert!(live.ewma_ms.is_some());
        assert_eq!(live.breaker_name().as_deref(), Some("ejected"));
        assert_eq!(live.ejected_for_ms, Some(4000));
    }
}
