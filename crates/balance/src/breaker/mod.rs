//! Breakers: an instance failing `consecutive_failures` times in a row is ejected (picked by no
//! request) for an exponentially growing time, then probed with exactly one request; at most
//! `max_ejected_percent` of a service's instances are ejected at once, and never the last.
//!
//! # Lifecycle of one instance
//! ```text
//!  closed ──(failures in a row reach the threshold, and the service allows it)──► ejected
//!    ▲  ▲                                                                           │ time
//!    │  └──(threshold reached but the service does not allow it: stays closed)     ▼
//!    └──────────────(the probe succeeds)──────────────── half-open (one probe) ◄── ejected again
//!                                                              └──(the probe fails)──┘
//! ```
//! - Closed: every request may go; a success resets the failure count.
//! - Ejected until `now + base_ejection × 2^k` (capped at `max_ejection`), `k` = ejections in a
//!   row before this one. Requests already in flight finish; what they report is ignored.
//! - Half-open once that time has passed: the first picker to [`BreakerGroup::admit`] it claims
//!   the one probe; no one else gets it while the probe is out. The probe's success closes the
//!   breaker and resets `k`; its failure ejects it again with `k + 1`. A probe dropped without
//!   a report (the client went away) gives the claim back: the next picker probes.
//!
//! # Pieces
//! - `consecutive_failures.rs`: [`Breaker`], one instance's state in one atomic word plus an
//!   atomic failure count. Kept across catalog snapshots by [`BreakerTable`] (`table.rs`), like
//!   [`crate::EndpointStats`].
//! - `group.rs`: [`BreakerGroup`], one service's breakers and its [`BreakerConfig`] (rebuilt with
//!   each route table, so a route policy change applies at once), and the [`Admission`] token a
//!   request reports on.
//!
//! # Choices
//! - No task per breaker (linkerd drives its breaker as a task fed with response classes). Here
//!   the request path itself moves the state with atomics: a pick needs the answer synchronously
//!   (is this instance available, and may *this* request be the probe), and the time-driven step
//!   (ejected → half-open) needs no timer because it is computed from the stored ejection end at
//!   read time. That avoids a channel send per response and thousands of idle tasks.
//! - The multiplier `k` resets on a success while not ejected (the probe's, normally): linkerd's
//!   rule (a new backoff each time the breaker opens). Envoy decays it instead; a flapping
//!   instance (probe passes, then fails again at once) is therefore ejected for `base_ejection`
//!   each time rather than for longer and longer.
//! - The service guard counts half-open instances as ejected: they take one request, not their
//!   share. So re-ejecting after a failed probe never raises the count, and a guard that was full
//!   stays full while the ejected ones keep failing their probes.
//! - The guard's limit is `floor(n × max_ejected_percent / 100)` with `n` the group's members
//!   (Envoy ejects at least one whatever the percentage; here 10 % of 5 instances ejects none).
//!   An instance the guard refuses stays closed and serving, its failure count at the threshold,
//!   so its next failure asks again.
//! - Concurrent threshold crossings cannot overshoot the limit, even across two groups (old and
//!   new route table): an instance first marks itself "ejecting", then counts the others (both
//!   sequentially consistent), so of two racing instances at least one sees the other; both may
//!   back off (then the next failure decides), never both go.

mod consecutive_failures;
mod group;
mod table;

#[cfg(test)]
mod tests;

use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

pub use consecutive_failures::Breaker;
pub use group::{Admission, BreakerGroup, Counts};
pub use table::BreakerTable;

/// A service's breaker settings (`[breaker]` in its route policy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Failures in a row that eject an instance (default 5; 0 counts as 1).
    pub consecutive_failures: u32,
    /// The first ejection's length, doubled at each ejection in a row (default 5 s) ...
    pub base_ejection: Duration,
    /// ... up to this (default 60 s; it caps even a longer `base_ejection`).
    pub max_ejection: Duration,
    /// At most this share of the service's instances ejected at once (default 50; above 100
    /// counts as 100), and never the last one.
    pub max_ejected_percent: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            consecutive_failures: 5,
            base_ejection: Duration::from_secs(5),
            max_ejection: Duration::from_secs(60),
            max_ejected_percent: 50,
        }
    }
}

impl BreakerConfig {
    /// How long an ejection lasts after `previous` ejections in a row:
    /// `base_ejection × 2^previous`, at most `max_ejection`.
    pub fn ejection_time(&self, previous: u32) -> Duration {
        let factor = 1u32.checked_shl(previous).unwrap_or(u32::MAX);
        self.base_ejection
            .saturating_mul(factor)
            .min(self.max_ejection)
    }

    /// How many of `n` instances may be ejected at once (before the "never the last" rule).
    pub fn ejection_limit(&self, n: usize) -> usize {
        let pct = u64::from(self.max_ejected_percent.min(100));
        // n × pct / 100 ≤ n, so it fits back in usize.
        usize::try_from(n as u64 * pct / 100).unwrap_or(n)
    }

    pub(crate) fn threshold(&self) -> u32 {
        self.consecutive_failures.max(1)
    }
}

/// Where a breaker is, as `/status` shows it and `hostmesh_endpoints{state}` counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Requests go to the instance.
    Closed,
    /// No request goes to the instance until `until`.
    Ejected { until: Instant },
    /// The ejection is over; one probe request may go (`probing`: it is out now).
    HalfOpen { probing: bool },
}

impl State {
    /// `"closed"`, `"ejected"` or `"half-open"`: the `state` label.
    pub fn as_str(&self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Ejected { .. } => "ejected",
            State::HalfOpen { .. } => "half-open",
        }
    }

    /// What is left of the ejection at `now`; `None` unless ejected.
    pub fn ejected_for(&self, now: Instant) -> Option<Duration> {
        match self {
            State::Ejected { until } => Some(until.saturating_duration_since(now)),
            State::Closed | State::HalfOpen { .. } => None,
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a report ([`Admission::success`], [`Admission::failure`]) did to the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// No change of state: a success or a failure below the threshold in closed state, or a
    /// report that came back after the instance was ejected (ignored).
    Unchanged,
    /// This failure ejected the instance, from closed or again after a failed probe: count it
    /// in `hostmesh_ejections_total{service}`.
    Ejected { duration: Duration, until: Instant },
    /// The instance reached the threshold (or failed its probe), but the service guard
    /// (`max_ejected_percent`, never the last) kept it closed and serving.
    Spared,
    /// The probe succeeded: closed again, the ejection time back to `base_ejection`.
    Recovered,
}

impl Outcome {
    /// Whether this report ejected the instance.
    pub fn is_ejection(&self) -> bool {
        matches!(self, Outcome::Ejected { .. })
    }
}
