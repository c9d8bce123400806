//! A service's retry budget: retries may add at most `ratio` of the requests of the last 10 s,
//! plus a reserve of `min_per_second` per second, so that retries cannot multiply an outage
//! (Linkerd's budget: 20 % plus 10/s by default).
//!
//! Our own rather than tower's `TpsBudget`, which has the same sliding window: that one offers
//! no way to read the balance (`hostmesh explain` shows it; we parsed its `Debug` output), takes
//! a mutex on every deposit, and rounds the ratio down to one retry per whole number of requests
//! (a ratio of 0.3 allowed one retry per 3 requests, 33 %). Here a request deposits
//! `ratio × 1000` tokens and a retry costs 1000, the mutex is only taken when a window closes
//! (ten times per 10 s), and [`RetryBudget::retries_left`] reads the balance.

use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// How far back deposits count.
pub const WINDOW: Duration = Duration::from_secs(10);
/// The window is kept in this many slots; the oldest is dropped as a new one opens, so deposits
/// count for between 9 and 10 s.
const SLOTS: usize = 10;
/// Tokens one retry costs; a request deposits `ratio × COST`.
const COST: i64 = 1000;

/// One service's budget, shared by every request to it (across route tables while its settings
/// stay the same).
#[derive(Debug)]
pub struct RetryBudget {
    /// Tokens always available: `min_per_second × 10 s` retries' worth.
    reserve: i64,
    /// Tokens one request adds.
    deposit: i64,
    /// Deposits less withdrawals per slot; `current` is the open one.
    slots: [AtomicI64; SLOTS],
    current: AtomicUsize,
    /// When the open slot opened, in nanoseconds since `start`: read without the lock to see
    /// whether it is still open.
    opened: AtomicU64,
    start: Instant,
    /// Taken only to move to a new slot.
    rotating: Mutex<()>,
}

impl RetryBudget {
    /// `ratio` of the requests (0.2 = one retry per five requests), clamped to 0..=1000, plus
    /// `min_per_second` retries per second.
    pub fn new(ratio: f64, min_per_second: u32) -> Self {
        let ratio = if ratio.is_finite() {
            ratio.clamp(0.0, 1000.0)
        } else {
            0.0
        };
        RetryBudget {
            reserve: i64::from(min_per_second) * WINDOW.as_secs() as i64 * COST,
            deposit: (ratio * COST as f64).round() as i64,
            slots: Default::default(),
            current: AtomicUsize::new(0),
            opened: AtomicU64::new(0),
            start: Instant::now(),
            rotating: Mutex::new(()),
        }
    }

    /// Counts one request.
    pub fn deposit(&self) {
        let slot = self.rotate();
        self.slots[slot].fetch_add(self.deposit, Ordering::Relaxed);
    }

    /// Takes one retry; false when the budget is spent.
    pub fn withdraw(&self) -> bool {
        let slot = self.rotate();
        // Two withdrawals racing may both see the last token: at most one retry per racing
        // request too many, as with tower's budget.
        if self.balance() < COST {
            return false;
        }
        self.slots[slot].fetch_sub(COST, Ordering::Relaxed);
        true
    }

    /// How many retries the budget allows now. Reading it spends nothing.
    pub fn retries_left(&self) -> u64 {
        self.rotate();
        u64::try_from(self.balance().max(0) / COST).unwrap_or(0)
    }

    fn balance(&self) -> i64 {
        let windowed: i64 = self.slots.iter().map(|s| s.load(Ordering::Relaxed)).sum();
        self.reserve.saturating_add(windowed)
    }

    /// Closes the slots whose time has passed, zeroing the ones reopened, and returns the open
    /// slot's index.
    fn rotate(&self) -> usize {
        let slot_nanos = (WINDOW / SLOTS as u32).as_nanos() as u64;
        let now = self.start.elapsed().as_nanos() as u64;
        if now.saturating_sub(self.opened.load(Ordering::Acquire)) < slot_nanos {
            return self.current.load(Ordering::Acquire);
        }
        let _guard = self.rotating.lock().unwrap_or_else(|e| e.into_inner());
        let opened = self.opened.load(Ordering::Acquire);
        let passed = now.saturating_sub(opened) / slot_nanos;
        let mut current = self.current.load(Ordering::Acquire);
        if passed == 0 {
            // Another caller rotated while this one waited for the lock.
            return current;
        }
        for _ in 0..passed.min(SLOTS as u64) {
            current = (current + 1) % SLOTS;
            self.slots[current].store(0, Ordering::Relaxed);
        }
        self.current.store(current, Ordering::Release);
        self.opened
            .store(opened + passed * slot_nanos, Ordering::Release);
        current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_reserve_plus_a_ratio_of_requests_is_allowed() {
        // 10 per second over 10 s: 100 retries in reserve; 20 % of 50 requests adds 10.
        let budget = RetryBudget::new(0.2, 10);
        assert_eq!(budget.retries_left(), 100);
        for _ in 0..50 {
            budget.deposit();
        }
        assert_eq!(budget.retries_left(), 110);
        assert!(budget.withdraw());
        assert_eq!(budget.retries_left(), 109);
        // Reading it spends nothing.
        assert_eq!(budget.retries_left(), 109);
        let allowed = (0..200).filter(|_| budget.withdraw()).count();
        assert_eq!(allowed, 109);
        assert!(!budget.withdraw());
    }

    #[tokio::test(start_paused = true)]
    async fn ratios_are_not_rounded_to_whole_requests() {
        // tower's budget allowed one retry per 3 requests for 0.3.
        let budget = RetryBudget::new(0.3, 0);
        for _ in 0..100 {
            budget.deposit();
        }
        assert_eq!(budget.retries_left(), 30);
        assert_eq!(RetryBudget::new(0.0, 0).retries_left(), 0);
        assert_eq!(RetryBudget::new(f64::NAN, 1).retries_left(), 10);
    }

    #[tokio::test(start_paused = true)]
    async fn deposits_expire_after_the_window_and_overdrafts_with_them() {
        let budget = RetryBudget::new(1.0, 0);
        for _ in 0..10 {
            budget.deposit();
        }
        tokio::time::advance(Duration::from_millis(4500)).await;
        for _ in 0..5 {
            budget.deposit();
        }
        assert_eq!(budget.retries_left(), 15);
        // The first ten are in a slot dropped once 9 to 10 s have passed.
        tokio::time::advance(Duration::from_millis(5600)).await;
        assert_eq!(budget.retries_left(), 5);
        tokio::time::advance(WINDOW).await;
        assert_eq!(budget.retries_left(), 0);
        // A long quiet spell is one rotation, not one per slot passed.
        tokio::time::advance(Duration::from_secs(3600)).await;
        budget.deposit();
        assert_eq!(budget.retries_left(), 1);
    }
}
