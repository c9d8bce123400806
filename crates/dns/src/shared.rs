//! What the UDP and TCP listener tasks share: the table in force, the forwarder, the metrics and
//! the slots for forwarded queries. Its own module so that the server that builds it and the
//! listeners that read it do not import each other.

use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use tokio::sync::Semaphore;

use super::forward::Forwarder;
use super::metrics::{DnsMetrics, Outcome, QType, Source};
use super::table::Table;

/// What the listener tasks share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) table: ArcSwap<Table>,
    pub(crate) forwarder: Option<Forwarder>,
    pub(crate) metrics: DnsMetrics,
    pub(crate) in_flight: Arc<Semaphore>,
}

impl Shared {
    pub(crate) fn record(&self, qtype: QType, outcome: Outcome, source: Source, start: Instant) {
        self.metrics.record(qtype, outcome, source, start.elapsed());
    }
}
