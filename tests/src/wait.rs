//! Deadline-bounded polling: tests wait for conditions, never for a guessed amount of time.

use std::thread;
use std::time::{Duration, Instant};

/// How often conditions are re-checked: fast enough that tests don't dawdle, slow enough that a
/// condition which runs a subprocess (curl, etcdctl) doesn't hog one of the two cores.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Polls `cond` every [`POLL_INTERVAL`] until it returns true; panics naming `what` after `timeout`.
///
/// The condition is always evaluated at least once, and once more at the deadline, so a zero
/// timeout means "must hold right now".
#[track_caller]
pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    wait_for(timeout, what, || cond().then_some(()));
}

/// Polls `f` every [`POLL_INTERVAL`] until it returns `Some(value)` and returns the value; panics
/// naming `what` after `timeout`.
#[track_caller]
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    match try_wait_for(timeout, &mut f) {
        Some(v) => v,
        None => panic!("timed out after {timeout:?} waiting for {what}"),
    }
}

/// Like [`wait_for`] but returns `None` on timeout instead of panicking, for tests that assert
/// something does *not* happen within a bound (use sparingly: it always costs the full timeout).
pub fn try_wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        // Never oversleep the deadline: the last check happens at (about) the deadline itself.
        thread::sleep(POLL_INTERVAL.min(deadline - now));
    }
}
