//! What the registrar reports in `/status`.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::Serialize;

use crate::record::Health;

#[derive(Debug, Clone, Serialize)]
pub struct LocalInstance {
    pub service: String,
    pub id: String,
    pub health: Health,
    /// Its target port is locked against direct connections from other hosts.
    pub locked: bool,
    /// The networks still allowed past the lock (`allow_direct`); empty when not locked.
    pub allow_direct: Vec<String>,
}

#[derive(Debug, Default)]
pub struct RegistrarStatus {
    inner: Mutex<StatusReport>,
}

/// A point-in-time copy for `/status`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StatusReport {
    /// True while this host's instances are registered under a live lease.
    pub registered: bool,
    #[serde(serialize_with = "hex_lease")]
    pub lease: Option<i64>,
    pub last_error: Option<String>,
    pub instances: Vec<LocalInstance>,
    /// VIP allocation problems by service name (e.g. a full range).
    pub vip_errors: BTreeMap<String, String>,
}

fn hex_lease<S: serde::Serializer>(lease: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
    match lease {
        Some(l) => s.serialize_str(&format!("{l:x}")),
        None => s.serialize_none(),
    }
}

impl RegistrarStatus {
    fn with<R>(&self, f: impl FnOnce(&mut StatusReport) -> R) -> R {
        let mut guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard)
    }

    pub fn report(&self) -> StatusReport {
        self.with(|s| s.clone())
    }

    pub(super) fn set_registered(&self, registered: bool) {
        self.with(|s| s.registered = registered);
    }

    pub(super) fn set_lease(&self, lease: Option<i64>) {
        self.with(|s| s.lease = lease);
    }

    pub(super) fn set_error(&self, error: Option<String>) {
        self.with(|s| s.last_error = error);
    }

    pub(super) fn set_locals(&self, instances: Vec<LocalInstance>) {
        self.with(|s| s.instances = instances);
    }

    /// Records `name`'s VIP error (or its absence); returns whether it differs from the last
    /// one, so that a failure retried at every keep-alive is logged once, not every time.
    pub(super) fn set_vip_error(&self, name: &str, error: Option<String>) -> bool {
        self.with(|s| match error {
            Some(e) => s.vip_errors.insert(name.to_owned(), e.clone()) != Some(e),
            None => s.vip_errors.remove(name).is_some(),
        })
    }
}
