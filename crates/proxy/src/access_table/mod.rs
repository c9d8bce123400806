//! Access decisions: for each service, which caller hosts are allowed (the policies themselves are
//! `hostmesh_policy::access`). Rebuilt from every catalog
//! snapshot (service membership changes with the catalog, not only with policies) and swapped
//! whole, so a request only reads an immutable table: [`PolicyTable::allows`] looks up borrowed
//! `&str`s and allocates nothing.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;

use hostmesh_config::PolicyDefault;
use hostmesh_policy::StoredPolicyError;
use hostmesh_policy::access::{AccessPolicy, HostPattern};
use hostmesh_registrar::catalog::{Snapshot, Snapshots};

use crate::metrics::ProxyMetrics;

#[cfg(test)]
mod tests;

/// One snapshot's decisions.
#[derive(Debug)]
pub struct PolicyTable {
    /// For services without a policy.
    default_allow: bool,
    services: HashMap<String, ServiceAccess>,
}

/// A service's policy, resolved against one snapshot.
#[derive(Debug)]
enum ServiceAccess {
    Allow {
        /// Hosts running an allowed service, and the exact names of `allow_hosts`.
        hosts: HashSet<String>,
        /// The prefixes of `allow_hosts` patterns ending in `*`.
        prefixes: Vec<String>,
    },
    /// The stored value does not parse: every caller is denied. The value is kept so that the
    /// next table warns only when it changes; `why` is for `/status`.
    Invalid {
        stored: serde_json::Value,
        why: StoredPolicyError,
    },
}

impl PolicyTable {
    /// Denies everything: the state before a catalog is loaded, when nothing is known of the
    /// policies in etcd.
    pub fn deny_all() -> PolicyTable {
        PolicyTable {
            default_allow: false,
            services: HashMap::new(),
        }
    }

    /// The decisions for `snapshot`. A policy that does not parse denies its service and is
    /// warned about once: when `previous` did not already hold the same bad value.
    pub fn build(
        snapshot: &Snapshot,
        default: PolicyDefault,
        previous: Option<&PolicyTable>,
    ) -> PolicyTable {
        let mut services = HashMap::with_capacity(snapshot.policies.len());
        for (service, json) in &snapshot.policies {
            let access = match AccessPolicy::from_json(json) {
                Ok(policy) => resolve(&policy, snapshot),
                Err(e) => {
                    let warned = previous.and_then(|p| p.services.get(service)).is_some_and(
                        |a| matches!(a, ServiceAccess::Invalid { stored, .. } if stored == json),
                    );
                    if !warned {
                        tracing::warn!(
                            service,
                            "the policy in etcd does not parse; denying every caller until it \
                             is replaced: {e}"
                        );
                    }
                    ServiceAccess::Invalid {
                        stored: json.clone(),
                        why: e,
                    }
                }
            };
            services.insert(service.clone(), access);
        }
        PolicyTable {
            default_allow: default == PolicyDefault::Allow,
            services,
        }
    }

    /// The services whose stored policy does not parse (every caller denied), with the reason.
    pub fn invalid(&self) -> impl Iterator<Item = (&str, &StoredPolicyError)> {
        self.services
            .iter()
            .filter_map(|(service, access)| match access {
                ServiceAccess::Invalid { why, .. } => Some((service.as_str(), why)),
                ServiceAccess::Allow { .. } => None,
            })
    }

    /// Whether `caller_host` may call `service`. An empty caller (unknown) matches no host and
    /// no pattern, so it passes only where no policy applies and the default allows.
    pub fn allows(&self, service: &str, caller_host: &str) -> bool {
        match self.services.get(service) {
            None => self.default_allow,
            Some(ServiceAccess::Invalid { .. }) => false,
            Some(ServiceAccess::Allow { hosts, prefixes }) => {
                !caller_host.is_empty()
                    && (hosts.contains(caller_host)
                        || prefixes.iter().any(|p| caller_host.starts_with(p.as_str())))
            }
        }
    }
}

/// The hosts `policy` allows in `snapshot`: those with an instance of an allowed service, in any
/// health (membership, not readiness, is what the host is trusted for), and the named ones.
fn resolve(policy: &AccessPolicy, snapshot: &Snapshot) -> ServiceAccess {
    let mut hosts = HashSet::new();
    let mut prefixes = Vec::new();
    for name in &policy.allow {
        if let Some(svc) = snapshot.services.get(name) {
            hosts.extend(svc.instances.iter().map(|i| i.host.clone()));
        }
    }
    for pattern in &policy.allow_hosts {
        match pattern {
            HostPattern::Exact(h) => {
                hosts.insert(h.clone());
            }
            HostPattern::Prefix(p) => prefixes.push(p.clone()),
        }
    }
    ServiceAccess::Allow { hosts, prefixes }
}

/// The current [`PolicyTable`], shared by the inbound side (peers calling) and the outbound side
/// (same-host calls).
#[derive(Debug)]
pub struct Policies {
    default: PolicyDefault,
    table: ArcSwap<PolicyTable>,
    /// `hostmesh_policy_invalid`, kept in step with the table.
    metrics: Option<ProxyMetrics>,
}

impl Policies {
    /// Denies everything until the first snapshot arrives (see [`PolicyTable::deny_all`]).
    pub fn new(default: PolicyDefault) -> Self {
        Policies {
            default,
            table: ArcSwap::from_pointee(PolicyTable::deny_all()),
            metrics: None,
        }
    }

    /// Reports unparsable policies in `hostmesh_policy_invalid`.
    pub fn with_metrics(mut self, metrics: ProxyMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// One line per unparsable policy, for `/status`.
    pub fn problems(&self) -> Vec<String> {
        self.table
            .load()
            .invalid()
            .map(|(service, why)| {
                format!("the access policy of {service} in etcd does not parse ({why}); every caller is denied")
            })
            .collect()
    }

    pub fn allows(&self, service: &str, caller_host: &str) -> bool {
        self.table.load().allows(service, caller_host)
    }

    /// Rebuilds the table from `snapshot` and swaps it in.
    pub fn apply(&self, snapshot: &Snapshot) {
        let previous = self.table.load();
        let table = PolicyTable::build(snapshot, self.default, Some(&previous));
        if let Some(metrics) = &self.metrics {
            for (service, _) in previous.invalid() {
                metrics.policy_invalid(service, false);
            }
            for (service, _) in table.invalid() {
                metrics.policy_invalid(service, true);
            }
        }
        self.table.store(Arc::new(table));
    }

    /// Rebuilds the table on every new snapshot until `cancel`.
    pub async fn follow(self: Arc<Self>, mut snapshots: Snapshots, cancel: CancellationToken) {
        loop {
            let snapshot = snapshots.borrow_and_update().clone();
            if let Some(snapshot) = snapshot {
                self.apply(&snapshot);
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                r = snapshots.changed() => if r.is_err() { return },
            }
        }
    }
}
