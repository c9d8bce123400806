//! This host's own instances, by (service, id): the only place the inbound side and same-host
//! calls look up where an app listens. Swapped whole on SIGHUP.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use hostmesh_config::spec::InstanceSpec;

/// service → instance id → definition: looked up with borrowed `&str`s, no allocation per
/// request.
type Table = HashMap<String, HashMap<String, Arc<InstanceSpec>>>;

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
        let mut map = Table::new();
        for s in specs {
            map.entry(s.service.clone())
                .or_default()
                .insert(s.id.clone(), Arc::new(s.clone()));
        }
        self.by_id.store(Arc::new(map));
    }

    pub fn get(&self, service: &str, id: &str) -> Option<Arc<InstanceSpec>> {
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
