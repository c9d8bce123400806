//! The rise/fall state machine behind every check (docs/config.md, `[check]`).
//!
//! Kept pure (no clock, no I/O) so the flap-damping rules can be tested exhaustively and the
//! runner stays a thin loop around it. One failed probe must not take an instance out of
//! rotation, and one lucky probe must not put a broken one back: a state only flips after a run
//! of *consecutive* opposite results, and any agreeing result resets that run.

use crate::record::Health;

/// Debounces probe results into `passing` / `critical` transitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thresholds {
    healthy_after: u32,
    unhealthy_after: u32,
    state: Health,
    /// Consecutive results that disagree with `state`.
    streak: u32,
}

impl Thresholds {
    /// `healthy_after` consecutive successes turn a critical instance passing; `unhealthy_after`
    /// consecutive failures turn a passing one critical. Zero is treated as 1 (config validation
    /// rejects it; this just keeps "0" from meaning "never").
    ///
    /// Maintenance is decided by the operator, not by checks: an `initial` of `Maintenance` is
    /// treated as `Critical`, i.e. the instance has not yet proven itself healthy.
    pub fn new(healthy_after: u32, unhealthy_after: u32, initial: Health) -> Self {
        let state = match initial {
            Health::Passing => Health::Passing,
            Health::Critical | Health::Maintenance => Health::Critical,
        };
        Thresholds {
            healthy_after: healthy_after.max(1),
            unhealthy_after: unhealthy_after.max(1),
            state,
            streak: 0,
        }
    }

    /// The current state: always `Passing` or `Critical`.
    pub fn state(&self) -> Health {
        self.state
    }

    /// Feeds one probe result; returns the new state when this result causes a transition.
    pub fn observe(&mut self, ok: bool) -> Option<Health> {
        let agrees = ok == (self.state == Health::Passing);
        if agrees {
            // A result agreeing with the current state breaks any run of opposite results.
            self.streak = 0;
            return None;
        }
        self.streak = self.streak.saturating_add(1);
        let (needed, next) = if ok {
            (self.healthy_after, Health::Passing)
        } else {
            (self.unhealthy_after, Health::Critical)
        };
        if self.streak < needed {
            return None;
        }
        self.state = next;
        self.streak = 0;
        Some(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Health::{Critical, Passing};

    /// Runs `results` ("+" pass, "-" fail) and returns the state reached after each step and the
    /// indexes where a transition was reported.
    fn run(t: &mut Thresholds, results: &str) -> (String, Vec<usize>) {
        let mut states = String::new();
        let mut transitions = Vec::new();
        for (i, c) in results.chars().enumerate() {
            let before = t.state();
            let got = t.observe(c == '+');
            if let Some(new) = got {
                assert_ne!(new, before, "a transition changes the state");
                assert_eq!(new, t.state());
                transitions.push(i);
            }
            states.push(if t.state() == Passing { 'P' } else { 'C' });
        }
        (states, transitions)
    }

    /// (healthy_after, unhealthy_after, initial, results ("+" pass, "-" fail), the state after
    /// each result ("P" passing, "C" critical), indexes of the results that reported a transition)
    type Case = (
        u32,
        u32,
        Health,
        &'static str,
        &'static str,
        &'static [usize],
    );

    #[test]
    fn table() {
        let cases: &[Case] = &[
            // Rise: critical needs `healthy_after` consecutive passes.
            (1, 2, Critical, "+", "P", &[0]),
            (3, 2, Critical, "+++", "CCP", &[2]),
            (3, 2, Critical, "++++++", "CCPPPP", &[2]),
            // Fall: passing needs `unhealthy_after` consecutive failures.
            (1, 2, Passing, "-", "P", &[]),
            (1, 2, Passing, "--", "PC", &[1]),
            (1, 3, Passing, "----", "PPCC", &[2]),
            (1, 1, Passing, "-", "C", &[0]),
            // Flapping resets the counts in both directions.
            (1, 3, Passing, "--+--+--", "PPPPPPPP", &[]),
            (3, 1, Critical, "++-++-++", "CCCCCCCC", &[]),
            (2, 2, Critical, "+-+-+-", "CCCCCC", &[]),
            // A full cycle: rise, a blip, fall, recovery.
            (2, 3, Critical, "++-+---++", "CPPPPPCCP", &[1, 6, 8]),
            // Agreeing results never report a transition.
            (2, 2, Passing, "++++", "PPPP", &[]),
            (2, 2, Critical, "----", "CCCC", &[]),
            // Zero behaves as 1 rather than "never".
            (0, 0, Critical, "+-", "PC", &[0, 1]),
            // Maintenance is not a check outcome: it starts out as critical.
            (1, 1, Health::Maintenance, "-+", "CP", &[1]),
        ];
        for &(rise, fall, initial, results, want_states, want_transitions) in cases {
            let mut t = Thresholds::new(rise, fall, initial);
            let (states, transitions) = run(&mut t, results);
            assert_eq!(
                (states.as_str(), transitions.as_slice()),
                (want_states, want_transitions),
                "rise={rise} fall={fall} initial={initial} results={results}"
            );
        }
    }
}
