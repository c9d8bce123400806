//! Breakers keyed by the instance's identity, so an ejection survives the catalog swapping in a
//! new snapshot (one arrives on every change anywhere in the mesh). Same shape and locking as
//! [`crate::balance::EndpointTable`]: touched when routes are built and by `/status`, never per
//! request (a route holds its members' `Arc<Breaker>`).

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard};

use super::Breaker;
use crate::balance::EndpointKey;

/// Every instance's [`Breaker`], by [`EndpointKey`].
#[derive(Debug, Default)]
pub struct BreakerTable {
    map: RwLock<HashMap<EndpointKey, Arc<Breaker>>>,
}

impl BreakerTable {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn get(&self, key: &EndpointKey) -> Option<Arc<Breaker>> {
        self.read().get(key).cloned()
    }

    /// The breaker for `key`, created closed the first time.
    pub fn get_or_insert(&self, key: &EndpointKey) -> Arc<Breaker> {
        if let Some(b) = self.get(key) {
            return b;
        }
        // Another writer may have inserted it between the two locks; `entry` keeps theirs.
        let mut map = self.map.write().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(
            map.entry(key.clone())
                .or_insert_with(|| Arc::new(Breaker::new(key.clone()))),
        )
    }

    /// Keeps the breakers `keep` says yes to and drops the rest (instances that left the
    /// catalog). An instance that comes back starts closed.
    pub fn retain(&self, mut keep: impl FnMut(&EndpointKey) -> bool) {
        self.map
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|key, _| keep(key));
    }

    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    /// Every breaker, sorted by key (for `/status`; allocates).
    pub fn entries(&self) -> Vec<(EndpointKey, Arc<Breaker>)> {
        let mut v: Vec<_> = self
            .read()
            .iter()
            .map(|(k, b)| (k.clone(), Arc::clone(b)))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    fn read(&self) -> RwLockReadGuard<'_, HashMap<EndpointKey, Arc<Breaker>>> {
        // HashMap's operations are panic-safe: a poisoned lock still holds a usable map.
        self.map.read().unwrap_or_else(PoisonError::into_inner)
    }
}
