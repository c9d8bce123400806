//! Where a captured connection goes: the VIP:port an app dialed → a service (or a tag subset of
//! it) and its candidate instances. A table per catalog snapshot, swapped whole; each VIP's
//! routes are built once, by the first connection to it, and then only read.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use http::HeaderValue;
use http::uri::Authority;

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
    /// `x-hostmesh-dst` (`service/id`) and the URI authority (`host@peer`, see
    /// `outbound::instance_request::build`) of requests to a peer, made once here rather than
    /// per request.
    /// `None` when the catalog's names do not make a valid header or authority: such an
    /// instance cannot be sent to.
    pub(crate) dst: Option<HeaderValue>,
    pub(crate) authority: Option<Authority>,
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

/// What routes share across tables: each instance's balancer stats and breaker (by identity, so
/// they survive a new snapshot) and each service's retry budget.
#[derive(Debug, Default)]
pub struct Shared {
    pub(crate) stats: EndpointTable,
    pub(crate) breakers: BreakerTable,
    pub(crate) budgets: super::retry::Budgets,
}

/// VIP:port → route, for one catalog snapshot.
///
/// A route is built when the first connection to its VIP comes, not with the table: an agent
/// follows the whole catalog but its apps call few services, and with 10,000 services building
/// every route (its endpoints, their stats and breakers, the service's breaker group and retry
/// budget) for each snapshot held ~25 MB for services nobody called (bench/catalog-scale). A
/// table costs one small entry per VIP; the first request to a VIP after a catalog change builds
/// that VIP's routes once (a few microseconds for a few instances).
#[derive(Debug, Default)]
pub struct RouteTable {
    vips: HashMap<Ipv4Addr, VipRoutes>,
    snapshot: Arc<Snapshot>,
    self_host: String,
    shared: Arc<Shared>,
    /// Each service's policy and breaker group, made with its first route and shared by all its
    /// routes in this table (its VIP and tag subsets; the ejection limit is per service).
    services: Mutex<HashMap<String, ServiceParts>>,
}

/// What all of one service's routes in a table share: its route policy and breaker group.
type ServiceParts = (Arc<RoutePolicy>, Arc<BreakerGroup>);

/// The name a VIP serves (`orders`, `v2.orders`) and, once built, its routes by port.
#[derive(Debug)]
struct VipRoutes {
    name: Box<str>,
    by_port: OnceLock<HashMap<u16, Arc<Route>>>,
}

impl RouteTable {
    /// The table for `snapshot`. Instances that left the catalog are dropped from `shared`.
    pub fn build(snapshot: Arc<Snapshot>, self_host: &str, shared: Arc<Shared>) -> RouteTable {
        let vips = snapshot
            .vips
            .iter()
            .map(|(name, vip)| {
                let routes = VipRoutes {
                    name: name.as_str().into(),
                    by_port: OnceLock::new(),
                };
                (*vip, routes)
            })
            .collect();
        let in_catalog = |key: &EndpointKey| {
            snapshot.services.get(key.service()).is_some_and(|s| {
                s.instances
                    .iter()
                    .any(|i| i.host == key.host() && i.id == key.id())
            })
        };
        shared.stats.retain(in_catalog);
        shared.breakers.retain(in_catalog);
        RouteTable {
            vips,
            snapshot,
            self_host: self_host.to_owned(),
            shared,
            services: Mutex::default(),
        }
    }

    /// The route for `dst`, built on first use.
    pub fn get(&self, dst: SocketAddrV4) -> Option<Arc<Route>> {
        let vip = self.vips.get(dst.ip())?;
        vip.by_port
            .get_or_init(|| self.routes_of(&vip.name))
            .get(&dst.port())
            .cloned()
    }

    /// The routes of the VIP of `name` (a service, or `tag.service` for a tag subset), by port.
    fn routes_of(&self, name: &str) -> HashMap<u16, Arc<Route>> {
        let (tag, service) = match name.split_once('.') {
            Some((tag, service)) => (Some(tag), service),
            None => (None, name),
        };
        let Some(svc) = self.snapshot.services.get(service) else {
            return HashMap::new();
        };
        let (policy, group) = self
            .services
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(service.to_owned())
            .or_insert_with(|| {
                service_policy(
                    &self.snapshot,
                    service,
                    &self.self_host,
                    &self.shared.breakers,
                )
            })
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
            let local = i.host == self.self_host;
            let peer = match (i.address, i.inbound_port) {
                (Some(a), Some(p)) => SocketAddr::new(a, p),
                // A host without its info record cannot be reached through its agent.
                _ if !local => continue,
                _ => SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            };
            let key = EndpointKey::new(service, &i.host, &i.id);
            let dst = HeaderValue::from_str(&format!("{service}/{}", i.id)).ok();
            let authority = Authority::try_from(format!("{}@{peer}", i.host)).ok();
            endpoints.push(Endpoint {
                host: i.host.clone(),
                id: i.id.clone(),
                peer,
                local,
                weight: i.weight.max(1),
                tags: i.tags.clone(),
                stats: self.shared.stats.get_or_insert(&key),
                breaker: self.shared.breakers.get_or_insert(&key),
                dst,
                authority,
            });
        }
        let budget = self.shared.budgets.get(
            service,
            super::retry::BudgetSettings {
                ratio: policy.retry.budget_ratio,
                min_per_second: policy.retry.min_per_second,
            },
        );
        by_port
            .into_iter()
            .map(|(port, endpoints)| {
                let route = Route {
                    service: service.to_owned(),
                    protocol: svc.protocol,
                    endpoints,
                    policy: policy.clone(),
                    group: group.clone(),
                    metrics: Default::default(),
                    budget: budget.clone(),
                };
                (port, Arc::new(route))
            })
            .collect()
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use hostmesh_registrar::catalog::Map;
    use std::net::IpAddr;

    use hostmesh_registrar::catalog::{Instance, Service};

    use super::*;

    fn instance(host: &str, id: &str, tags: &[&str]) -> Instance {
        Instance {
            host: host.to_owned(),
            id: id.to_owned(),
            address: Some(IpAddr::from([198, 18, 0, 2])),
            inbound_port: Some(4143),
            zone: None,
            port: 8080,
            protocol: Protocol::Http,
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
            weight: 100,
            health: Health::Passing,
            locked: false,
        }
    }

    /// `orders` (b/1 tagged v2, c/1) at 127.77.0.1, its `v2` subset at .2; `billing` (d/1) at .3.
    fn snapshot(orders: Vec<Instance>) -> Arc<Snapshot> {
        let service = |name: &str, vip: [u8; 4], instances| {
            let svc = Service {
                name: name.to_owned(),
                vip: Some(vip.into()),
                protocol: Protocol::Http,
                instances,
            };
            (name.to_owned(), Arc::new(svc))
        };
        Arc::new(Snapshot {
            services: Map::from_iter([
                service("orders", [127, 77, 0, 1], orders),
                service("billing", [127, 77, 0, 3], vec![instance("d", "1", &[])]),
            ]),
            vips: Map::from_iter([
                ("orders".to_owned(), Ipv4Addr::from([127, 77, 0, 1])),
                ("v2.orders".to_owned(), Ipv4Addr::from([127, 77, 0, 2])),
                ("billing".to_owned(), Ipv4Addr::from([127, 77, 0, 3])),
            ]),
            ..Snapshot::default()
        })
    }

    fn both() -> Vec<Instance> {
        vec![instance("b", "1", &["v2"]), instance("c", "1", &[])]
    }

    fn dst(last: u8, port: u16) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::new(127, 77, 0, last), port)
    }

    #[test]
    fn routes_and_their_state_are_made_by_the_first_connection() {
        let shared = Arc::new(Shared::default());
        let table = RouteTable::build(snapshot(both()), "a", shared.clone());
        assert!(shared.stats.is_empty() && shared.breakers.is_empty());

        let orders = table.get(dst(1, 8080)).unwrap();
        assert_eq!(orders.service(), "orders");
        let hosts: Vec<&str> = orders.endpoints().iter().map(Endpoint::host).collect();
        assert_eq!(hosts, ["b", "c"]);
        // Only orders' instances have state; billing, never asked for, has none.
        assert_eq!((shared.stats.len(), shared.breakers.len()), (2, 2));
        assert!(Arc::ptr_eq(&orders, &table.get(dst(1, 8080)).unwrap()));
        assert!(
            table.get(dst(1, 9090)).is_none(),
            "no instance on that port"
        );
        assert!(table.get(dst(9, 8080)).is_none(), "no such VIP");
    }

    #[test]
    fn a_services_routes_share_its_breaker_group_and_instances_state() {
        let shared = Arc::new(Shared::default());
        let table = RouteTable::build(snapshot(both()), "a", shared.clone());
        let all = table.get(dst(1, 8080)).unwrap();
        let v2 = table.get(dst(2, 8080)).unwrap();
        let hosts: Vec<&str> = v2.endpoints().iter().map(Endpoint::host).collect();
        assert_eq!(hosts, ["b"]);
        assert!(Arc::ptr_eq(&all.group, &v2.group));
        assert_eq!(all.group.members().len(), 2);
        assert!(Arc::ptr_eq(
            &all.endpoints[0].breaker,
            &v2.endpoints[0].breaker
        ));
        assert!(Arc::ptr_eq(&all.budget, &v2.budget));
    }

    #[test]
    fn state_outlives_a_table_until_its_instance_leaves_the_catalog() {
        let shared = Arc::new(Shared::default());
        let first = RouteTable::build(snapshot(both()), "a", shared.clone());
        let before = first.get(dst(1, 8080)).unwrap();

        let next = RouteTable::build(snapshot(both()), "a", shared.clone());
        let after = next.get(dst(1, 8080)).unwrap();
        assert!(
            !Arc::ptr_eq(&before, &after),
            "a new table builds its own routes"
        );
        assert!(Arc::ptr_eq(
            &before.endpoints[1].stats,
            &after.endpoints[1].stats
        ));
        assert!(Arc::ptr_eq(
            &before.endpoints[1].breaker,
            &after.endpoints[1].breaker
        ));

        // c leaves: its stats and breaker go; b's stay.
        let gone = RouteTable::build(
            snapshot(vec![instance("b", "1", &["v2"])]),
            "a",
            shared.clone(),
        );
        assert_eq!((shared.stats.len(), shared.breakers.len()), (1, 1));
        let b = gone.get(dst(1, 8080)).unwrap();
        assert!(Arc::ptr_eq(
            &before.endpoints[0].stats,
            &b.endpoints[0].stats
        ));
    }
}
