//! One endpoint's live load: requests in flight and a Peak-EWMA of its latency, and the guard
//! that keeps the in-flight count honest whatever way a request ends.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::ewma::PeakEwma;

/// The smallest estimate a cost is computed from, in nanoseconds. An endpoint left alone long
/// enough decays to (nearly) 0, and `0 × (in_flight + 1)` would hide its in-flight count, so a
/// burst would all land on it (Finagle guards the same case with a penalty).
const MIN_ESTIMATE_NS: f64 = 1_000.0;

/// Live load of one endpoint (an instance of a service), shared by every route that can pick it
/// and kept across catalog snapshots by [`super::EndpointTable`].
#[derive(Debug)]
pub struct EndpointStats {
    in_flight: AtomicU64,
    ewma: PeakEwma,
}

impl Default for EndpointStats {
    fn default() -> Self {
        Self::new()
    }
}

impl EndpointStats {
    /// Stats for a new endpoint: nothing in flight, latency seeded with
    /// [`super::DEFAULT_RTT`].
    pub fn new() -> Self {
        Self::with_ewma(PeakEwma::new())
    }

    pub fn with_ewma(ewma: PeakEwma) -> Self {
        EndpointStats {
            in_flight: AtomicU64::new(0),
            ewma,
        }
    }

    /// Marks a request (HTTP) or connection attempt (TCP) to this endpoint as started. End it
    /// with [`InFlight::finish`] on success or [`InFlight::failed`] on failure; dropping the
    /// guard (cancelled by the client, or a failure that says nothing about the endpoint) only
    /// ends the in-flight count.
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.start_at(Instant::now())
    }

    /// [`Self::start`] with the clock already read.
    pub fn start_at(self: &Arc<Self>, now: Instant) -> InFlight {
        // Relaxed: a load counter read by pickers, ordering nothing else.
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight {
            stats: Arc::clone(self),
            started: now,
        }
    }

    /// The P2C cost at `now`: `estimate × (in_flight + 1) / weight`, lower is better. Reading it
    /// decays the estimate (see [`PeakEwma::get_at`]). A weight of 0 counts as 1.
    ///
    /// An endpoint never observed and with nothing in flight costs the minimum: it is probed by
    /// the next pick that draws it, and its first sample then replaces the seed. While that probe
    /// is in flight it costs the seed × 2, so a new instance gets one request at a time until
    /// something is known about it, never a burst.
    pub fn cost_at(&self, now: Instant, weight: u32) -> f64 {
        self.cost_with(weight, || self.ewma.get_at(now))
    }

    /// [`Self::cost_at`] without recording the read (see [`PeakEwma::peek_at`]): what a pick at
    /// `now` would compare, for `explain`, which must leave the balancer as it found it.
    pub fn peek_cost_at(&self, now: Instant, weight: u32) -> f64 {
        self.cost_with(weight, || self.ewma.peek_at(now))
    }

    fn cost_with(&self, weight: u32, estimate: impl FnOnce() -> f64) -> f64 {
        let in_flight = self.in_flight();
        if in_flight == 0 && !self.ewma.is_observed() {
            return MIN_ESTIMATE_NS / f64::from(weight.max(1));
        }
        let estimate = estimate().max(MIN_ESTIMATE_NS);
        // u64 → f64 is exact up to 2⁵³ requests in flight.
        #[allow(clippy::cast_precision_loss)]
        let load = (in_flight + 1) as f64;
        estimate * load / f64::from(weight.max(1))
    }

    /// [`Self::cost_at`] now.
    pub fn cost(&self, weight: u32) -> f64 {
        self.cost_at(Instant::now(), weight)
    }

    /// The latency estimate in milliseconds as of now, for `/status`. Does not count as a read
    /// (see [`PeakEwma::peek_at`]).
    pub fn ewma_ms(&self) -> f64 {
        self.ewma.peek_at(Instant::now()) / 1e6
    }

    /// Requests or connection attempts started and not yet ended.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn ewma(&self) -> &PeakEwma {
        &self.ewma
    }
}

/// One request or connection attempt in flight to an endpoint. Dropping it ends the in-flight
/// count; [`Self::finish`] and [`Self::failed`] also record what the attempt said about the
/// endpoint's latency.
#[derive(Debug)]
#[must_use = "dropping the guard at once ends the request's in-flight count"]
pub struct InFlight {
    stats: Arc<EndpointStats>,
    started: Instant,
}

impl InFlight {
    /// Success: records `rtt` (time to response headers for HTTP, connect time — including the
    /// peer agent's `OK` — for TCP) into the endpoint's EWMA.
    pub fn finish(self, rtt: Duration) {
        self.stats.ewma.observe(rtt);
    }

    /// [`Self::finish`] with the clock already read (`now`).
    pub fn finish_at(self, now: Instant, rtt: Duration) {
        self.stats.ewma.observe_at(now, rtt);
    }

    /// Failure that is the endpoint's doing (connect failure or refusal, reset, 502/503/504,
    /// `no-local-instance`, deadline exceeded): records `max(time since start, the estimate)` as a
    /// peak (see [`PeakEwma::penalize_at`]), so a
    /// failing endpoint looks worse for a while instead of better for answering fast.
    pub fn failed(self) {
        let now = Instant::now();
        self.stats
            .ewma
            .penalize_at(now, now.saturating_duration_since(self.started));
    }

    /// Time since [`EndpointStats::start`].
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    pub fn stats(&self) -> &Arc<EndpointStats> {
        &self.stats
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_guard_counts_in_flight() {
        let s = Arc::new(EndpointStats::new());
        let a = s.start();
        let b = s.start();
        assert_eq!(s.in_flight(), 2);
        drop(a);
        assert_eq!(s.in_flight(), 1);
        b.finish(Duration::from_millis(5));
        assert_eq!(s.in_flight(), 0);
        s.start().failed();
        assert_eq!(s.in_flight(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_records_no_latency() {
        let s = Arc::new(EndpointStats::new());
        let g = s.start();
        tokio::time::advance(Duration::from_secs(5)).await;
        drop(g);
        // Only the decay of 5 s: 30 · e^-0.5.
        let want = 30.0 * (-0.5f64).exp();
        assert!((s.ewma_ms() - want).abs() < 1e-6, "{}", s.ewma_ms());
    }

    #[tokio::test(start_paused = true)]
    async fn finish_records_the_latency() {
        let s = Arc::new(EndpointStats::new());
        s.start().finish(Duration::from_millis(80));
        assert!((s.ewma_ms() - 80.0).abs() < 1e-9);
    }

    #[tokio::test(start_paused = true)]
    async fn a_fast_failure_never_makes_the_endpoint_look_better() {
        let s = Arc::new(EndpointStats::new());
        s.start().finish(Duration::from_millis(5));
        let before = s.ewma_ms();
        s.start().failed();
        assert!(s.ewma_ms() >= before, "{} → {}", before, s.ewma_ms());
        // A failure that took long counts with its duration.
        let g = s.start();
        tokio::time::advance(Duration::from_secs(3)).await;
        g.failed();
        assert!((s.ewma_ms() - 3000.0).abs() < 1e-6, "{}", s.ewma_ms());
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_endpoint_is_probed_one_request_at_a_time() {
        let now = Instant::now();
        let s = Arc::new(EndpointStats::new());
        // Unobserved and idle: the cheapest possible, so the next pick tries it.
        assert!(s.cost_at(now, 100) <= MIN_ESTIMATE_NS / 100.0);
        // While the probe is in flight it costs the seed × 2: no burst lands on it.
        let probe = s.start();
        assert!((s.cost_at(now, 100) - 2.0 * 30e6 / 100.0).abs() < 1e-6);
        probe.finish(Duration::from_millis(2));
        // Then it is judged by what it answered.
        assert!((s.ewma_ms() - 2.0).abs() < 1e-9);
    }

    #[tokio::test(start_paused = true)]
    async fn cost_is_estimate_times_load_over_weight() {
        let now = Instant::now();
        let s = Arc::new(EndpointStats::with_ewma(PeakEwma::with_params(
            super::super::DEFAULT_RTT,
            super::super::DECAY,
            now,
        )));
        assert!((s.cost_at(now, 100) - 30e6 / 100.0).abs() < 1e-6);
        let _g = (s.start(), s.start());
        assert!((s.cost_at(now, 100) - 3.0 * 30e6 / 100.0).abs() < 1e-6);
        // Weight 0 counts as 1.
        assert!((s.cost_at(now, 0) - 3.0 * 30e6).abs() < 1e-6);
    }

    #[tokio::test(start_paused = true)]
    async fn peeking_at_the_cost_matches_a_pick_and_records_nothing() {
        let s = Arc::new(EndpointStats::new());
        s.start().finish(Duration::from_millis(40));
        tokio::time::advance(Duration::from_secs(5)).await;
        let now = Instant::now();
        let peeked = s.peek_cost_at(now, 100);
        assert!((peeked - s.cost_at(now, 100)).abs() < 1e-6);
        // A peek leaves the cell's timestamp alone: a sample after it blends exactly as if no
        // one had looked (a read would have moved the stamp and changed the blend).
        let (looked, untouched) = (
            Arc::new(EndpointStats::new()),
            Arc::new(EndpointStats::new()),
        );
        for c in [&looked, &untouched] {
            c.start().finish(Duration::from_millis(40));
        }
        tokio::time::advance(Duration::from_secs(5)).await;
        looked.peek_cost_at(Instant::now(), 100);
        tokio::time::advance(Duration::from_secs(1)).await;
        for c in [&looked, &untouched] {
            c.start().finish(Duration::from_millis(1));
        }
        assert!((looked.ewma_ms() - untouched.ewma_ms()).abs() < 1e-9);
    }

    #[tokio::test(start_paused = true)]
    async fn in_flight_counts_even_after_a_long_idle() {
        let idle = Arc::new(EndpointStats::new());
        tokio::time::advance(Duration::from_secs(3600)).await;
        let now = Instant::now();
        let empty = idle.cost_at(now, 100);
        let _g = idle.start();
        assert!(idle.cost_at(now, 100) > empty);
    }
}
