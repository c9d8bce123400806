//! Endpoint stats keyed by the instance's identity, so latency and in-flight counts survive the
//! catalog swapping in a new snapshot (a snapshot arrives on every change anywhere in the mesh;
//! starting every instance over at the seed each time would make the EWMA useless).
//!
//! Locking: a `RwLock<HashMap>`. The request path is not meant to come here at all: a route
//! built from a snapshot holds each candidate's `Arc<EndpointStats>` and picks over those. The
//! table is touched when a route is built (one `get_or_insert` per instance, by the first
//! connection to its VIP after a catalog change), once per snapshot (one `retain`) and by
//! `/status`. Should a request path look something up, a read lock is
//! shared and never held across an `await`. An arc-swapped immutable map was the alternative;
//! it makes each insert copy the whole map, so a first snapshot of n instances costs O(n²).

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use super::stats::EndpointStats;

/// Who an endpoint is: one instance (`id`, unique per host) of `service` on `host`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EndpointKey {
    service: String,
    host: String,
    id: String,
}

impl EndpointKey {
    pub fn new(service: &str, host: &str, id: &str) -> Self {
        EndpointKey {
            service: service.to_owned(),
            host: host.to_owned(),
            id: id.to_owned(),
        }
    }

    pub fn service(&self) -> &str {
        &self.service
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn id(&self) -> &str {
        &self.id
    }
}

/// Shared per-endpoint state by [`EndpointKey`]: the balancer's [`EndpointStats`] here, the
/// breakers' state in [`crate::breaker::BreakerTable`]. Kept across catalog snapshots; touched
/// when routes are built and by `/status`, never per request (a route holds its endpoints'
/// `Arc`s). A `RwLock<HashMap>` rather than arc-swap: every insert would copy the whole map, and
/// a first snapshot of n instances would cost O(n²).
#[derive(Debug)]
pub struct EndpointMap<V> {
    map: RwLock<HashMap<EndpointKey, Arc<V>>>,
}

/// Every endpoint's [`EndpointStats`].
pub type EndpointTable = EndpointMap<EndpointStats>;

impl<V> Default for EndpointMap<V> {
    fn default() -> Self {
        EndpointMap {
            map: RwLock::new(HashMap::new()),
        }
    }
}

impl EndpointTable {
    /// The stats for `key`, created (seeded, nothing in flight) the first time.
    pub fn get_or_insert(&self, key: &EndpointKey) -> Arc<EndpointStats> {
        self.get_or_insert_with(key, EndpointStats::new)
    }
}

impl<V> EndpointMap<V> {
    pub fn new() -> Self {
        Self::default()
    }

    /// The value for `key`, if it has one.
    pub fn get(&self, key: &EndpointKey) -> Option<Arc<V>> {
        self.read().get(key).cloned()
    }

    /// The value for `key`, made by `make` the first time.
    pub fn get_or_insert_with(&self, key: &EndpointKey, make: impl FnOnce() -> V) -> Arc<V> {
        if let Some(v) = self.get(key) {
            return v;
        }
        // Another writer may have inserted it between the two locks; `entry` keeps theirs.
        let mut map = self.map.write().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(map.entry(key.clone()).or_insert_with(|| Arc::new(make())))
    }

    /// Keeps the entries `keep` says yes to and drops the rest (instances that left the
    /// catalog). Requests in flight to a dropped endpoint hold their own `Arc` and end normally;
    /// an instance that comes back starts over.
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

    /// Every entry, sorted by key (for `/status`; allocates).
    pub fn entries(&self) -> Vec<(EndpointKey, Arc<V>)> {
        let mut v: Vec<_> = self
            .read()
            .iter()
            .map(|(k, s)| (k.clone(), Arc::clone(s)))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<EndpointKey, Arc<V>>> {
        // Nothing panics while the map is half-updated (HashMap's own operations are
        // panic-safe), so a poisoned lock still holds a usable map.
        self.map.read().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn key(service: &str, host: &str, id: &str) -> EndpointKey {
        EndpointKey::new(service, host, id)
    }

    #[tokio::test(start_paused = true)]
    async fn the_same_key_gets_the_same_stats() {
        let t = EndpointTable::new();
        let a = t.get_or_insert(&key("orders", "b", "1"));
        let again = t.get_or_insert(&key("orders", "b", "1"));
        assert!(Arc::ptr_eq(&a, &again));
        // Identity is service + host + id.
        let other_host = t.get_or_insert(&key("orders", "c", "1"));
        let other_service = t.get_or_insert(&key("billing", "b", "1"));
        assert!(!Arc::ptr_eq(&a, &other_host));
        assert!(!Arc::ptr_eq(&a, &other_service));
        assert_eq!(t.len(), 3);
        assert!(t.get(&key("orders", "b", "2")).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn retain_keeps_kept_stats_and_drops_the_rest() {
        let t = EndpointTable::new();
        let kept = t.get_or_insert(&key("orders", "b", "1"));
        kept.start().finish(Duration::from_millis(80));
        let gone = t.get_or_insert(&key("orders", "c", "1"));
        let guard = gone.start();

        t.retain(|k| k.host() == "b");

        // The kept endpoint keeps its history: same cell, same estimate.
        let after = t.get(&key("orders", "b", "1")).unwrap();
        assert!(Arc::ptr_eq(&kept, &after));
        assert!((after.ewma_ms() - 80.0).abs() < 1e-9);
        // The other is gone; its in-flight request ends normally.
        assert!(t.get(&key("orders", "c", "1")).is_none());
        assert_eq!(t.len(), 1);
        drop(guard);
        assert_eq!(gone.in_flight(), 0);
        // Coming back starts over.
        let back = t.get_or_insert(&key("orders", "c", "1"));
        assert!(!Arc::ptr_eq(&gone, &back));
        assert!((back.ewma_ms() - 30.0).abs() < 1e-9);
    }

    #[test]
    fn entries_are_sorted() {
        let t = EndpointTable::new();
        t.get_or_insert(&key("orders", "c", "1"));
        t.get_or_insert(&key("billing", "b", "1"));
        t.get_or_insert(&key("orders", "b", "2"));
        let keys: Vec<_> = t.entries().into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            vec![
                key("billing", "b", "1"),
                key("orders", "b", "2"),
                key("orders", "c", "1")
            ]
        );
        assert!(!t.is_empty());
    }
}
