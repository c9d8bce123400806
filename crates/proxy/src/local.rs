//! This host's own instances, by (service, id): the only place the inbound side and same-host
//! calls look up where an app listens. Swapped whole on SIGHUP.

use std::sync::Arc;

use arc_swap::ArcSwap;
use http::uri::Authority;

use hostmesh_config::spec::InstanceSpec;

use crate::metrics::ServiceHandles;

/// service → instance id → definition: looked up with borrowed `&str`s, no allocation per
/// request.
/// foldhash: a peer names the instance of each of its requests, twice a lookup per request,
/// and a table of fixed keys has no worst case for chosen ones to find.
type Table = foldhash::HashMap<String, foldhash::HashMap<String, Arc<Local>>>;

/// One of this host's instances: its definition, and its `target` as a URI authority (made once
/// here, not formatted and parsed for every request sent to it).
#[derive(Debug)]
pub struct Local {
    pub spec: InstanceSpec,
    pub authority: Authority,
    /// The inbound side's metric handles for its service (`ProxyMetrics::request_via`).
    pub metrics: ServiceHandles,
}

impl std::ops::Deref for Local {
    type Target = InstanceSpec;

    fn deref(&self) -> &InstanceSpec {
        &self.spec
    }
}

#[derive(Debug, Default)]
pub struct LocalInstances {
    by_id: ArcSwap<Table>,
}

impl LocalInstances {
    pub fn new(specs: &[InstanceSpec]) -> Self {
        let table = LocalInstances::default();
        table.replace(specs);
        table
    }

    pub fn replace(&self, specs: &[InstanceSpec]) {
        let mut map = Table::default();
        for s in specs {
            // A socket address always makes an authority; one that did not would be a bug.
            let Ok(authority) = Authority::try_from(s.target.to_string()) else {
                tracing::error!(target = %s.target, "not a URI authority; instance skipped");
                continue;
            };
            let local = Local {
                spec: s.clone(),
                authority,
                metrics: ServiceHandles::default(),
            };
            map.entry(s.service.clone())
                .or_default()
                .insert(s.id.clone(), Arc::new(local));
        }
        self.by_id.store(Arc::new(map));
    }

    pub fn get(&self, service: &str, id: &str) -> Option<Arc<Local>> {
        self.by_id.load().get(service)?.get(id).cloned()
    }

    /// The ids of this host's instances of `service`, sorted.
    pub fn ids(&self, service: &str) -> Vec<String> {
        let mut ids: Vec<String> = self
            .by_id
            .load()
            .get(service)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        ids.sort();
        ids
    }
}
