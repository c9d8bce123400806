//! The agent's one Prometheus registry. Metric handles are created here once at start and passed
//! down to the components that update them; nothing is looked up by name on a hot path.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use hostmesh_registrar::metrics::RegistryMetrics;

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub registry_side: RegistryMetrics,
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
        Metrics {
            registry,
            registry_side,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
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
