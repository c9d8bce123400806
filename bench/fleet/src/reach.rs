//! Timing one change from the host that makes it to every agent: each simulated agent's catalog
//! and each real agent's DNS answer.

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hostmesh_registrar::catalog::{Snapshot, Snapshots};
use tokio::task::JoinSet;

use crate::real::{Answer, resolve};
use crate::stats::Spread;

/// How long a change may take to reach every agent before the round counts it as missed.
const REACH_WITHIN: Duration = Duration::from_secs(30);

/// A service `name` that agents can route to: it has a VIP and a passing instance.
fn visible(s: &Snapshot, name: &str) -> bool {
    s.service(name)
        .is_some_and(|svc| svc.vip.is_some() && svc.passing().next().is_some())
}

/// How long one change took to reach each agent.
#[derive(Debug, Default)]
pub struct Round {
    sims: Vec<Duration>,
    reals: Vec<Duration>,
    /// Agents it did not reach within [`REACH_WITHIN`].
    pub missed: usize,
}

/// Runs `change` and times, from just before it, how long until every catalog (of the simulated
/// agents) and every real agent's DNS shows `name` as `present` (or gone).
pub async fn reach(
    catalogs: &[Snapshots],
    dns: &[SocketAddr],
    name: &str,
    present: bool,
    change: impl Future<Output = ()>,
) -> Round {
    let mut sim_waits = JoinSet::new();
    for rx in catalogs {
        let mut rx = rx.clone();
        let name = name.to_owned();
        sim_waits.spawn(async move {
            let seen = rx.wait_for(|s| s.as_ref().is_some_and(|s| visible(s, &name) == present));
            tokio::time::timeout(REACH_WITHIN, seen)
                .await
                .ok()
                .and_then(Result::ok)
                .map(|_| Instant::now())
        });
    }
    let mut dns_waits = JoinSet::new();
    let want = if present {
        Answer::Address
    } else {
        Answer::NxDomain
    };
    for &addr in dns {
        let name = format!("{name}.mesh.");
        dns_waits.spawn(async move {
            let started = Instant::now();
            while started.elapsed() < REACH_WITHIN {
                if resolve(addr, &name).await == want {
                    return Some(Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            None
        });
    }
    let t0 = Instant::now();
    change.await;
    let mut round = Round::default();
    for (waits, into) in [(sim_waits, &mut round.sims), (dns_waits, &mut round.reals)] {
        for seen in waits.join_all().await {
            match seen {
                Some(at) => into.push(at.saturating_duration_since(t0)),
                None => round.missed += 1,
            }
        }
    }
    round
}

#[derive(Debug, Default)]
pub struct Rounds(Vec<Round>);

impl Rounds {
    pub fn push(&mut self, r: Round) {
        self.0.push(r);
    }

    pub fn print(&self, what: &str) {
        if self.0.is_empty() {
            return;
        }
        let every: Vec<Duration> = self
            .0
            .iter()
            .filter(|r| r.missed == 0)
            .filter_map(|r| r.sims.iter().chain(&r.reals).max().copied())
            .collect();
        let sims: Vec<Duration> = self.0.iter().flat_map(|r| r.sims.clone()).collect();
        let reals: Vec<Duration> = self.0.iter().flat_map(|r| r.reals.clone()).collect();
        let missed: usize = self.0.iter().map(|r| r.missed).sum();
        println!("{what}, {} changes:", self.0.len());
        println!("  reached every agent: {}", Spread::of(&every));
        println!("  each simulated agent's catalog: {}", Spread::of(&sims));
        println!("  each real agent's DNS: {}", Spread::of(&reals));
        if missed > 0 {
            println!("  MISSED: {missed} agent-changes not seen within {REACH_WITHIN:?}");
        }
    }
}
