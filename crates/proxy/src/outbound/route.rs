//! Where a captured connection goes: the VIP:port an app dialed → a service (or a tag subset of
//! it) and its candidate instances. Rebuilt once per catalog snapshot and swapped whole, so the
//! request path only reads an immutable table.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;

use hostmesh_config::spec::Protocol;
use hostmesh_registrar::catalog::Snapshot;
use hostmesh_registrar::record::Health;

use tokio::time::Instant;

use hostmesh_balance::breaker::{Breaker, BreakerConfig, BreakerGroup, BreakerTable};
use hostmesh_balance::{EndpointKey, EndpointStats, EndpointTable};
use hostmesh_policy::route::RoutePolicy;

/// One candidate instance for a route.
#[derive(Debug)]
pub struct Endpoint {
    pub(crate) host: String,
    pub(crate) id: String,
    /// The peer agent's inbound address; for a same-host instance, unused (reached directly).
    pub(crate) peer: SocketAddr,
    /// Runs on this host: reached at its `target`, skipping the inbound hop.
    pub(crate) local: bool,
    pub(crate) weight: u32,
    pub(crate) tags: Vec<String>,
    pub(crate) stats: Arc<EndpointStats>,
    pub(crate) breaker: Arc<Breaker>,
}

/// Everything needed to serve one VIP:port.
#[derive(Debug)]
pub struct Route {
    pub(crate) service: String,
    pub(crate) protocol: Protocol,
    /// Passing instances serving this port (and tag), in a stable order.
    pub(crate) endpoints: Vec<Endpoint>,
    /// The service's route policy (`routes/<service>` in etcd, else the defaults).
    pub(crate) policy: Arc<RoutePolicy>,
    /// The service's breakers, shared by all its routes (the ejection limit is per service).
    pub(crate) group: Arc<BreakerGroup>,
    /// The service's outbound metric handles.
    pub(crate) metrics: crate::metrics::ServiceHandles,
    /// The service's retry budget (shared by all its routes, kept across tables).
    pub(crate) budget: Arc<super::budget::RetryBudget>,
}

/// What the admin endpoint reads of an instance (`/explain`).
impl Endpoint {
    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The peer agent's inbound address (unused for a same-host instance).
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Runs on this host, reached at its `target` without the inbound hop.
    pub fn is_local(&self) -> bool {
        self.local
    }

    /// The latency and in-flight readings the balancer picks by.
    pub fn stats(&self) -> &Arc<EndpointStats> {
        &self.stats
    }

    pub fn breaker(&self) -> &Arc<Breaker> {
        &self.breaker
    }
}

/// What the admin endpoint reads of a route (`/explain`).
impl Route {
    pub fn service(&self) -> &str {
        &self.service
    }

    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// Passing instances serving this port (and tag), in the order picks index them.
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    pub fn policy(&self) -> &RoutePolicy {
        &self.policy
    }

    /// Retries the service's budget would allow now.
    pub fn retries_left(&self) -> u64 {
        self.budget.retries_left()
    }
}

/// VIP:port → route.
#[derive(Debug, Default)]
pub struct RouteTable {
    routes: HashMap<SocketAddrV4, Arc<Route>>,
}

impl RouteTable {
    /// Builds the table for `snapshot`. `stats` keeps each instance's latency and in-flight
    /// state across snapshots; instances that left the catalog are dropped from it.
    pub fn build(
        snapshot: &Snapshot,
        self_host: &str,
        stats: &EndpointTable,
        breakers: &BreakerTable,
        budgets: &super::retry::Budgets,
    ) -> RouteTable {
        let mut routes = HashMap::new();
        let mut policies: HashMap<&str, (Arc<RoutePolicy>, Arc<BreakerGroup>)> = HashMap::new();
        for (name, vip) in &snapshot.vips {
            let (tag, service) = match name.split_once('.') {
                Some((tag, service)) => (Some(tag), service),
                None => (None, name.as_str()),
            };
            let Some(svc) = snapshot.services.get(service) else {
                continue;
            };
            let (policy, group) = policies
                .entry(service)
                .or_insert_with(|| service_policy(snapshot, service, self_host, breakers))
                .clone();
            let members = svc
                .instances
                .iter()
                .filter(|i| tag.is_none_or(|t| i.tags.iter().any(|x| x == t)));
            let mut by_port: HashMap<u16, Vec<Endpoint>> = HashMap::new();
            for i in members {
                let endpoints = by_port.entry(i.port).or_default();
                if i.health != Health::Passing {
                    continue;
                }
                let local = i.host == self_host;
                let peer = match (i.address, i.inbound_port) {
                    (Some(a), Some(p)) => SocketAddr::new(a, p),
                    // A host without its info record cannot be reached through its agent.
                    _ if !local => continue,
                    _ => SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
                };
                endpoints.push(Endpoint {
                    host: i.host.clone(),
                    id: i.id.clone(),
                    peer,
                    local,
                    weight: i.weight.max(1),
                    tags: i.tags.clone(),
                    stats: stats.get_or_insert(&EndpointKey::new(service, &i.host, &i.id)),
                    breaker: breakers.get_or_insert(&EndpointKey::new(service, &i.host, &i.id)),
                });
            }
            for (port, endpoints) in by_port {
                routes.insert(
                    SocketAddrV4::new(*vip, port),
                    Arc::new(Route {
                        service: service.to_owned(),
                        protocol: svc.protocol,
                        endpoints,
                        policy: policy.clone(),
                        group: group.clone(),
                        metrics: Default::default(),
                        budget: budgets.get(
                            service,
                            super::retry::BudgetSettings {
                                ratio: policy.retry.budget_ratio,
                                min_per_second: policy.retry.min_per_second,
                            },
                        ),
                    }),
                );
            }
        }
        stats.retain(|key| {
            snapshot.services.get(key.service()).is_some_and(|s| {
                s.instances
                    .iter()
                    .any(|i| i.host == key.host() && i.id == key.id())
            })
        });
        RouteTable { routes }
    }

    pub fn get(&self, dst: SocketAddrV4) -> Option<Arc<Route>> {
        self.routes.get(&dst).cloned()
    }
}

/// A service's route policy from the snapshot (defaults when it has none or it does not parse)
/// and its breaker group over every instance that can take traffic.
fn service_policy(
    snapshot: &Snapshot,
    service: &str,
    self_host: &str,
    breakers: &BreakerTable,
) -> (Arc<RoutePolicy>, Arc<BreakerGroup>) {
    let policy = match snapshot.routes.get(service) {
        None => RoutePolicy::default(),
        Some(json) => RoutePolicy::from_json(json).unwrap_or_else(|e| {
            tracing::warn!(service, "ignoring the route policy in etcd: {e}");
            RoutePolicy::default()
        }),
    };
    let members = snapshot
        .services
        .get(service)
        .map(|svc| {
            svc.instances
                .iter()
                .filter(|i| {
                    i.health == Health::Passing && (i.address.is_some() || i.host == self_host)
                })
                .map(|i| breakers.get_or_insert(&EndpointKey::new(service, &i.host, &i.id)))
                .collect()
        })
        .unwrap_or_default();
    let b = &policy.breaker;
    let config = BreakerConfig {
        consecutive_failures: b.consecutive_failures,
        base_ejection: b.base_ejection,
        max_ejection: b.max_ejection,
        max_ejected_percent: b.max_ejected_percent,
    };
    (
        Arc::new(policy),
        Arc::new(BreakerGroup::new(config, members)),
    )
}

impl Route {
    /// Picks an endpoint, skipping the indexes in `tried` (instances this request or connection
    /// already failed on), those `eligible` rejects (a traffic split) and those whose breaker
    /// keeps them out. An ejected instance whose probe is due goes first, so it comes back when
    /// its ejection ends rather than when its latency estimate has decayed; otherwise power of
    /// two choices. Returns the index in `endpoints`.
    pub fn pick(&self, tried: &[usize], eligible: impl Fn(&Endpoint) -> bool) -> Option<usize> {
        self.choose(tried, eligible, false, Instant::now())
    }

    /// [`Self::pick`] with the clock already read.
    pub fn pick_at(
        &self,
        tried: &[usize],
        eligible: impl Fn(&Endpoint) -> bool,
        now: Instant,
    ) -> Option<usize> {
        self.choose(tried, eligible, false, now)
    }

    /// The first pick a request would make now ([`Self::pick`] with nothing tried), changing
    /// nothing: no latency estimate records the read, and no breaker probe is claimed (a real
    /// request claims it afterwards, in `BreakerGroup::admit`). For `hostmesh explain`.
    pub fn preview(&self, eligible: impl Fn(&Endpoint) -> bool) -> Option<usize> {
        self.choose(&[], eligible, true, Instant::now())
    }

    /// [`Self::pick`] and [`Self::preview`], which differ only in how P2C reads the costs.
    fn choose(
        &self,
        tried: &[usize],
        eligible: impl Fn(&Endpoint) -> bool,
        peek: bool,
        now: Instant,
    ) -> Option<usize> {
        let ok = |e: &Endpoint| !tried.contains(&self.index_of(e)) && eligible(e);
        if let Some(probe) = self
            .endpoints
            .iter()
            .find(|e| ok(e) && e.breaker.probe_ready(now))
        {
            return Some(self.index_of(probe));
        }
        fn stats(e: &Endpoint) -> (&EndpointStats, u32) {
            (e.stats.as_ref(), e.weight)
        }
        let exclude = |e: &Endpoint| !ok(e) || !e.breaker.available(now);
        let picked = if peek {
            hostmesh_balance::peek(&self.endpoints, stats, exclude)
        } else {
            hostmesh_balance::pick(&self.endpoints, stats, exclude)
        }?;
        Some(self.index_of(picked))
    }

    /// The index of an element of `endpoints`, from its address (no search).
    fn index_of(&self, e: &Endpoint) -> usize {
        let base = self.endpoints.as_ptr() as usize;
        (e as *const Endpoint as usize - base) / std::mem::size_of::<Endpoint>()
    }
}
