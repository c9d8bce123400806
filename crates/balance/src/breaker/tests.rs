#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Barrier};
use std::time::Duration;

use tokio::time::{Instant, advance};

use super::*;
use crate::EndpointKey;

const S: Duration = Duration::from_secs(1);
const MS: Duration = Duration::from_millis(1);

fn breakers(n: usize) -> Vec<Arc<Breaker>> {
    (0..n).map(|i| Arc::new(Breaker::new(key(i)))).collect()
}

fn key(i: usize) -> EndpointKey {
    EndpointKey::new("orders", &format!("h{i}"), "1")
}

fn group(config: BreakerConfig, members: &[Arc<Breaker>]) -> Arc<BreakerGroup> {
    Arc::new(BreakerGroup::new(config, members.to_vec()))
}

fn pct(max_ejected_percent: u32) -> BreakerConfig {
    BreakerConfig {
        max_ejected_percent,
        ..BreakerConfig::default()
    }
}

fn fail(g: &Arc<BreakerGroup>, b: &Arc<Breaker>) -> Outcome {
    g.admit(b, Instant::now()).unwrap().failure()
}

fn succeed(g: &Arc<BreakerGroup>, b: &Arc<Breaker>) -> Outcome {
    g.admit(b, Instant::now()).unwrap().success()
}

/// Fails `b` five times (the default threshold); the last outcome.
fn fail_5(g: &Arc<BreakerGroup>, b: &Arc<Breaker>) -> Outcome {
    for _ in 0..4 {
        assert_eq!(fail(g, b), Outcome::Unchanged);
    }
    fail(g, b)
}

fn ejected_for(outcome: Outcome) -> Duration {
    match outcome {
        Outcome::Ejected { duration, until } => {
            assert_eq!(until, Instant::now() + duration);
            duration
        }
        other => panic!("not ejected: {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn five_failures_eject_for_5s_then_each_failed_probe_doubles_up_to_60s() {
    let bs = breakers(2);
    let (g, b) = (group(BreakerConfig::default(), &bs), &bs[0]);
    for n in 1..=4 {
        assert_eq!(fail(&g, b), Outcome::Unchanged);
        assert_eq!(b.failures(), n);
        assert_eq!(b.state(Instant::now()), State::Closed);
    }
    let mut ejection = ejected_for(fail(&g, b));
    assert_eq!(ejection, 5 * S);
    for want in [10, 20, 40, 60, 60, 60] {
        let start = Instant::now();
        assert_eq!(
            b.state(start),
            State::Ejected {
                until: start + ejection
            }
        );
        advance(ejection - MS).await;
        let now = Instant::now();
        assert!(!b.available(now) && !b.probe_ready(now));
        assert!(g.admit(b, now).is_none());
        advance(MS).await;
        let now = Instant::now();
        assert_eq!(b.state(now), State::HalfOpen { probing: false });
        assert!(b.available(now) && b.probe_ready(now));
        let probe = g.admit(b, now).unwrap();
        assert!(probe.is_probe());
        assert_eq!(b.state(now), State::HalfOpen { probing: true });
        assert!(!b.available(now));
        ejection = ejected_for(probe.failure());
        assert_eq!(ejection, want * S);
    }
    // The other instance served throughout.
    assert!(bs[1].available(Instant::now()));
}

#[tokio::test(start_paused = true)]
async fn a_successful_probe_closes_and_resets_the_doubling() {
    let bs = breakers(2);
    let (g, b) = (group(BreakerConfig::default(), &bs), &bs[0]);
    assert_eq!(ejected_for(fail_5(&g, b)), 5 * S);
    advance(5 * S).await;
    assert_eq!(ejected_for(fail(&g, b)), 10 * S);
    advance(10 * S).await;
    let probe = g.admit(b, Instant::now()).unwrap();
    assert!(probe.is_probe());
    assert_eq!(probe.success(), Outcome::Recovered);
    let now = Instant::now();
    assert_eq!(b.state(now), State::Closed);
    assert!(b.available(now));
    assert_eq!(b.failures(), 0);
    // Closed requests are not probes, and any number may go.
    let many: Vec<_> = (0..10).map(|_| g.admit(b, now).unwrap()).collect();
    assert!(many.iter().all(|a| !a.is_probe()));
    drop(many);
    // Failing again starts over at 5 s.
    assert_eq!(ejected_for(fail_5(&g, b)), 5 * S);
}

#[tokio::test(start_paused = true)]
async fn a_success_resets_the_failure_count() {
    let bs = breakers(2);
    let (g, b) = (group(BreakerConfig::default(), &bs), &bs[0]);
    for _ in 0..4 {
        fail(&g, b);
    }
    assert_eq!(succeed(&g, b), Outcome::Unchanged);
    assert_eq!(b.failures(), 0);
    for _ in 0..4 {
        assert_eq!(fail(&g, b), Outcome::Unchanged);
    }
    assert_eq!(b.state(Instant::now()), State::Closed);
    assert!(fail(&g, b).is_ejection());
}

#[tokio::test(start_paused = true)]
async fn concurrent_pickers_get_one_probe() {
    let bs = breakers(2);
    let (g, b) = (group(BreakerConfig::default(), &bs), &bs[0]);
    fail_5(&g, b);
    advance(5 * S).await;
    let now = Instant::now();
    let gate = Barrier::new(16);
    let admitted: Vec<Admission> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..16)
            .map(|_| {
                s.spawn(|| {
                    gate.wait();
                    // Every picker saw it available before claiming.
                    assert!(b.available(now) || b.state(now) == State::HalfOpen { probing: true });
                    g.admit(b, now)
                })
            })
            .collect();
        handles
            .into_iter()
            .filter_map(|h| h.join().unwrap())
            .collect()
    });
    assert_eq!(admitted.len(), 1);
    assert!(admitted[0].is_probe());
    assert!(g.admit(b, now).is_none());
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_probe_lets_another_through() {
    let bs = breakers(2);
    let (g, b) = (group(BreakerConfig::default(), &bs), &bs[0]);
    fail_5(&g, b);
    advance(5 * S).await;
    let now = Instant::now();
    let probe = g.admit(b, now).unwrap();
    assert!(g.admit(b, now).is_none());
    drop(probe); // the client went away
    assert_eq!(b.state(now), State::HalfOpen { probing: false });
    assert!(b.available(now));
    let second = g.admit(b, now).unwrap();
    assert!(second.is_probe());
    assert_eq!(second.success(), Outcome::Recovered);
    // Dropping a closed-state admission changes nothing either.
    fail(&g, b);
    drop(g.admit(b, now).unwrap());
    assert_eq!(b.failures(), 1);
}

#[tokio::test(start_paused = true)]
async fn reports_from_requests_sent_before_the_ejection_are_ignored() {
    let bs = breakers(2);
    let (g, b) = (group(BreakerConfig::default(), &bs), &bs[0]);
    let now = Instant::now();
    let late: Vec<_> = (0..3).map(|_| g.admit(b, now).unwrap()).collect();
    let ejection = ejected_for(fail_5(&g, b));
    let state = b.state(now);
    let mut late = late.into_iter();
    assert_eq!(late.next().unwrap().success(), Outcome::Unchanged);
    assert_eq!(late.next().unwrap().failure(), Outcome::Unchanged);
    assert_eq!(b.state(now), state);
    // Still ignored once half-open: only the probe decides.
    advance(ejection).await;
    assert_eq!(late.next().unwrap().success(), Outcome::Unchanged);
    assert_eq!(b.state(Instant::now()), State::HalfOpen { probing: false });
}

#[tokio::test(start_paused = true)]
async fn four_instances_three_failing_at_most_half_are_ejected() {
    let bs = breakers(4);
    let g = group(BreakerConfig::default(), &bs);
    let mut outcomes = [Outcome::Unchanged; 3];
    for _ in 0..5 {
        for (i, b) in bs[..3].iter().enumerate() {
            outcomes[i] = fail(&g, b);
        }
        assert_eq!(succeed(&g, &bs[3]), Outcome::Unchanged);
    }
    assert!(outcomes[0].is_ejection() && outcomes[1].is_ejection());
    assert_eq!(outcomes[2], Outcome::Spared);
    let counts = |now| g.counts(now);
    assert_eq!(
        counts(Instant::now()),
        Counts {
            closed: 2,
            ejected: 2,
            half_open: 0
        }
    );
    // The spared one keeps serving, and asks again at each failure.
    assert!(bs[2].available(Instant::now()));
    assert_eq!(fail(&g, &bs[2]), Outcome::Spared);

    // Half-open counts as ejected: still no room for the third.
    advance(5 * S).await;
    let now = Instant::now();
    assert_eq!(
        counts(now),
        Counts {
            closed: 2,
            ejected: 0,
            half_open: 2
        }
    );
    assert_eq!(fail(&g, &bs[2]), Outcome::Spared);
    // Failed probes eject again: that does not raise the count.
    assert_eq!(ejected_for(fail(&g, &bs[0])), 10 * S);
    assert_eq!(ejected_for(fail(&g, &bs[1])), 10 * S);
    assert!(bs[2].available(now) && bs[3].available(now));

    // Recovery: one probe, then back; that frees room for the third.
    advance(10 * S).await;
    assert_eq!(succeed(&g, &bs[0]), Outcome::Recovered);
    assert_eq!(ejected_for(fail(&g, &bs[2])), 5 * S);
    assert_eq!(
        counts(Instant::now()),
        Counts {
            closed: 2,
            ejected: 1,
            half_open: 1
        }
    );
}

#[tokio::test(start_paused = true)]
async fn never_the_last_instance() {
    // One instance, whatever the percentage.
    let one = breakers(1);
    let g = group(pct(100), &one);
    for n in 1..=20 {
        let want = if n < 5 {
            Outcome::Unchanged
        } else {
            Outcome::Spared
        };
        assert_eq!(fail(&g, &one[0]), want);
        assert!(one[0].available(Instant::now()));
    }

    // Two at 100 %: one may go, the other stays.
    let two = breakers(2);
    let g = group(pct(100), &two);
    let mut last = [Outcome::Unchanged; 2];
    for _ in 0..5 {
        for (i, b) in two.iter().enumerate() {
            last[i] = fail(&g, b);
        }
    }
    assert!(last[0].is_ejection());
    assert_eq!(last[1], Outcome::Spared);
    assert!(two[1].available(Instant::now()));
    // The ejected one failing its probe goes again: the other is still serving.
    advance(5 * S).await;
    assert!(fail(&g, &two[0]).is_ejection());
    assert_eq!(fail(&g, &two[1]), Outcome::Spared);
}

#[test]
fn racing_ejections_never_take_the_last_instance() {
    for _ in 0..200 {
        let bs = breakers(2);
        let g = group(pct(100), &bs);
        for b in &bs {
            for _ in 0..4 {
                fail(&g, b);
            }
        }
        let gate = Barrier::new(2);
        let outcomes: Vec<Outcome> = std::thread::scope(|s| {
            let handles: Vec<_> = bs
                .iter()
                .map(|b| {
                    let (g, gate) = (&g, &gate);
                    s.spawn(move || {
                        let admission = g.admit(b, Instant::now()).unwrap();
                        gate.wait();
                        admission.failure()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let ejected = outcomes.iter().filter(|o| o.is_ejection()).count();
        assert!(ejected <= 1, "{outcomes:?}");
        assert!(bs.iter().any(|b| b.available(Instant::now())));
    }
}

#[tokio::test(start_paused = true)]
async fn a_lowered_limit_spares_an_instance_whose_probe_fails() {
    let bs = breakers(4);
    let g = group(BreakerConfig::default(), &bs);
    fail_5(&g, &bs[0]);
    fail_5(&g, &bs[1]);
    // The route policy changes to 25 %: a new group over the same breakers.
    let g = group(pct(25), &bs);
    advance(5 * S).await;
    assert_eq!(fail(&g, &bs[0]), Outcome::Spared);
    let now = Instant::now();
    assert_eq!(bs[0].state(now), State::Closed);
    assert!(bs[0].available(now));
    // Still at the threshold: the next failure asks again, and is refused again.
    assert_eq!(bs[0].failures(), 5);
    assert_eq!(fail(&g, &bs[0]), Outcome::Spared);
    // With the first one serving again there is room for one: the second's probe failure
    // ejects it, for twice as long as before.
    assert_eq!(ejected_for(fail(&g, &bs[1])), 10 * S);
}

#[test]
fn ejection_times_and_limits() {
    let c = BreakerConfig::default();
    let times: Vec<_> = (0..7).map(|k| c.ejection_time(k).as_secs()).collect();
    assert_eq!(times, [5, 10, 20, 40, 60, 60, 60]);
    assert_eq!(c.ejection_time(63), 60 * S);
    assert_eq!(c.ejection_time(u32::MAX), 60 * S);
    assert_eq!(c.ejection_limit(4), 2);
    assert_eq!(c.ejection_limit(3), 1);
    assert_eq!(c.ejection_limit(1), 0);
    assert_eq!(pct(10).ejection_limit(5), 0);
    assert_eq!(pct(100).ejection_limit(1), 1);
    assert_eq!(pct(250).ejection_limit(2), 2);
    let zero = BreakerConfig {
        consecutive_failures: 0,
        ..c
    };
    assert_eq!(zero.threshold(), 1);
}

#[tokio::test(start_paused = true)]
async fn states_name_themselves() {
    assert_eq!(State::Closed.to_string(), "closed");
    let until = Instant::now();
    assert_eq!(State::Ejected { until }.as_str(), "ejected");
    assert_eq!(State::HalfOpen { probing: true }.as_str(), "half-open");
}

#[tokio::test(start_paused = true)]
async fn the_table_keeps_breakers_by_instance() {
    let t = BreakerTable::new();
    let a = t.get_or_insert(&key(0));
    assert!(Arc::ptr_eq(&a, &t.get_or_insert(&key(0))));
    assert_eq!(a.key(), &key(0));
    let b = t.get_or_insert(&key(1));
    assert!(!Arc::ptr_eq(&a, &b));
    let keys: Vec<_> = t.entries().into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys, [key(0), key(1)]);
    // An ejected instance that leaves the catalog and comes back starts closed.
    let g = group(BreakerConfig::default(), &[Arc::clone(&a), b]);
    fail_5(&g, &a);
    t.retain(|k| k != &key(0));
    assert_eq!(t.len(), 1);
    assert!(t.get(&key(0)).is_none());
    let back = t.get_or_insert(&key(0));
    assert_eq!(back.state(Instant::now()), State::Closed);
    assert!(!t.is_empty());
}
