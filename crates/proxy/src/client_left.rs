//! A request dropped before its answer because whoever sent it left: an app's client closed its
//! connection or reset its HTTP/2 stream (outbound), or a peer agent reset its stream (inbound).
//! Both sides finish it the same way, with nginx's 499 (`http_errors::CLIENT_CLOSED`).

use std::time::Duration;

use tokio::time::Instant;

use crate::http_errors;
use crate::metrics::{ProxyMetrics, ServiceHandles};
use crate::trace::Hop;

/// Ends the request's trace span and counts it under `code="499"`. Returns that status and how
/// long the request lasted, for its access log entry (which each side settles its own way).
pub fn finish(
    metrics: &ProxyMetrics,
    handles: &ServiceHandles,
    service: &str,
    direction: &'static str,
    started: Instant,
    hop: Option<Hop>,
) -> (u16, Duration) {
    let took = started.elapsed();
    let status = http_errors::CLIENT_CLOSED.as_u16();
    if let Some(hop) = hop {
        hop.finish(status);
    }
    metrics.request_via(handles, service, direction, (status, None), took);
    (status, took)
}
