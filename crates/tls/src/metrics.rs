//! `hostmesh_cert_expiry_seconds`: seconds until this host's certificate expires, computed at
//! scrape time from the material in use (so it counts down and follows reloads). Absent when
//! `tls.mode = "disabled"`: a 0 there would look like an expired certificate.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::reload::TlsStore;

type Labels = Vec<(String, String)>;

#[derive(Debug, Clone)]
pub struct CertMetrics {
    expiry: Family<Labels, Gauge<f64, AtomicU64>>,
    store: Arc<OnceLock<Arc<TlsStore>>>,
}

impl CertMetrics {
    pub fn register(registry: &mut Registry) -> CertMetrics {
        let m = CertMetrics {
            expiry: Family::default(),
            store: Arc::default(),
        };
        registry.register(
            "hostmesh_cert_expiry_seconds",
            "Seconds until this host's certificate expires (negative once it has)",
            m.expiry.clone(),
        );
        m
    }

    /// Reports the expiry of `store`'s material from now on.
    pub fn follow(&self, store: Arc<TlsStore>) {
        let _ = self.store.set(store);
    }

    /// Seconds until this host's certificate expires; `None` without mTLS.
    pub fn expiry_seconds(&self) -> Option<f64> {
        self.store.get().map(|s| s.expiry_seconds())
    }

    /// Brings the gauge up to date; called before each scrape.
    pub fn refresh(&self) {
        if let Some(store) = self.store.get() {
            self.expiry
                .get_or_create(&Vec::new())
                .set(store.expiry_seconds());
        }
    }
}
