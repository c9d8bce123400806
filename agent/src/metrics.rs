//! The agent's one Prometheus registry. Metric handles are created here once at start and passed
//! down to the components that update them; nothing is looked up by name on a hot path.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use hostmesh_registrar::metrics::RegistryMetrics;

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub registry_side: RegistryMetrics,
    pub proxy: hostmesh_proxy::metrics::ProxyMetrics,
    pub dns: hostmesh_dns::DnsMetrics,
    pub capture: hostmesh_capture::CaptureMetrics,
    pub lockdown: hostmesh_capture::lockdown::LockdownMetrics,
    pub tls: hostmesh_tls::CertMetrics,
    reloads: Family<ResultLabels, Counter>,
    /// The last reload's result and when it came, for `/status`.
    last_reload: std::sync::Mutex<Option<(std::time::SystemTime, &'static str)>>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let build_info = Family::<Vec<(String, String)>, Gauge>::default();
        registry.register(
            "hostmesh_build_info",
            "Always 1; the labels say which build is running",
            build_info.clone(),
        );
        build_info
            .get_or_create(&vec![("version".to_owned(), crate::VERSION.to_owned())])
            .set(1);
        let registry_side = RegistryMetrics::register(&mut registry);
        let proxy = hostmesh_proxy::metrics::ProxyMetrics::register(&mut registry);
        let dns = hostmesh_dns::DnsMetrics::register(&mut registry);
        let capture = hostmesh_capture::CaptureMetrics::register(&mut registry);
        let lockdown = hostmesh_capture::lockdown::LockdownMetrics::register(&mut registry);
        let tls = hostmesh_tls::CertMetrics::register(&mut registry);
        hostmesh_listen::descriptors::exhaustion().register(&mut registry);
        let reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "hostmesh_config_reloads",
            "SIGHUP reloads by result: ok, or rejected (the running configuration was kept)",
            reloads.clone(),
        );
        // Both series exist from the start, so a first rejection is a change a rule can see.
        for result in ["ok", "rejected"] {
            let _ = reloads.get_or_create(&ResultLabels { result });
        }
        Metrics {
            registry,
            registry_side,
            proxy,
            dns,
            capture,
            lockdown,
            tls,
            reloads,
            last_reload: Default::default(),
        }
    }

    /// Counts one reload attempt: `ok` or `rejected`.
    pub fn config_reload(&self, result: &'static str) {
        self.reloads.get_or_create(&ResultLabels { result }).inc();
        *self
            .last_reload
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some((std::time::SystemTime::now(), result));
    }

    /// Reloads so far by result, and the last one's result and time.
    pub fn reloads(&self) -> (u64, u64, Option<(std::time::SystemTime, &'static str)>) {
        let count = |result| self.reloads.get_or_create(&ResultLabels { result }).get();
        let last = *self
            .last_reload
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (count("ok"), count("rejected"), last)
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        self.tls.refresh();
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
