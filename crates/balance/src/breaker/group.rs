//! One service's breakers, its [`BreakerConfig`], and the service guard: at most
//! `max_ejected_percent` of the service's instances ejected at once, and never the last one.
//!
//! The guard is asked only when an instance reaches the threshold or fails its probe, never on a
//! plain pick or success; it counts the other members' states (one atomic load each). Half-open
//! and "ejecting" instances count as ejected. An instance marks itself "ejecting" before it
//! counts, with sequentially consistent operations on both sides, so of two instances deciding at
//! once at least one sees the other's mark: the limit cannot be overshot, even by two groups
//! (an old and a new route table) deciding for the same breakers.

use std::sync::Arc;

use tokio::time::Instant;

use super::consecutive_failures::{Breaker, Claim};
use super::{BreakerConfig, Outcome, State};

/// The breakers of one service's instances and the service's breaker settings. Build one per
/// service per route table (from the instances that can take traffic, across all of the
/// service's ports and tag subsets) and share it in an `Arc` between the service's routes.
#[derive(Debug)]
pub struct BreakerGroup {
    config: BreakerConfig,
    members: Vec<Arc<Breaker>>,
}

/// How many of a group's members are in each state (for `hostmesh_endpoints{service,state}`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub closed: usize,
    pub ejected: usize,
    pub half_open: usize,
}

impl BreakerGroup {
    pub fn new(config: BreakerConfig, members: Vec<Arc<Breaker>>) -> Self {
        BreakerGroup { config, members }
    }

    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    pub fn members(&self) -> &[Arc<Breaker>] {
        &self.members
    }

    /// Lets one request go to `breaker`'s instance at `now`: `Some` when closed, or when
    /// half-open and this call claimed the one probe; `None` when ejected or the probe is taken
    /// (the caller picks another instance; that is not an attempt). Report the attempt on the
    /// returned token. `breaker` should be one of the members (the guard counts the members).
    pub fn admit(self: &Arc<Self>, breaker: &Arc<Breaker>, now: Instant) -> Option<Admission> {
        let claim = breaker.claim(now)?;
        Some(Admission {
            group: Arc::clone(self),
            breaker: Arc::clone(breaker),
            claim: Some(claim),
        })
    }

    /// The members' states at `now`.
    pub fn counts(&self, now: Instant) -> Counts {
        let mut counts = Counts::default();
        for m in &self.members {
            match m.state(now) {
                State::Closed => counts.closed += 1,
                State::Ejected { .. } => counts.ejected += 1,
                State::HalfOpen { .. } => counts.half_open += 1,
            }
        }
        counts
    }

    /// Whether `breaker` (marked ejecting, or ejected after a failed probe) may be ejected: with
    /// it, at most the limit are ejected, and another member is closed.
    fn may_eject(&self, breaker: &Breaker) -> bool {
        let (mut others, mut others_closed) = (0usize, 0usize);
        for m in &self.members {
            if std::ptr::eq(Arc::as_ptr(m), breaker) {
                continue;
            }
            others += 1;
            if m.is_closed() {
                others_closed += 1;
            }
        }
        let ejected_with_it = others - others_closed + 1;
        others_closed > 0 && ejected_with_it <= self.config.ejection_limit(others + 1)
    }

    fn failed(&self, breaker: &Breaker, claim: Claim) -> Outcome {
        let outcome = breaker.failed(claim, &self.config, Instant::now(), || {
            self.may_eject(breaker)
        });
        let key = breaker.key();
        match outcome {
            Outcome::Ejected { duration, .. } => tracing::info!(
                service = key.service(),
                host = key.host(),
                instance = key.id(),
                ejection = ?duration,
                "instance ejected after failing"
            ),
            Outcome::Spared => tracing::debug!(
                service = key.service(),
                host = key.host(),
                instance = key.id(),
                max_ejected_percent = self.config.max_ejected_percent,
                "instance keeps serving: ejecting it would leave too few"
            ),
            Outcome::Unchanged | Outcome::Recovered => {}
        }
        outcome
    }

    fn succeeded(breaker: &Breaker, claim: Claim) -> Outcome {
        let outcome = breaker.succeeded(claim);
        if outcome == Outcome::Recovered {
            let key = breaker.key();
            tracing::info!(
                service = key.service(),
                host = key.host(),
                instance = key.id(),
                "instance passed its probe: back in service"
            );
        }
        outcome
    }
}

/// One request (HTTP) or connection attempt (TCP) let through by [`BreakerGroup::admit`]. Report
/// how it went with [`Self::success`] or [`Self::failure`]. Dropping it unreported (the client
/// went away, or the attempt says nothing about the instance) changes nothing, except that a
/// probe's claim is given back so another request can probe.
#[derive(Debug)]
#[must_use = "report the attempt with success() or failure(); dropping it reports nothing"]
pub struct Admission {
    group: Arc<BreakerGroup>,
    breaker: Arc<Breaker>,
    /// `None` once reported.
    claim: Option<Claim>,
}

impl Admission {
    /// Whether this attempt is the half-open instance's one probe.
    pub fn is_probe(&self) -> bool {
        matches!(self.claim, Some(Claim::Probe(_)))
    }

    pub fn breaker(&self) -> &Arc<Breaker> {
        &self.breaker
    }

    /// The instance answered well: resets the failure count; a probe closes the breaker.
    pub fn success(mut self) -> Outcome {
        match self.claim.take() {
            Some(claim) => BreakerGroup::succeeded(&self.breaker, claim),
            None => Outcome::Unchanged,
        }
    }

    /// The instance failed this attempt: counts it, and may eject the instance (see
    /// [`Outcome`]; count [`Outcome::Ejected`] in `hostmesh_ejections_total`).
    pub fn failure(mut self) -> Outcome {
        match self.claim.take() {
            Some(claim) => self.group.failed(&self.breaker, claim),
            None => Outcome::Unchanged,
        }
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        if let Some(Claim::Probe(claimed)) = self.claim.take() {
            self.breaker.release(claimed);
        }
    }
}
