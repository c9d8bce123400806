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
use hostmesh_policy::route::{Locality, RoutePolicy};

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
    /// Whether it runs in this agent's zone.
    pub(crate) zone: ZoneRelation,
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

/// Where an instance runs relative to the caller (this agent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZoneRelation {
    /// Both have a zone (`agent.zone`), the same one.
    Same,
    /// Both have a zone, different ones.
    Other,
    /// This agent or the instance's host has no zone.
    Unknown,
}

impl ZoneRelation {
    fn of(self_zone: Option<&str>, instance_zone: Option<&str>) -> ZoneRelation {
        match (self_zone, instance_zone) {
            (Some(a), Some(b)) if a == b => ZoneRelation::Same,
            (Some(_), Some(_)) => ZoneRelation::Other,
            _ => ZoneRelation::Unknown,
        }
    }
}

/// How a pick used zones (`locality = "zone"`): for `hostmesh explain`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZoneChoice {
    /// Zones played no part: `locality = "any"`, or this agent has no zone.
    NotApplied,
    /// An instance in this agent's zone.
    InZone,
    /// Another zone's instance: no eligible instance in this zone is left (all tried, ejected,
    /// failing or outside the split).
    SpilledNoneLeft,
    /// Another zone's instance: this zone has fewer instances for its callers than the fleet,
    /// and this request fell in the share it sends elsewhere (see [`zone_share`]).
    SpilledShare,
}

impl ZoneChoice {
    pub fn as_str(self) -> &'static str {
        match self {
            ZoneChoice::NotApplied => "not-applied",
            ZoneChoice::InZone => "in-zone",
            ZoneChoice::SpilledNoneLeft => "spilled-none-left",
            ZoneChoice::SpilledShare => "spilled-share",
        }
    }
}

/// A zone keeps every request while its share of a service's capacity is at least half its
/// share of the callers; below that, it keeps [`SPILL_FACTOR`] × its fair share.
pub const SPILL_FACTOR: f64 = 2.0;

/// The share of requests a `locality = "zone"` route keeps in the caller's zone while that
/// zone has an eligible instance (Envoy's zone-aware rule, with slack):
///
/// `min(1, SPILL_FACTOR × (zone's share of the instances' weight) / (zone's share of the hosts))`
///
/// Every agent is counted as a caller (the catalog does not say who calls what). A zone with as
/// much capacity per caller as the fleet, or up to half as much, keeps everything; a zone with one
/// instance of ten and half the fleet's hosts keeps 2 × 0.1 / 0.5 = 40 % and sends the rest to
/// other zones, so its one instance takes at most twice its fair share rather than half of all
/// traffic. Why capacity and not load: the balancer's latency estimates are per caller and
/// peak-sensitive, and one slow response would move a whole zone's traffic across for tens of
/// seconds; the share is stable and the same on every caller. Load still matters within a zone
/// (P2C) and a zone with nothing eligible left spills entirely.
pub fn zone_share(weight_here: u64, weight_all: u64, hosts_here: usize, hosts_all: usize) -> f64 {
    if weight_all == 0 || hosts_all == 0 {
        return 1.0;
    }
    // This agent is a caller in its zone even when its own record is missing for a moment.
    let hosts_here = hosts_here.max(1).min(hosts_all);
    // Counts of hosts and weights are far below 2⁵³.
    #[allow(clippy::cast_precision_loss)]
    let (capacity, callers) = (
        weight_here as f64 / weight_all as f64,
        hosts_here as f64 / hosts_all as f64,
    );
    (SPILL_FACTOR * capacity / callers).min(1.0)
}

/// How a pick reads latency estimates: as a request (the read decays them) or as a look.
#[derive(Debug, Clone, Copy)]
enum Read {
    Pick,
    Peek,
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
    /// `locality = "zone"` and this agent has a zone: the share of requests kept in this zone
    /// while it has an eligible instance ([`zone_share`]). `None`: zones do not apply.
    pub(crate) zone_share: Option<f64>,
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

    /// Whether it runs in this agent's zone.
    pub fn zone(&self) -> ZoneRelation {
        self.zone
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
    /// Looked up (with `by_port`) for every request: foldhash rather than SipHash, whose
    /// resistance to chosen keys buys nothing for keys the catalog chose.
    vips: foldhash::HashMap<Ipv4Addr, VipRoutes>,
    snapshot: Arc<Snapshot>,
    self_host: String,
    /// `agent.zone`, from the config rather than this host's record in the catalog, which may
    /// be missing for a moment.
    self_zone: Option<String>,
    /// Agents (hosts in the catalog) in this agent's zone and in all, counted once per table by
    /// the first zone-aware route.
    callers: OnceLock<(usize, usize)>,
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
    by_port: OnceLock<foldhash::HashMap<u16, Arc<Route>>>,
}

impl RouteTable {
    /// The table for `snapshot`. Instances that left the catalog are dropped from `shared`.
    pub fn build(
        snapshot: Arc<Snapshot>,
        self_host: &str,
        self_zone: Option<&str>,
        shared: Arc<Shared>,
    ) -> RouteTable {
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
            self_zone: self_zone.map(str::to_owned),
            callers: OnceLock::new(),
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
    fn routes_of(&self, name: &str) -> foldhash::HashMap<u16, Arc<Route>> {
        let (tag, service) = match name.split_once('.') {
            Some((tag, service)) => (Some(tag), service),
            None => (None, name),
        };
        let Some(svc) = self.snapshot.services.get(service) else {
            return foldhash::HashMap::default();
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
                zone: ZoneRelation::of(self.self_zone.as_deref(), i.zone.as_deref()),
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
                    zone_share: self.zone_share_of(&policy, &endpoints),
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

impl RouteTable {
    /// The share a route with `endpoints` keeps in this agent's zone, if zones apply to it.
    fn zone_share_of(&self, policy: &RoutePolicy, endpoints: &[Endpoint]) -> Option<f64> {
        let zone = self.self_zone.as_deref()?;
        if policy.locality != Locality::Zone {
            return None;
        }
        let (hosts_here, hosts_all) = *self.callers.get_or_init(|| {
            let here = (self.snapshot.hosts.values())
                .filter(|h| h.zone.as_deref() == Some(zone))
                .count();
            (here, self.snapshot.hosts.len())
        });
        let weight = |e: &&Endpoint| u64::from(e.weight);
        let weight_all = endpoints.iter().map(|e| weight(&e)).sum();
        let weight_here = (endpoints.iter())
            .filter(|e| e.zone == ZoneRelation::Same)
            .map(|e| weight(&e))
            .sum();
        Some(zone_share(weight_here, weight_all, hosts_here, hosts_all))
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
    /// Counts an attempt to `ep` in `hostmesh_zone_attempts_total` when both hosts have zones.
    pub(crate) fn count_zone(&self, metrics: &crate::metrics::ProxyMetrics, ep: &Endpoint) {
        match ep.zone {
            ZoneRelation::Same => metrics.zone_attempt(&self.metrics, &self.service, true),
            ZoneRelation::Other => metrics.zone_attempt(&self.metrics, &self.service, false),
            ZoneRelation::Unknown => {}
        }
    }

    /// Picks an endpoint, skipping the indexes in `tried` (instances this request or connection
    /// already failed on), those `eligible` rejects (a traffic split) and those whose breaker
    /// keeps them out. An ejected instance whose probe is due goes first, so it comes back when
    /// its ejection ends rather than when its latency estimate has decayed; otherwise power of
    /// two choices, within this agent's zone first when the route prefers it (see
    /// [`Self::choose`]). Returns the index in `endpoints`.
    pub fn pick(&self, tried: &[usize], eligible: impl Fn(&Endpoint) -> bool) -> Option<usize> {
        self.choose(tried, eligible, Read::Pick, Instant::now())
            .map(|(i, _)| i)
    }

    /// [`Self::pick`] with the clock already read.
    pub fn pick_at(
        &self,
        tried: &[usize],
        eligible: impl Fn(&Endpoint) -> bool,
        now: Instant,
    ) -> Option<usize> {
        self.choose(tried, eligible, Read::Pick, now)
            .map(|(i, _)| i)
    }

    /// The first pick a request would make now ([`Self::pick`] with nothing tried) and how
    /// zones decided it, changing nothing: no latency estimate records the read, and no breaker
    /// probe is claimed (a real request claims it afterwards, in `BreakerGroup::admit`). For
    /// `hostmesh explain`.
    pub fn preview(&self, eligible: impl Fn(&Endpoint) -> bool) -> Option<(usize, ZoneChoice)> {
        self.choose(&[], eligible, Read::Peek, Instant::now())
    }

    /// [`Self::pick`] and [`Self::preview`], which differ only in how P2C reads the costs.
    ///
    /// With zones (`zone_share`), while an instance in this agent's zone is eligible: a probe
    /// that is due goes first within the zone; then a draw keeps the request in the zone with
    /// probability `zone_share` (P2C there) or sends it to the other zones (P2C there, the zone
    /// again if they have nothing). With no eligible instance in the zone, or without zones,
    /// the probe and P2C look at every eligible instance.
    fn choose(
        &self,
        tried: &[usize],
        eligible: impl Fn(&Endpoint) -> bool,
        read: Read,
        now: Instant,
    ) -> Option<(usize, ZoneChoice)> {
        let ok = |e: &Endpoint| !tried.contains(&self.index_of(e)) && eligible(e);
        let usable = |e: &Endpoint| ok(e) && e.breaker.available(now);
        let here = |e: &Endpoint| e.zone == ZoneRelation::Same;
        let share = self
            .zone_share
            .filter(|_| self.endpoints.iter().any(|e| here(e) && usable(e)));
        let in_scope = |e: &Endpoint| share.is_none() || here(e);
        if let Some(probe) =
            (self.endpoints.iter()).find(|e| in_scope(e) && ok(e) && e.breaker.probe_ready(now))
        {
            return Some((self.index_of(probe), self.zone_choice(probe)));
        }
        let Some(share) = share else {
            let picked = self.p2c(usable, read)?;
            return Some((self.index_of(picked), self.zone_choice(picked)));
        };
        if share < 1.0
            && hostmesh_balance::unit_roll() >= share
            && let Some(there) = self.p2c(|e| !here(e) && usable(e), read)
        {
            return Some((self.index_of(there), ZoneChoice::SpilledShare));
        }
        let picked = self.p2c(|e| here(e) && usable(e), read)?;
        Some((self.index_of(picked), ZoneChoice::InZone))
    }

    /// How zones account for a pick made without a zone preference at that moment.
    fn zone_choice(&self, picked: &Endpoint) -> ZoneChoice {
        match (self.zone_share, picked.zone) {
            (None, _) => ZoneChoice::NotApplied,
            (Some(_), ZoneRelation::Same) => ZoneChoice::InZone,
            (Some(_), _) => ZoneChoice::SpilledNoneLeft,
        }
    }

    /// The share of requests kept in this agent's zone while it has an eligible instance;
    /// `None` when zones do not apply (`locality = "any"`, or this agent has no zone).
    pub fn zone_share(&self) -> Option<f64> {
        self.zone_share
    }

    /// P2C over the endpoints `usable` admits.
    fn p2c(&self, usable: impl Fn(&Endpoint) -> bool, read: Read) -> Option<&Endpoint> {
        fn stats(e: &Endpoint) -> (&EndpointStats, u32) {
            (e.stats.as_ref(), e.weight)
        }
        let exclude = |e: &Endpoint| !usable(e);
        match read {
            Read::Pick => hostmesh_balance::pick(&self.endpoints, stats, exclude),
            Read::Peek => hostmesh_balance::peek(&self.endpoints, stats, exclude),
        }
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
        let table = RouteTable::build(snapshot(both()), "a", None, shared.clone());
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
        let table = RouteTable::build(snapshot(both()), "a", None, shared.clone());
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
        let first = RouteTable::build(snapshot(both()), "a", None, shared.clone());
        let before = first.get(dst(1, 8080)).unwrap();

        let next = RouteTable::build(snapshot(both()), "a", None, shared.clone());
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
            None,
            shared.clone(),
        );
        assert_eq!((shared.stats.len(), shared.breakers.len()), (1, 1));
        let b = gone.get(dst(1, 8080)).unwrap();
        assert!(Arc::ptr_eq(
            &before.endpoints[0].stats,
            &b.endpoints[0].stats
        ));
    }

    /// `orders` with b/1 in z1 and c/1 in z2, as seen from host a in `self_zone`, with
    /// `locality`; `hosts` are the agents in the catalog by zone.
    fn zoned(locality: Locality, self_zone: Option<&str>, hosts: &[&str]) -> Arc<Route> {
        zoned_weighted(locality, self_zone, hosts, 100)
    }

    /// [`zoned`] with b's weight (c's is 100).
    fn zoned_weighted(
        locality: Locality,
        self_zone: Option<&str>,
        hosts: &[&str],
        b_weight: u32,
    ) -> Arc<Route> {
        let mut b = instance("b", "1", &[]);
        b.zone = Some("z1".into());
        b.weight = b_weight;
        let mut c = instance("c", "1", &[]);
        c.zone = Some("z2".into());
        let mut snap = Arc::unwrap_or_clone(snapshot(vec![b, c]));
        let policy = RoutePolicy {
            locality,
            ..RoutePolicy::default()
        };
        snap.routes.insert("orders".into(), policy.to_json());
        for (n, zone) in hosts.iter().enumerate() {
            let info = hostmesh_registrar::record::HostInfo {
                address: IpAddr::from([198, 18, 0, 9]),
                inbound_port: 4143,
                zone: Some((*zone).to_owned()),
                version: String::new(),
            };
            snap.hosts.insert(format!("h{n}"), info);
        }
        let table = RouteTable::build(Arc::new(snap), "a", self_zone, Arc::default());
        table.get(dst(1, 8080)).unwrap()
    }

    fn picks(route: &Route, tried: &[usize], n: usize) -> [usize; 2] {
        let mut counts = [0; 2];
        for _ in 0..n {
            counts[route.pick(tried, |_| true).unwrap()] += 1;
        }
        counts
    }

    #[test]
    fn a_zone_with_its_fair_share_of_instances_keeps_every_request() {
        // One instance in each zone; the hosts are two to one, which is within the slack.
        let route = zoned(Locality::Zone, Some("z1"), &["z1", "z1", "z2"]);
        assert_eq!(route.endpoints[0].zone(), ZoneRelation::Same);
        assert_eq!(route.endpoints[1].zone(), ZoneRelation::Other);
        assert_eq!(route.zone_share(), Some(1.0));
        assert_eq!(picks(&route, &[], 500), [500, 0]);
        assert_eq!(route.preview(|_| true), Some((0, ZoneChoice::InZone)));
    }

    #[test]
    fn without_a_preference_or_a_zone_both_zones_take_requests() {
        for (locality, zone) in [(Locality::Any, Some("z1")), (Locality::Zone, None)] {
            let route = zoned(locality, zone, &["z1", "z2"]);
            assert_eq!(route.zone_share(), None);
            let [b, c] = picks(&route, &[], 200);
            assert!(b > 0 && c > 0, "{locality:?} {zone:?}: {b} {c}");
            assert_eq!(route.preview(|_| true).unwrap().1, ZoneChoice::NotApplied);
        }
    }

    #[test]
    fn a_zone_with_nothing_left_spills() {
        let route = zoned(Locality::Zone, Some("z1"), &["z1", "z2"]);
        // b already failed this request: c, in the other zone, is all there is.
        assert_eq!(picks(&route, &[0], 100), [0, 100]);
        assert_eq!(
            route.choose(&[0], |_| true, Read::Peek, Instant::now()),
            Some((1, ZoneChoice::SpilledNoneLeft))
        );
        // The same when a split leaves only the other zone.
        assert_eq!(
            route.choose(&[], |e| e.host == "c", Read::Peek, Instant::now()),
            Some((1, ZoneChoice::SpilledNoneLeft))
        );
    }

    #[test]
    fn a_zone_with_many_callers_and_few_instances_sends_a_share_away() {
        // z1 has a fifth of the weight (25 of 125) and half the hosts: it keeps
        // 2 × 0.2 / 0.5 = 80 % and sends the rest to z2.
        let route = zoned_weighted(Locality::Zone, Some("z1"), &["z1", "z2"], 25);
        let share = route.zone_share().unwrap();
        assert!((share - 0.8).abs() < 1e-9, "{share}");
        let [b, c] = picks(&route, &[], 2000);
        // 1600 expected; 5 standard deviations (18 each) either side.
        assert!((1510..=1690).contains(&b), "{b} kept, {c} sent away");
        // Nothing left in z1: all of it goes to z2, whatever the share.
        assert_eq!(picks(&route, &[0], 100), [0, 100]);
    }

    #[test]
    fn zone_share_is_capped_and_defined_for_empty_counts() {
        // Twice the fair share at most, never more than everything.
        assert!((zone_share(10, 100, 9, 10) - 0.2 / 0.9).abs() < 1e-9);
        assert_eq!(zone_share(50, 100, 9, 10), 1.0);
        assert_eq!(zone_share(0, 100, 1, 10), 0.0);
        // No weight or no hosts known: keep everything in the zone.
        assert_eq!(zone_share(0, 0, 1, 1), 1.0);
        assert_eq!(zone_share(10, 100, 0, 0), 1.0);
        // This agent counts even before its own record is in the catalog.
        assert!((zone_share(10, 100, 0, 2) - 0.4).abs() < 1e-9);
    }
}
