//! Breakers keyed by the instance's identity, so an ejection survives the catalog swapping in a
//! new snapshot (one arrives on every change anywhere in the mesh): the same keyed map as the
//! balancer's stats ([`crate::EndpointMap`]).

use std::sync::Arc;

use super::Breaker;
use crate::{EndpointKey, EndpointMap};

/// Every instance's [`Breaker`], by [`EndpointKey`].
pub type BreakerTable = EndpointMap<Breaker>;

impl BreakerTable {
    /// The breaker for `key`, created closed the first time.
    pub fn get_or_insert(&self, key: &EndpointKey) -> Arc<Breaker> {
        self.get_or_insert_with(key, || Breaker::new(key.clone()))
    }
}
