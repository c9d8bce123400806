//! Balancing and breakers: which instance a request goes to, and which instances no request
//! goes to for a while. Pure: no I/O, no sockets, no etcd; time is `tokio::time::Instant` so the
//! tests can pause and advance it.
//!
//! # Balancing
//! Power of two choices over Peak-EWMA latency, in-flight counts and weights.
//!
//! Our own rather than tower's `p2c::Balance`: that one picks an endpoint before it sees the
//! request, so it cannot narrow by tag, route split or "not the instance that just failed", has
//! no weights, and waits for readiness where we want to fail fast with 503 `no-endpoints`.
//! Here the caller narrows the candidates (passing, un-ejected, tag or split subset) and says
//! which to skip (instances this request already failed on), and [`pick`] compares two of them.
//!
//! - `ewma.rs`: the Peak-EWMA cell (seed 30 ms, decay 10 s, reads decay toward 0).
//! - `stats.rs`: per-endpoint in-flight count + EWMA, and the [`InFlight`] guard.
//! - `registry.rs`: stats by instance identity, kept across catalog snapshots.
//!
//! Cost of an endpoint = `estimate × (in_flight + 1) / weight`, lower wins.
//!
//! # Breakers
//! [`breaker`]: per-instance ejection after consecutive failures, probed back one request at a
//! time, at most a share of a service's instances ejected at once.

pub mod breaker;
mod ewma;
mod registry;
mod stats;

use std::cell::Cell;
use std::hash::{BuildHasher, RandomState};

use tokio::time::Instant;

pub use ewma::{DECAY, DEFAULT_RTT, PeakEwma};
pub use registry::{EndpointKey, EndpointMap, EndpointTable};
pub use stats::{EndpointStats, InFlight};

thread_local! {
    // Per thread, so picks on different workers never share (or contend on) RNG state. A pick
    // never awaits, so a task moving between threads is harmless.
    static RNG: Cell<Rng> = Cell::new(Rng::new());
}

/// Runs `f` with this thread's RNG and keeps the state it leaves.
fn with_rng<R>(f: impl FnOnce(&mut Rng) -> R) -> R {
    RNG.with(|cell| {
        let mut rng = cell.get();
        let r = f(&mut rng);
        cell.set(rng);
        r
    })
}

/// 64 random bits from this thread's RNG (trace and span ids: unique enough, not secret).
pub fn random_u64() -> u64 {
    with_rng(Rng::next_u64)
}

/// A uniform draw in `0..n` (`n > 0`) from this thread's RNG (traffic splits).
pub fn roll(n: u32) -> u32 {
    let r = with_rng(|rng| rng.below(n.max(1) as usize));
    // Below n, which is a u32.
    #[allow(clippy::cast_possible_truncation)]
    let r = r as u32;
    r
}

/// A uniform draw in `[0, 1)` from this thread's RNG (backoff jitter).
pub fn unit_roll() -> f64 {
    f64::from(roll(1 << 20)) / f64::from(1u32 << 20)
}

/// Picks one of `candidates` by power of two choices, with this thread's RNG. See [`pick_with`].
pub fn pick<T>(
    candidates: &[T],
    stats: impl Fn(&T) -> (&EndpointStats, u32),
    exclude: impl Fn(&T) -> bool,
) -> Option<&T> {
    with_rng(|rng| pick_with(rng, candidates, stats, exclude))
}

/// The same draw as [`pick`], comparing costs with [`EndpointStats::peek_cost_at`]: the
/// estimates' timestamps stay as they were, so looking (`hostmesh explain`) does not change how
/// the next real request is balanced.
pub fn peek<T>(
    candidates: &[T],
    stats: impl Fn(&T) -> (&EndpointStats, u32),
    exclude: impl Fn(&T) -> bool,
) -> Option<&T> {
    with_rng(|rng| draw(rng, candidates, &stats, exclude, Read::Peek))
}

/// How [`draw`] reads the two costs it compares.
#[derive(Clone, Copy)]
enum Read {
    /// As a pick: the read counts as an observation (decays the estimate's timestamp).
    Pick,
    /// Without recording anything.
    Peek,
}

/// Picks one of `candidates` not excluded: with none, `None`; with one, that one whatever its
/// cost; otherwise two distinct ones uniformly at random, and the cheaper (see
/// [`EndpointStats::cost_at`]; a tie goes to the first drawn, itself random).
///
/// `stats` gives a candidate's stats and weight (weight 0 counts as 1); `exclude` says which to
/// skip, for example the instances this request already failed on (`|_| false` on a first
/// attempt). Both must be pure: `exclude` may be called more than once per candidate. Reading
/// the two costs decays their estimates (see [`PeakEwma::get_at`]), which is what lets an
/// endpoint that stopped being picked be picked again.
///
/// Does not allocate. With nothing excluded it looks at two candidates; when a drawn candidate
/// is excluded it scans the slice (twice) and draws again among the rest.
pub fn pick_with<'a, T>(
    rng: &mut Rng,
    candidates: &'a [T],
    stats: impl Fn(&T) -> (&EndpointStats, u32),
    exclude: impl Fn(&T) -> bool,
) -> Option<&'a T> {
    draw(rng, candidates, &stats, exclude, Read::Pick)
}

fn draw<'a, T>(
    rng: &mut Rng,
    candidates: &'a [T],
    stats: &impl Fn(&T) -> (&EndpointStats, u32),
    exclude: impl Fn(&T) -> bool,
    read: Read,
) -> Option<&'a T> {
    let n = candidates.len();
    match candidates {
        [] => return None,
        [only] => return (!exclude(only)).then_some(only),
        _ => {}
    }
    // Fast path: draw two distinct indices; if neither is excluded, the pair is uniform among
    // the pairs of eligible candidates (rejection sampling), the same as the slow path's.
    let (a, b) = rng.two_distinct(n);
    let (first, second) = (&candidates[a], &candidates[b]);
    if !exclude(first) && !exclude(second) {
        return Some(cheaper(first, second, stats, read));
    }
    let eligible = candidates.iter().filter(|c| !exclude(c)).count();
    match eligible {
        0 => None,
        1 => candidates.iter().find(|c| !exclude(c)),
        k => {
            let (i, j) = rng.two_distinct(k);
            let (lo, hi) = (i.min(j), i.max(j));
            let mut rest = candidates.iter().filter(|c| !exclude(c));
            let x = rest.nth(lo)?;
            let y = rest.nth(hi - lo - 1)?;
            // Keep the draw order so ties do not favour the earlier slot.
            let (first, second) = if i < j { (x, y) } else { (y, x) };
            Some(cheaper(first, second, stats, read))
        }
    }
}

fn cheaper<'a, T>(
    first: &'a T,
    second: &'a T,
    stats: &impl Fn(&T) -> (&EndpointStats, u32),
    read: Read,
) -> &'a T {
    let now = Instant::now();
    let cost = |c: &T| {
        let (s, w) = stats(c);
        match read {
            Read::Pick => s.cost_at(now, w),
            Read::Peek => s.peek_cost_at(now, w),
        }
    };
    if cost(first) <= cost(second) {
        first
    } else {
        second
    }
}

/// A small fast RNG (wyrand, as in `fastrand`) for drawing candidates. Not for anything that
/// needs unpredictability.
#[derive(Debug, Clone, Copy)]
pub struct Rng(u64);

impl Default for Rng {
    fn default() -> Self {
        Self::new()
    }
}

impl Rng {
    /// Seeded from std's per-process random hash keys.
    pub fn new() -> Self {
        Rng(RandomState::new().hash_one(0x6865_6d65_7368u64))
    }

    /// A reproducible sequence (tests).
    pub fn with_seed(seed: u64) -> Self {
        Rng(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0xa076_1d64_78bd_642f);
        let t = u128::from(self.0) * u128::from(self.0 ^ 0xe703_7ed1_a0b4_28db);
        // Truncation intended: fold the 128-bit product into 64 bits.
        #[allow(clippy::cast_possible_truncation)]
        let folded = (t as u64) ^ ((t >> 64) as u64);
        folded
    }

    /// Uniform in `0..n` (`n > 0`) by multiply-and-shift; the bias is below n / 2⁶⁴.
    pub fn below(&mut self, n: usize) -> usize {
        // usize fits in u128, and the result is below n, so it fits back in usize.
        #[allow(clippy::cast_possible_truncation)]
        let r = ((u128::from(self.next_u64()) * n as u128) >> 64) as usize;
        r
    }

    /// Two distinct indices in `0..n` (`n ≥ 2`), uniform over ordered pairs.
    fn two_distinct(&mut self, n: usize) -> (usize, usize) {
        let a = self.below(n);
        let mut b = self.below(n - 1);
        if b >= a {
            b += 1;
        }
        (a, b)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[derive(Debug)]
    struct Ep {
        n: usize,
        stats: Arc<EndpointStats>,
        weight: u32,
    }

    fn eps(count: usize) -> Vec<Ep> {
        (0..count)
            .map(|n| Ep {
                n,
                stats: Arc::new(EndpointStats::new()),
                weight: 100,
            })
            .collect()
    }

    fn st(e: &Ep) -> (&EndpointStats, u32) {
        (&e.stats, e.weight)
    }

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn no_candidates_no_pick() {
        let none: [Ep; 0] = [];
        assert!(pick(&none, st, |_| false).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn one_candidate_is_picked_whatever_its_cost() {
        let one = eps(1);
        let _busy: Vec<_> = (0..100).map(|_| one[0].stats.start()).collect();
        one[0].stats.start().finish(Duration::from_secs(5));
        assert_eq!(pick(&one, st, |_| false).unwrap().n, 0);
        assert!(pick(&one, st, |e| e.n == 0).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn sequential_requests_go_to_the_fast_endpoint_and_the_slow_one_recovers() {
        let eps = eps(2);
        let mut rtt = [50 * MS, MS]; // 0 is slow (behind the fault proxy), 1 is fast
        let mut rng = Rng::with_seed(7);
        let mut count = [0u32; 2];
        for _ in 0..500 {
            let e = pick_with(&mut rng, &eps, st, |_| false).unwrap();
            count[e.n] += 1;
            let g = e.stats.start();
            tokio::time::advance(rtt[e.n]).await;
            g.finish(rtt[e.n]);
        }
        assert!(count[1] >= 400, "fast got {count:?}");

        // The fault is removed. The slow endpoint is not picked, so only time decays its
        // estimate; it must be tried again within 60 s of requests (one every 10 ms).
        rtt[0] = MS;
        let fixed = Instant::now();
        loop {
            let e = pick_with(&mut rng, &eps, st, |_| false).unwrap();
            if e.n == 0 {
                break;
            }
            let g = e.stats.start();
            tokio::time::advance(rtt[e.n]).await;
            g.finish(rtt[e.n]);
            tokio::time::advance(9 * MS).await;
            assert!(fixed.elapsed() <= Duration::from_secs(60), "not retried");
        }
        // Not at once either: it was avoided for a while.
        assert!(
            fixed.elapsed() >= Duration::from_secs(10),
            "{:?}",
            fixed.elapsed()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_never_picked_slow_endpoint_falls_below_a_fast_one_within_60s() {
        let start = Instant::now();
        let slow = EndpointStats::with_ewma(PeakEwma::with_params(50 * MS, DECAY, start));
        let fast = Arc::new(EndpointStats::with_ewma(PeakEwma::with_params(
            MS, DECAY, start,
        )));
        // The fast endpoint serves a 1 ms request every 100 ms; the slow one is only looked at.
        loop {
            let now = Instant::now();
            if slow.cost_at(now, 100) < fast.cost_at(now, 100) {
                break;
            }
            assert!(
                now - start <= Duration::from_secs(60),
                "still slower after 60 s"
            );
            let g = fast.start();
            tokio::time::advance(MS).await;
            g.finish(MS);
            tokio::time::advance(99 * MS).await;
        }
        // ln(50 / ~1) × 10 s ≈ 39 s.
        let t = start.elapsed();
        assert!(t >= Duration::from_secs(35), "{t:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn in_flight_raises_cost() {
        // Created at the same paused instant: equal estimates.
        let eps = eps(2);
        let _busy: Vec<_> = (0..10).map(|_| eps[0].stats.start()).collect();
        let mut rng = Rng::with_seed(1);
        for _ in 0..100 {
            assert_eq!(pick_with(&mut rng, &eps, st, |_| false).unwrap().n, 1);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn weight_shares_concurrent_load() {
        let mut eps = eps(2);
        eps[0].weight = 300;
        let mut rng = Rng::with_seed(2);
        // Sequential at equal estimates: the heavier always wins.
        for _ in 0..50 {
            assert_eq!(pick_with(&mut rng, &eps, st, |_| false).unwrap().n, 0);
        }
        // Concurrent (nothing finishes): load splits about 3:1.
        let mut held = Vec::new();
        let mut count = [0u32; 2];
        for _ in 0..400 {
            let e = pick_with(&mut rng, &eps, st, |_| false).unwrap();
            count[e.n] += 1;
            held.push(e.stats.start());
        }
        assert!((295..=305).contains(&count[0]), "{count:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn excluded_candidates_are_never_picked() {
        let eps = eps(3);
        // 2 is the cheapest by far; excluding it must still win over cost.
        eps[0].stats.start().finish(Duration::from_millis(500));
        eps[1].stats.start().finish(Duration::from_millis(400));
        let mut rng = Rng::with_seed(3);
        let mut count = [0u32; 3];
        for _ in 0..300 {
            count[pick_with(&mut rng, &eps, st, |e| e.n == 2).unwrap().n] += 1;
        }
        // Of the two left, P2C always compares both: the cheaper one, every time.
        assert_eq!(count, [0, 300, 0]);
        // Everything but one excluded: that one, every time.
        for _ in 0..50 {
            assert_eq!(pick_with(&mut rng, &eps, st, |e| e.n != 0).unwrap().n, 0);
        }
        // Everything excluded: nothing.
        assert!(pick_with(&mut rng, &eps, st, |_| true).is_none());
        // With two candidates, excluding the cheaper gives the other.
        assert_eq!(pick(&eps[1..], st, |e| e.n == 2).unwrap().n, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_pair_is_drawn_uniformly() {
        // Equal costs: the pick is the first drawn, so each eligible candidate gets about the
        // same share, through the fast path and through the excluding slow path alike.
        let eps = eps(5);
        let mut rng = Rng::with_seed(4);
        let mut count = [0u32; 5];
        for _ in 0..8000 {
            count[pick_with(&mut rng, &eps, st, |e| e.n == 3).unwrap().n] += 1;
        }
        assert_eq!(count[3], 0);
        for (n, c) in count.iter().enumerate() {
            if n != 3 {
                assert!((1800..=2200).contains(c), "{count:?}");
            }
        }
    }

    #[test]
    fn below_stays_in_range() {
        let mut rng = Rng::new();
        for n in 1..50 {
            for _ in 0..100 {
                assert!(rng.below(n) < n);
            }
        }
        for _ in 0..1000 {
            let (a, b) = rng.two_distinct(2);
            assert_ne!(a, b);
            assert!(a < 2 && b < 2);
        }
    }
}
