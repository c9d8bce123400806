//! `GET /explain?target=URL-or-NAME&header=K:V…`: how this agent would route one request now
//! (`hostmesh explain`). Read-only: the decisions come from the same functions a request uses
//! ([`Decision`], [`hostmesh_proxy::outbound::route::Route::preview`]), and the pick takes no in-flight
//! slot, records no latency read and claims no breaker probe.
//!
//! Answers 200 with a [`Report`], 400 for a malformed target or header, 404 for a name, VIP or
//! port the catalog does not know, 503 before any catalog is loaded.

pub mod report;
pub mod target;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use http::HeaderMap;
use tokio::time::Instant;

use hostmesh_config::spec::Protocol;
use hostmesh_registrar::catalog::{Instance, Snapshot};
use hostmesh_registrar::record::Health;

use super::AdminState;
use super::status::{EndpointStatus, Readings, millis};
use hostmesh_balance::EndpointKey;
use hostmesh_balance::breaker::State as BreakerState;
use hostmesh_policy::route::Split;
use hostmesh_proxy::outbound::decision::{Deadline, DeadlineSource, Decision};
use hostmesh_proxy::outbound::route::Route;
use report::{Candidate, DeadlineReport, Pick, Report, RetryReport, RuleReport, SplitReport};
use target::{Host, MeshName};

/// Why there is no report, and so the status the command maps to its exit code.
#[derive(Debug, PartialEq, Eq)]
enum Problem {
    /// The question is malformed (400; the command exits 2).
    Malformed(String),
    /// The catalog has no such name, VIP or port (404; exit 1).
    Unknown(String),
    /// Nothing to answer from yet (503; exit 1).
    NoCatalog,
}

pub async fn explain(State(state): State<Arc<AdminState>>, RawQuery(query): RawQuery) -> Response {
    let answer = question(query.as_deref().unwrap_or(""))
        .and_then(|(target, headers)| build(&state, &target, &headers));
    match answer {
        Ok(report) => Json(report).into_response(),
        Err(Problem::Malformed(why)) => {
            (StatusCode::BAD_REQUEST, format!("{why}\n")).into_response()
        }
        Err(Problem::Unknown(why)) => (StatusCode::NOT_FOUND, format!("{why}\n")).into_response(),
        Err(Problem::NoCatalog) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "no catalog loaded yet: the agent cannot route anything\n",
        )
            .into_response(),
    }
}

/// The target and headers from the query string.
fn question(query: &str) -> Result<(String, HeaderMap), Problem> {
    let mut target = None;
    let mut headers = HeaderMap::new();
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match key.as_ref() {
            "target" => target = Some(value.into_owned()),
            "header" => {
                let (name, value) = target::header(&value).map_err(Problem::Malformed)?;
                headers.append(name, value);
            }
            other => return Err(Problem::Malformed(format!("unknown parameter {other:?}"))),
        }
    }
    let target = target.ok_or_else(|| Problem::Malformed("missing ?target=URL-or-NAME".into()))?;
    Ok((target, headers))
}

fn build(state: &AdminState, input: &str, headers: &HeaderMap) -> Result<Report, Problem> {
    let target = target::parse(input).map_err(Problem::Malformed)?;
    let snapshot = state.catalog.current().ok_or(Problem::NoCatalog)?;
    let (name, vip) = resolve(&snapshot, &target.host, &state.domain)?;
    let svc = snapshot
        .services
        .get(&name.service)
        .filter(|s| !s.instances.is_empty())
        .ok_or_else(|| Problem::Unknown(format!("no service {:?} in the catalog", name.service)))?;
    let in_subset = |i: &Instance| {
        name.tag
            .as_ref()
            .is_none_or(|t| i.tags.iter().any(|x| x == t))
    };
    let ports: BTreeSet<u16> = svc
        .instances
        .iter()
        .filter(|i| in_subset(i))
        .map(|i| i.port)
        .collect();
    let port = port_of(&name, target.port, &ports)?;
    let route = state
        .stats
        .route(SocketAddrV4::new(vip, port))
        .ok_or_else(|| {
            Problem::Unknown(format!(
                "this agent has no route for {vip}:{port} yet (catalog just changed?)"
            ))
        })?;
    let request_timeout = state.stats.request_timeout();
    let path = target.path.split('?').next().unwrap_or("/");
    let decision = match route.protocol() {
        Protocol::Http | Protocol::Grpc => Decision::new(&route, path, headers, request_timeout),
        // Opaque TCP has no path or headers: no rule applies (see `outbound::tcp`).
        Protocol::Tcp => Decision {
            rule: None,
            deadline: Deadline {
                after: request_timeout,
                source: DeadlineSource::RequestTimeout,
            },
            split: None,
        },
    };
    let now = Instant::now();
    let candidates: Vec<Candidate> = svc
        .instances
        .iter()
        .map(|i| candidate(state, &route, &decision, &name, port, i, now))
        .collect();
    let previewed = route.preview(|ep| decision.admits(ep));
    let picked = previewed.map(|(idx, _)| idx);
    let pick = previewed.map(|(idx, zone)| {
        let ep = &route.endpoints()[idx];
        let eligible = candidates.iter().filter(|c| c.excluded.is_none()).count();
        let how = if ep.breaker().probe_ready(now) {
            "probe"
        } else if eligible == 1 {
            "only"
        } else {
            "p2c"
        };
        Pick {
            host: ep.host().to_owned(),
            id: ep.id().to_owned(),
            how: how.to_owned(),
            zone: zone.as_str().to_owned(),
        }
    });
    let outcome = match picked.map(|idx| &route.endpoints()[idx]) {
        None => "503 no-endpoints: no eligible instance".to_owned(),
        Some(ep)
            if ep.is_local() && !state.stats.allows_same_host(route.service(), &state.host) =>
        {
            format!(
                "403 forbidden: {}'s access policy does not allow this host",
                route.service()
            )
        }
        Some(ep) if ep.is_local() => {
            format!(
                "sent to {}/{} on this host, at its target",
                ep.host(),
                ep.id()
            )
        }
        Some(ep) => format!(
            "sent to {}/{} through its agent at {}",
            ep.host(),
            ep.id(),
            ep.peer()
        ),
    };
    let policy = route.policy();
    let max_attempts = match route.protocol() {
        Protocol::Tcp => hostmesh_proxy::outbound::TCP_MAX_ATTEMPTS,
        Protocol::Http | Protocol::Grpc => policy.retry.max_attempts.max(1),
    };
    Ok(Report {
        target: input.to_owned(),
        service: route.service().to_owned(),
        tag: name.tag.clone(),
        vip,
        port,
        protocol: route.protocol().as_str().to_owned(),
        path: target.path.clone(),
        headers: header_map(headers),
        rules: policy.rules.len(),
        rule: decision.rule.map(|(index, r)| RuleReport {
            index,
            path_prefix: r.path_prefix.clone(),
            headers: r
                .headers
                .iter()
                .map(|(k, v)| (k.as_str().to_owned(), v.clone()))
                .collect(),
            timeout_ms: r.timeout.map(millis),
            split: r
                .split
                .iter()
                .map(|s| SplitReport {
                    tags: s.tags.clone(),
                    weight: s.weight,
                })
                .collect(),
        }),
        locality: policy.locality.as_str().to_owned(),
        zone: state.stats.zone().map(str::to_owned),
        zone_share: route.zone_share(),
        split: decision.split.map(|s| s.tags.clone()),
        deadline: DeadlineReport {
            ms: millis(decision.deadline.after),
            source: decision.deadline.source,
            per_try_timeout_ms: policy.retry.per_try_timeout.map(millis),
        },
        retry: RetryReport {
            max_attempts,
            budget_left: Some(route.retries_left()),
            budget_ratio: policy.retry.budget_ratio,
            min_per_second: policy.retry.min_per_second,
        },
        candidates,
        pick,
        outcome,
    })
}

/// The service (or tag subset) and VIP a target's host names.
fn resolve(
    snapshot: &Snapshot,
    host: &Host,
    domain: &str,
) -> Result<(MeshName, Ipv4Addr), Problem> {
    match host {
        Host::Vip(ip) => snapshot
            .vips
            .iter()
            .find(|(_, v)| *v == ip)
            .map(|(key, v)| (MeshName::from_vip_key(key), *v))
            .ok_or_else(|| Problem::Unknown(format!("{ip} is not the VIP of any service"))),
        Host::Name(n) => {
            let name = target::mesh_name(n, domain).ok_or_else(|| {
                Problem::Unknown(format!("{n:?} is not a name in the mesh domain {domain:?}"))
            })?;
            let vip = snapshot.vips.get(&name.vip_key()).ok_or_else(|| {
                Problem::Unknown(match &name.tag {
                    None => format!("no service {:?} in the catalog", name.service),
                    Some(tag) => format!(
                        "no VIP for tag {tag:?} of {:?} (no instance carries it, or no such service)",
                        name.service
                    ),
                })
            })?;
            Ok((name, *vip))
        }
    }
}

/// The port asked for, or the service's only port.
fn port_of(name: &MeshName, asked: Option<u16>, ports: &BTreeSet<u16>) -> Result<u16, Problem> {
    let list = || {
        ports
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let what = name.vip_key();
    match asked {
        Some(p) if ports.contains(&p) => Ok(p),
        Some(p) if ports.is_empty() => Err(Problem::Unknown(format!(
            "{what} has no instances (asked for port {p})"
        ))),
        Some(p) => Err(Problem::Unknown(format!(
            "{what} has no instances on port {p} (ports: {})",
            list()
        ))),
        None => match ports.len() {
            0 => Err(Problem::Unknown(format!("{what} has no instances"))),
            1 => Ok(*ports.iter().next().unwrap_or(&0)),
            _ => Err(Problem::Malformed(format!(
                "{what} serves several ports ({}): add one, e.g. {what}:{}",
                list(),
                ports.iter().next().unwrap_or(&0)
            ))),
        },
    }
}

/// One instance as the pick sees it.
fn candidate(
    state: &AdminState,
    route: &Route,
    decision: &Decision<'_>,
    name: &MeshName,
    port: u16,
    i: &Instance,
    now: Instant,
) -> Candidate {
    let in_route = route
        .endpoints()
        .iter()
        .find(|e| e.host() == i.host && e.id() == i.id);
    let key = EndpointKey::new(route.service(), &i.host, &i.id);
    // The route's own handles first: they are the ones the pick reads.
    let (shared_stats, shared_breaker) = state.stats.readings(&key);
    let stats = in_route.map(|e| e.stats().clone()).or(shared_stats);
    let breaker = in_route.map(|e| e.breaker().clone()).or(shared_breaker);
    let live = Readings::new(stats.as_deref(), breaker.as_deref(), now);
    let excluded = why_excluded(
        i,
        port,
        name.tag.as_deref(),
        in_route.is_some(),
        decision.split,
        live.breaker,
    );
    let weight = i.weight.max(1);
    Candidate {
        endpoint: EndpointStatus::new(i, &live),
        local: i.host == state.host,
        cost: stats
            .as_ref()
            .filter(|_| excluded.is_none())
            .map(|s| s.peek_cost_at(now, weight) / 1e6),
        excluded,
    }
}

/// Why a request to `port` (of the `tag` subset, with the drawn `split`) cannot go to `i`, in
/// the order the data path filters: the route table (port, tag, health, a reachable host), the
/// split, then the breaker. `None`: eligible.
fn why_excluded(
    i: &Instance,
    port: u16,
    tag: Option<&str>,
    in_route: bool,
    split: Option<&Split>,
    breaker: Option<BreakerState>,
) -> Option<String> {
    if i.port != port {
        return Some(format!("serves port {}", i.port));
    }
    if let Some(tag) = tag
        && !i.tags.iter().any(|t| t == tag)
    {
        return Some(format!("not tagged {tag}"));
    }
    if i.health != Health::Passing {
        return Some(format!("health is {}", i.health));
    }
    if !in_route {
        return Some("its host has no info record in etcd (no address to reach it at)".into());
    }
    if let Some(split) = split
        && !split.selects(&i.tags)
    {
        return Some(format!("not in the drawn split ({})", split.tags.join(",")));
    }
    match breaker {
        Some(BreakerState::Ejected { .. }) => Some("ejected by its breaker".into()),
        Some(BreakerState::HalfOpen { probing: true }) => {
            Some("half-open, and its one probe is out".into())
        }
        Some(BreakerState::Closed | BreakerState::HalfOpen { probing: false }) | None => None,
    }
}

fn header_map(headers: &HeaderMap) -> BTreeMap<String, String> {
    let mut map: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in headers {
        let v = String::from_utf8_lossy(v.as_bytes());
        map.entry(k.as_str().to_owned())
            .and_modify(|e| {
                e.push_str(", ");
                e.push_str(&v);
            })
            .or_insert_with(|| v.into_owned());
    }
    map
}

#[cfg(test)]
mod tests;
