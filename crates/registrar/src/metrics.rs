//! The registry side's metric handles, created once at start and passed down.

use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Default)]
pub struct RegistryMetrics {
    /// 1 while the catalog's watch on etcd is established and answering.
    pub connected: Gauge,
    /// Seconds since the catalog was last known to match etcd; set at scrape time.
    pub staleness_seconds: Gauge<f64, AtomicU64>,
    /// The etcd revision the catalog has applied; set at scrape time. Comparing it across
    /// agents shows one that lags.
    pub catalog_revision: Gauge,
    /// Names whose VIP in etcd differs from the one this agent keeps; set at scrape time.
    pub vip_conflicts: Gauge,
    pub lease_keepalive_failures: Counter,
    /// Leases that expired under the agent (every key re-registered under a new one).
    pub lease_losses: Counter,
    pub watch_restarts: Counter,
    pub own_keys_restored: Counter,
}

impl RegistryMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = RegistryMetrics::default();
        registry.register(
            "hostmesh_registry_connected",
            "1 while the catalog watch on etcd is established and answering, else 0",
            m.connected.clone(),
        );
        registry.register(
            "hostmesh_catalog_staleness_seconds",
            "Seconds since the catalog was last confirmed current with etcd",
            m.staleness_seconds.clone(),
        );
        registry.register(
            "hostmesh_catalog_revision",
            "The etcd revision the catalog has applied",
            m.catalog_revision.clone(),
        );
        registry.register(
            "hostmesh_vip_conflicts",
            "Names whose VIP changed in etcd after this agent handed it out (the old one is kept)",
            m.vip_conflicts.clone(),
        );
        registry.register(
            "hostmesh_lease_keepalive_failures",
            "Lease keep-alives that failed or went unanswered",
            m.lease_keepalive_failures.clone(),
        );
        registry.register(
            "hostmesh_lease_losses",
            "Times this host's lease expired and every key was registered again under a new one",
            m.lease_losses.clone(),
        );
        registry.register(
            "hostmesh_etcd_watch_restarts",
            "Times the catalog watch broke and was re-established (re-list included)",
            m.watch_restarts.clone(),
        );
        registry.register(
            "hostmesh_own_keys_restored",
            "Times this host's keys in etcd were deleted or changed by someone else and put back",
            m.own_keys_restored.clone(),
        );
        m
    }
}
