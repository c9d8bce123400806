//! One instance's breaker: its state in one atomic word (so a pick reads it with one load and
//! claims the probe with one compare-and-swap) and an atomic count of failures in a row.
//!
//! Transitions out of "ejecting" and out of a claimed probe are made only by the request that
//! made them, so those are plain stores; every other transition is a compare-and-swap from the
//! exact word it was decided on, and a lost race means "someone else moved it: do nothing".

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::{BreakerConfig, Outcome, State};
use crate::EndpointKey;

/// One instance's breaker, shared (in an `Arc`) by every route that can pick the instance and
/// kept across catalog snapshots by [`super::BreakerTable`]. The request path consults it with
/// [`Self::available`] and goes through [`super::BreakerGroup::admit`] to send.
#[derive(Debug)]
pub struct Breaker {
    key: EndpointKey,
    /// Times in the word are microseconds since this instant.
    epoch: Instant,
    word: AtomicU64,
    /// Failures in a row while closed.
    failures: AtomicU32,
}

/// How an admitted request was let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Claim {
    /// Closed: one of many.
    Regular,
    /// Half-open: the one probe; the word as it was claimed.
    Probe(Word),
}

impl Breaker {
    /// A closed breaker for the instance `key` (which only names it in logs).
    pub fn new(key: EndpointKey) -> Self {
        Breaker {
            key,
            epoch: Instant::now(),
            word: AtomicU64::new(Word::closed(0).0),
            failures: AtomicU32::new(0),
        }
    }

    pub fn key(&self) -> &EndpointKey {
        &self.key
    }

    /// Whether a request may be sent at `now`: closed, or half-open with the probe unclaimed.
    /// The pick filters on this; [`super::BreakerGroup::admit`] then claims (two pickers may both
    /// see a free probe, and only the first to claim it gets it).
    pub fn available(&self, now: Instant) -> bool {
        let w = self.load();
        match w.mode() {
            Mode::Closed | Mode::Ejecting => true,
            Mode::Ejected => !w.probing() && self.micros(now) >= w.until(),
        }
    }

    /// Whether the instance is half-open with its probe unclaimed at `now`. A picker may prefer
    /// such an instance: by latency alone it rarely wins (its failures raised its estimate), and
    /// the probe would wait until that decays.
    pub fn probe_ready(&self, now: Instant) -> bool {
        let w = self.load();
        w.mode() == Mode::Ejected && !w.probing() && self.micros(now) >= w.until()
    }

    /// The state at `now`.
    pub fn state(&self, now: Instant) -> State {
        let w = self.load();
        match w.mode() {
            Mode::Closed | Mode::Ejecting => State::Closed,
            Mode::Ejected if self.micros(now) < w.until() => State::Ejected {
                until: self.instant(w.until()),
            },
            Mode::Ejected => State::HalfOpen {
                probing: w.probing(),
            },
        }
    }

    /// Failures in a row counted while closed.
    pub fn failures(&self) -> u32 {
        // Relaxed: a counter; the decisions that depend on it are made on the state word.
        self.failures.load(Ordering::Relaxed)
    }

    /// Whether the service guard should count this instance as closed (taking its share).
    pub(super) fn is_closed(&self) -> bool {
        self.load().mode() == Mode::Closed
    }

    /// Lets one request through at `now`, claiming the probe when half-open; `None` when
    /// ejected or when the probe is out (or was just claimed by someone else).
    pub(super) fn claim(&self, now: Instant) -> Option<Claim> {
        let w = self.load();
        match w.mode() {
            Mode::Closed | Mode::Ejecting => Some(Claim::Regular),
            Mode::Ejected if w.probing() || self.micros(now) < w.until() => None,
            Mode::Ejected => {
                let claimed = w.with_probe(true);
                self.swap_from(w, claimed).then_some(Claim::Probe(claimed))
            }
        }
    }

    /// A probe ended without a report: the next picker may probe.
    pub(super) fn release(&self, claimed: Word) {
        self.swap_from(claimed, claimed.with_probe(false));
    }

    pub(super) fn succeeded(&self, claim: Claim) -> Outcome {
        match claim {
            Claim::Probe(claimed) => {
                if self.swap_from(claimed, Word::closed(0)) {
                    self.failures.store(0, Ordering::Relaxed);
                    Outcome::Recovered
                } else {
                    Outcome::Unchanged
                }
            }
            Claim::Regular => {
                let w = self.load();
                match w.mode() {
                    // Sent before the ejection: says nothing about the instance now.
                    Mode::Ejected => return Outcome::Unchanged,
                    // The multiplier resets on any success while not ejected (e.g. a spared
                    // instance that failed its probe and then recovered).
                    Mode::Closed if w.exp() != 0 => {
                        self.swap_from(w, Word::closed(0));
                    }
                    Mode::Closed | Mode::Ejecting => {}
                }
                // Read first: no write (and no cache-line bouncing) when there is nothing to reset.
                if self.failures.load(Ordering::Relaxed) != 0 {
                    self.failures.store(0, Ordering::Relaxed);
                }
                Outcome::Unchanged
            }
        }
    }

    /// Records a failure at `now`; when it reaches the threshold (or the probe failed), asks
    /// `may_eject` (the service guard, called with this breaker marked as ejecting) and ejects.
    pub(super) fn failed(
        &self,
        claim: Claim,
        config: &BreakerConfig,
        now: Instant,
        may_eject: impl FnOnce() -> bool,
    ) -> Outcome {
        let threshold = config.threshold();
        let (from, exp) = match claim {
            Claim::Probe(claimed) => (claimed, claimed.exp()),
            Claim::Regular => {
                let w = self.load();
                if w.mode() == Mode::Ejected {
                    return Outcome::Unchanged;
                }
                let count = self
                    .failures
                    .fetch_add(1, Ordering::Relaxed)
                    .saturating_add(1);
                if count < threshold || w.mode() == Mode::Ejecting {
                    return Outcome::Unchanged;
                }
                let ejecting = w.with_mode(Mode::Ejecting);
                if !self.swap_from(w, ejecting) {
                    return Outcome::Unchanged;
                }
                (ejecting, w.exp())
            }
        };
        if may_eject() {
            let duration = config.ejection_time(exp);
            let until = self.micros(now).saturating_add(micros(duration));
            let ejected = Word::ejected(exp.saturating_add(1), until);
            if !self.swap_from(from, ejected) {
                return Outcome::Unchanged;
            }
            self.failures.store(0, Ordering::Relaxed);
            Outcome::Ejected {
                duration,
                until: self.instant(ejected.until()),
            }
        } else {
            if !self.swap_from(from, Word::closed(exp)) {
                return Outcome::Unchanged;
            }
            // Still at the threshold: the next failure asks the guard again.
            self.failures.store(threshold, Ordering::Relaxed);
            Outcome::Spared
        }
    }

    fn load(&self) -> Word {
        // SeqCst with `swap_from`: the guard's "mark myself, then count the others" must see a
        // racing instance's mark (see `group.rs`).
        Word(self.word.load(Ordering::SeqCst))
    }

    fn swap_from(&self, from: Word, to: Word) -> bool {
        self.word
            .compare_exchange(from.0, to.0, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }

    fn micros(&self, t: Instant) -> u64 {
        micros(t.saturating_duration_since(self.epoch)).min(Word::MAX_UNTIL)
    }

    fn instant(&self, micros: u64) -> Instant {
        self.epoch + Duration::from_micros(micros)
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Closed,
    /// Closed, and deciding (with the service guard) whether to eject. Serves like closed;
    /// counts as ejected for the other instances' guard decisions.
    Ejecting,
    /// Ejected until `until`; half-open after it (probe claimed or not).
    Ejected,
}

/// The packed state: bits 0–1 mode, bit 2 probe claimed, bits 3–8 ejections in a row, bits
/// 9–63 the ejection end in microseconds since the breaker's epoch (over a thousand years).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Word(u64);

impl Word {
    const MODE: u64 = 0b11;
    const PROBE: u64 = 1 << 2;
    const EXP_SHIFT: u32 = 3;
    const EXP_MASK: u64 = 0x3f;
    const UNTIL_SHIFT: u32 = 9;
    const MAX_UNTIL: u64 = u64::MAX >> Self::UNTIL_SHIFT;

    fn closed(exp: u32) -> Word {
        Word(0).with_exp(exp)
    }

    fn ejected(exp: u32, until: u64) -> Word {
        Word((until.min(Self::MAX_UNTIL) << Self::UNTIL_SHIFT) | 2).with_exp(exp)
    }

    fn mode(self) -> Mode {
        match self.0 & Self::MODE {
            0 => Mode::Closed,
            1 => Mode::Ejecting,
            _ => Mode::Ejected,
        }
    }

    fn with_mode(self, mode: Mode) -> Word {
        let bits = match mode {
            Mode::Closed => 0,
            Mode::Ejecting => 1,
            Mode::Ejected => 2,
        };
        Word((self.0 & !Self::MODE) | bits)
    }

    fn probing(self) -> bool {
        self.0 & Self::PROBE != 0
    }

    fn with_probe(self, probe: bool) -> Word {
        if probe {
            Word(self.0 | Self::PROBE)
        } else {
            Word(self.0 & !Self::PROBE)
        }
    }

    fn exp(self) -> u32 {
        // Six bits: fits.
        #[allow(clippy::cast_possible_truncation)]
        let exp = ((self.0 >> Self::EXP_SHIFT) & Self::EXP_MASK) as u32;
        exp
    }

    /// Past 63 the ejection time is long capped; the count just stops.
    fn with_exp(self, exp: u32) -> Word {
        let exp = u64::from(exp).min(Self::EXP_MASK);
        Word((self.0 & !(Self::EXP_MASK << Self::EXP_SHIFT)) | (exp << Self::EXP_SHIFT))
    }

    fn until(self) -> u64 {
        self.0 >> Self::UNTIL_SHIFT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_word_packs_and_unpacks() {
        let w = Word::ejected(7, 123_456_789);
        assert_eq!(w.mode(), Mode::Ejected);
        assert_eq!((w.exp(), w.until(), w.probing()), (7, 123_456_789, false));
        let p = w.with_probe(true);
        assert!(p.probing());
        assert_eq!(
            (p.exp(), p.until(), p.mode()),
            (7, 123_456_789, Mode::Ejected)
        );
        assert_eq!(p.with_probe(false), w);
        let e = Word::closed(3).with_mode(Mode::Ejecting);
        assert_eq!((e.mode(), e.exp(), e.until()), (Mode::Ejecting, 3, 0));
        assert_eq!(Word::closed(1000).exp(), 63);
        assert_eq!(Word::ejected(1, u64::MAX).until(), Word::MAX_UNTIL);
    }
}
