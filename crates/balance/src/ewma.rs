//! A Peak-EWMA latency cell, with Finagle's semantics.
//!
//! - A sample above the current estimate replaces it at once (the "peak"): an endpoint that turns
//!   slow is avoided on the very next pick, not after the average catches up.
//! - A sample at or below the estimate is blended in with a weight that depends on the time since
//!   the last update (`w = exp(-elapsed / tau)`), not on the number of samples, so a busy endpoint
//!   does not forget faster than an idle one.
//! - Reading the estimate for a pick is an observation of 0 (Finagle's `get()`): the estimate
//!   decays toward 0 with time. An endpoint that stopped being picked because it looked slow
//!   therefore gets tried again after a while (50 ms falls below 1 ms in about 39 s with the
//!   default 10 s decay) instead of being starved forever by a number that nothing refreshes.
//!
//! - The first sample replaces the seed outright. Blending it in would leave a new endpoint near
//!   the seed for tens of seconds on a fast network (a 2 ms service seen through a 30 ms seed), so
//!   an instance added to a service would get almost no traffic until it had decayed.
//!
//! Time is [`tokio::time::Instant`] so tests can run with paused time.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// The estimate a new endpoint starts from while its first attempt is in flight: pessimistic
/// enough that a new instance does not take a burst before anything is known about it. (An
/// unobserved endpoint with nothing in flight is probed at once; see
/// [`super::EndpointStats::cost_at`].)
pub const DEFAULT_RTT: Duration = Duration::from_millis(30);

/// The decay time constant: after `DECAY` without samples, an estimate has fallen to 1/e.
pub const DECAY: Duration = Duration::from_secs(10);

/// One endpoint's latency estimate.
///
/// A `Mutex` around two plain values (16 + 8 bytes) rather than atomics: an update reads and
/// writes the estimate and its timestamp together, which needs either a lock or a lossy packing
/// into one word. The lock is per endpoint, held for a multiply and an `exp`, never across an
/// `await`; uncontended it is one compare-and-swap to take and one store to release.
#[derive(Debug)]
pub struct PeakEwma {
    state: Mutex<State>,
    /// Decay time constant in nanoseconds.
    tau_ns: f64,
}

#[derive(Debug, Clone, Copy)]
struct State {
    /// The estimate, in nanoseconds.
    estimate_ns: f64,
    /// When `estimate_ns` was last updated (by a sample or a read).
    stamp: Instant,
    /// Whether any sample or failure was recorded (until then the estimate is the seed).
    observed: bool,
}

impl Default for PeakEwma {
    fn default() -> Self {
        Self::new()
    }
}

impl PeakEwma {
    /// A cell seeded with [`DEFAULT_RTT`] that decays with [`DECAY`], starting now.
    pub fn new() -> Self {
        let mut cell = Self::with_params(DEFAULT_RTT, DECAY, Instant::now());
        cell.state
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .observed = false;
        cell
    }

    /// A cell whose estimate is already `estimate` at `now` (as if observed), decaying with
    /// time constant `decay` (clamped to at least 1 ns).
    pub fn with_params(estimate: Duration, decay: Duration, now: Instant) -> Self {
        PeakEwma {
            state: Mutex::new(State {
                estimate_ns: nanos(estimate),
                stamp: now,
                observed: true,
            }),
            tau_ns: nanos(decay).max(1.0),
        }
    }

    /// Records a latency sample taken now.
    pub fn observe(&self, rtt: Duration) {
        self.observe_at(Instant::now(), rtt);
    }

    /// Records a latency sample taken at `now`.
    pub fn observe_at(&self, now: Instant, rtt: Duration) {
        let mut s = self.lock();
        if s.observed {
            decay(&mut s, now, self.tau_ns, nanos(rtt));
        } else {
            s.estimate_ns = nanos(rtt);
            s.stamp = now;
            s.observed = true;
        }
    }

    /// Whether any sample or failure was recorded yet.
    pub fn is_observed(&self) -> bool {
        self.lock().observed
    }

    /// Records a failed attempt that took `elapsed`: the estimate becomes at least
    /// `max(elapsed, the current estimate)`, as a peak.
    ///
    /// A failure must never make an endpoint look better: a refused connection takes
    /// microseconds, and recording that as a latency would draw more traffic to the endpoint that
    /// refuses it. It does not make it look much worse either: taking a failing instance out is
    /// the breaker's job (consecutive failures, then ejection and a probe), and a balancer that
    /// shied away from every failure would starve the breaker of the failures it counts, leaving
    /// a dead instance half-avoided for minutes instead of ejected in a few requests.
    pub fn penalize_at(&self, now: Instant, elapsed: Duration) {
        let mut s = self.lock();
        decay(&mut s, now, self.tau_ns, 0.0);
        s.observed = true;
        s.estimate_ns = s.estimate_ns.max(nanos(elapsed));
    }

    /// The estimate in nanoseconds at `now`, decayed as an observation of 0 (so this is the
    /// read a pick makes, and it moves the cell's timestamp).
    pub fn get_at(&self, now: Instant) -> f64 {
        self.update(now, 0.0)
    }

    /// The estimate in nanoseconds as of `now`, without recording the read (for `/status`, so
    /// looking does not change how much the next sample weighs).
    pub fn peek_at(&self, now: Instant) -> f64 {
        let mut s = *self.lock();
        decay(&mut s, now, self.tau_ns, 0.0);
        s.estimate_ns
    }

    fn update(&self, now: Instant, sample_ns: f64) -> f64 {
        let mut s = self.lock();
        decay(&mut s, now, self.tau_ns, sample_ns);
        s.estimate_ns
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is two plain values written together under the lock; nothing in between can
        // panic, so a poisoned lock still holds a consistent estimate.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Applies one observation of `sample_ns` at `now`.
fn decay(s: &mut State, now: Instant, tau_ns: f64, sample_ns: f64) {
    // Callers take `now` before the lock, so a later update may already have moved the stamp
    // past it: count that as no time elapsed and keep the stamp monotonic.
    let elapsed_ns = nanos(now.saturating_duration_since(s.stamp));
    if sample_ns > s.estimate_ns {
        s.estimate_ns = sample_ns;
    } else {
        let w = (-elapsed_ns / tau_ns).exp();
        s.estimate_ns = s.estimate_ns * w + sample_ns * (1.0 - w);
    }
    s.stamp = s.stamp.max(now);
}

fn nanos(d: Duration) -> f64 {
    d.as_secs_f64() * 1e9
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: f64 = 1e6;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= b.abs() * 1e-9 + 1e-3
    }

    #[tokio::test(start_paused = true)]
    async fn starts_at_the_seed() {
        let e = PeakEwma::new();
        assert!(close(e.get_at(Instant::now()), 30.0 * MS));
    }

    #[tokio::test(start_paused = true)]
    async fn a_higher_sample_is_taken_at_once() {
        let e = PeakEwma::new();
        e.observe(Duration::from_millis(50));
        assert!(close(e.get_at(Instant::now()), 50.0 * MS));
    }

    #[tokio::test(start_paused = true)]
    async fn a_lower_sample_blends_by_elapsed_time() {
        let e = PeakEwma::new();
        e.observe(Duration::from_millis(50));
        // Immediately: w = 1, the sample does not move the estimate.
        e.observe(Duration::from_millis(10));
        assert!(close(e.peek_at(Instant::now()), 50.0 * MS));
        // One time constant later: 50·e⁻¹ + 10·(1 − e⁻¹) ≈ 24.72 ms.
        tokio::time::advance(DECAY).await;
        e.observe(Duration::from_millis(10));
        let want = 50.0 * MS * (-1.0f64).exp() + 10.0 * MS * (1.0 - (-1.0f64).exp());
        assert!(
            close(e.peek_at(Instant::now()), want),
            "{}",
            e.peek_at(Instant::now())
        );
        assert!((want / MS - 24.72).abs() < 0.01);
    }

    #[tokio::test(start_paused = true)]
    async fn reads_decay_toward_zero() {
        let e = PeakEwma::new();
        e.observe(Duration::from_millis(50));
        tokio::time::advance(DECAY).await;
        let want = 50.0 * MS * (-1.0f64).exp();
        assert!(close(e.get_at(Instant::now()), want));
        // Reads compose: two reads over 2τ equal one read after 2τ.
        tokio::time::advance(DECAY).await;
        assert!(close(e.get_at(Instant::now()), want * (-1.0f64).exp()));
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_sample_replaces_the_seed() {
        let e = PeakEwma::new();
        assert!(!e.is_observed());
        e.observe(Duration::from_millis(2));
        assert!(e.is_observed());
        assert!(close(e.peek_at(Instant::now()), 2.0 * MS));
    }

    #[tokio::test(start_paused = true)]
    async fn peek_does_not_record_the_read() {
        let e = PeakEwma::with_params(DEFAULT_RTT, DECAY, Instant::now());
        tokio::time::advance(DECAY).await;
        let peeked = e.peek_at(Instant::now());
        assert!(close(peeked, 30.0 * MS * (-1.0f64).exp()));
        // The next sample still weighs as one taken a full τ after the last update.
        e.observe(Duration::from_millis(1));
        let w = (-1.0f64).exp();
        assert!(close(
            e.peek_at(Instant::now()),
            30.0 * MS * w + MS * (1.0 - w)
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_never_looks_better() {
        let e = PeakEwma::with_params(DEFAULT_RTT, DECAY, Instant::now());
        // A fast failure keeps the estimate where it was.
        e.penalize_at(Instant::now(), Duration::from_micros(50));
        assert!(close(e.peek_at(Instant::now()), 30.0 * MS));
        // A slow failure counts with its full duration.
        e.penalize_at(Instant::now(), Duration::from_secs(2));
        assert!(close(e.peek_at(Instant::now()), 2000.0 * MS));
    }

    #[test]
    fn clock_going_backwards_counts_as_no_time() {
        let now = Instant::now();
        let e = PeakEwma::with_params(Duration::from_millis(30), DECAY, now + DECAY);
        assert!(close(e.get_at(now), 30.0 * MS));
        assert!(close(e.get_at(now + DECAY), 30.0 * MS));
    }
}
