//! The registrar's trouble counters, summed over a fleet.

use crate::real::Real;
use crate::sim::Sim;

/// The registrar's trouble counters summed over agents.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counters {
    lease_losses: f64,
    failed_keepalives: f64,
    watch_restarts: f64,
}

impl Counters {
    /// Summed over the simulated agents' metrics and the real agents' /metrics.
    pub fn of(sims: &[Sim], reals: &[Real]) -> Counters {
        let mut c = Counters::default();
        for m in sims.iter().map(|s| &s.metrics) {
            c.lease_losses += m.lease_losses.get() as f64;
            c.failed_keepalives += m.lease_keepalive_failures.get() as f64;
            c.watch_restarts += m.watch_restarts.get() as f64;
        }
        for r in reals {
            c.lease_losses += r.sample("hostmesh_lease_losses_total");
            c.failed_keepalives += r.sample("hostmesh_lease_keepalive_failures_total");
            c.watch_restarts += r.sample("hostmesh_etcd_watch_restarts_total");
        }
        c
    }
}

impl std::ops::Add for Counters {
    type Output = Counters;
    fn add(self, o: Counters) -> Counters {
        Counters {
            lease_losses: self.lease_losses + o.lease_losses,
            failed_keepalives: self.failed_keepalives + o.failed_keepalives,
            watch_restarts: self.watch_restarts + o.watch_restarts,
        }
    }
}

impl std::ops::Sub for Counters {
    type Output = Counters;
    fn sub(self, o: Counters) -> Counters {
        Counters {
            lease_losses: self.lease_losses - o.lease_losses,
            failed_keepalives: self.failed_keepalives - o.failed_keepalives,
            watch_restarts: self.watch_restarts - o.watch_restarts,
        }
    }
}

impl std::fmt::Display for Counters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "lease losses {:.0}, failed keep-alives {:.0}, watch restarts (re-lists) {:.0}",
            self.lease_losses, self.failed_keepalives, self.watch_restarts
        )
    }
}
