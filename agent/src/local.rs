//! This host's own instances, by (service, id): the only place the inbound side and same-host
//! calls look up where an app listens. Swapped whole on SIGHUP.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use hostmesh_registrar::spec::InstanceSpec;

#[derive(Debug, Default)]
pub struct LocalInstances {
    by_id: ArcSwap<HashMap<(String, String), Arc<InstanceSpec>>>,
}

impl LocalInstances {
    pub fn new(specs: &[InstanceSpec]) -> Self {
        let table = LocalInstances::default();
        table.replace(specs);
        table
    }

    pub fn replace(&self, specs: &[InstanceSpec]) {
        let map = specs
            .iter()
            .map(|s| ((s.service.clone(), s.id.clone()), Arc::new(s.clone())))
            .collect();
        self.by_id.store(Arc::new(map));
    }

    pub fn get(&self, service: &str, id: &str) -> Option<Arc<InstanceSpec>> {
        self.by_id
            .load()
            .get(&(service.to_owned(), id.to_owned()))
            .cloned()
    }
}
