//! Fleet benchmark (not a test): many simulated agents running the registrar's real code
//! ([`sim`]) and a few real agents ([`real`]) against a 3-member etcd cluster, directly or behind
//! etcd's grpc-proxies ([`cluster`]), with a catalog of `--services` services besides theirs.
//! It reports:
//! - cold start: every agent registered with the whole catalog, and memory per simulated agent;
//! - write → every agent's catalog (and the real agents' DNS) for adds and deletes (a service
//!   started or stopped on one host, file + SIGHUP) and for dead hosts (lease expiry);
//! - over the steady window: lease losses, failed keep-alives and watch restarts (re-lists),
//!   and each member's and proxy's CPU, RSS, messages per second, db size and leader changes;
//! - a mass restart: every simulated agent stopped (deregistering) and started at once.
//!
//! Usage: fleet HOSTMESH_BIN [--agents N] [--services N] [--proxies N] [--real N] [--ttl S]
//!        [--steady S] [--changes N] [--dead N] [--no-restart]

#![allow(clippy::print_stdout, reason = "a benchmark reports on stdout")]

mod cluster;
mod real;
mod sim;
mod stats;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hostmesh_bench_support::{fill_catalog, rss_kib};
use hostmesh_registrar::catalog::{Snapshot, Snapshots};
use tokio::task::JoinSet;

use cluster::Cluster;
use real::{Answer, Real, resolve};
use sim::{APPS, Sim, SimConfig};
use stats::{Spread, Window};

/// How long a change may take to reach every agent before the round counts it as missed.
const REACH_WITHIN: Duration = Duration::from_secs(30);

#[derive(Debug)]
struct Args {
    bin: PathBuf,
    agents: usize,
    services: usize,
    proxies: usize,
    real: usize,
    ttl: Duration,
    steady: Duration,
    changes: usize,
    dead: usize,
    restart: bool,
}

fn parse_args() -> Args {
    let mut it = std::env::args().skip(1);
    let usage = "usage: fleet HOSTMESH_BIN [--agents N] [--services N] [--proxies N] [--real N] \
                 [--ttl S] [--steady S] [--changes N] [--dead N] [--no-restart]";
    let mut args = Args {
        bin: PathBuf::from(it.next().expect(usage)),
        agents: 100,
        services: 10_000,
        proxies: 1,
        real: 3,
        ttl: Duration::from_secs(10),
        steady: Duration::from_secs(60),
        changes: 20,
        dead: 3,
        restart: true,
    };
    while let Some(flag) = it.next() {
        if flag == "--no-restart" {
            args.restart = false;
            continue;
        }
        let value: u64 = it
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{flag} needs a number; {usage}"));
        let n = usize::try_from(value).expect("a count");
        match flag.as_str() {
            "--agents" => args.agents = n.max(1),
            "--services" => args.services = n,
            "--proxies" => args.proxies = n,
            "--real" => args.real = n,
            "--ttl" => args.ttl = Duration::from_secs(value.max(2)),
            "--steady" => args.steady = Duration::from_secs(value),
            "--changes" => args.changes = n,
            "--dead" => args.dead = n,
            _ => panic!("unknown flag {flag}; {usage}"),
        }
    }
    args.dead = args.dead.min(args.agents.saturating_sub(1));
    args
}

#[tokio::main]
async fn main() {
    // Interrupted, the fleet still ends through its destructors: the etcd members, proxies and
    // real agents are killed with it instead of outliving it.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("a SIGTERM handler");
    tokio::select! {
        () = run() => {}
        _ = tokio::signal::ctrl_c() => eprintln!("interrupted"),
        _ = term.recv() => eprintln!("terminated"),
    }
}

async fn run() {
    let args = parse_args();
    // The simulated agents' own logs (the registrar's warnings) with RUST_LOG=warn.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    hostmesh_bench_support::raise_open_files_limit();
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().to_owned();
    // FLEET_KEEP=1 keeps the members', proxies' and real agents' logs for a look afterwards.
    let _removed_at_exit = if std::env::var_os("FLEET_KEEP").is_some() {
        println!("keeping {}", tmp.keep().display());
        None
    } else {
        Some(tmp)
    };
    println!(
        "fleet: {} simulated agents + {} real, catalog {} services x 3, lease_ttl {:?}, \
         3 etcd members, {} grpc-proxies",
        args.agents, args.real, args.services, args.ttl, args.proxies
    );

    let mut cluster = Cluster::start(&root, 3, args.proxies).await;
    let filled = fill_catalog(&cluster.direct, args.services)
        .await
        .expect("fill etcd");
    println!(
        "filled etcd: {} keys in {:.1} s; agents use {}",
        filled.keys,
        filled.took.as_secs_f64(),
        cluster.agent_endpoints().join(",")
    );
    let endpoints = cluster.agent_endpoints();
    let mut reals: Vec<Real> = tokio::task::block_in_place(|| {
        (0..args.real)
            .map(|i| Real::start(&args.bin, &format!("real-{i}"), &endpoints, args.ttl, &root))
            .collect()
    });
    let dns: Vec<SocketAddr> = reals.iter().map(Real::dns).collect();
    let config = SimConfig {
        endpoints,
        lease_ttl: args.ttl,
    };

    let base_rss = rss_kib(std::process::id());
    let (mut sims, cold) = start_fleet(args.agents, &config, &root).await;
    let per_agent =
        (rss_kib(std::process::id()).saturating_sub(base_rss)) as f64 / args.agents as f64;
    println!(
        "cold start (all {} at once): every agent registered with the whole catalog in {:.1} s; \
         memory per simulated agent {:.0} KiB",
        args.agents,
        cold.as_secs_f64(),
        per_agent
    );
    let after_cold = Counters::of(&sims, &reals);
    println!("cold start: {after_cold}");
    // Counters of the hosts killed below, taken just before they die.
    let mut departed = Counters::default();

    let window = Window::open(&cluster);
    let steady_started = Instant::now();
    let (mut adds, mut deletes) = (Rounds::default(), Rounds::default());
    let catalogs =
        |sims: &[Sim]| -> Vec<Snapshots> { sims.iter().map(|s| s.snapshots.clone()).collect() };
    for r in 0..args.changes {
        let name = format!("added-{r}");
        let k = r % sims.len();
        let watching = catalogs(&sims);
        let round = reach(&watching, &dns, &name, true, sims[k].add(&name)).await;
        adds.push(round);
        let round = reach(&watching, &dns, &name, false, sims[k].remove(&name)).await;
        deletes.push(round);
    }
    adds.print("add (file + SIGHUP on one host)");
    deletes.print("delete (file removed + SIGHUP)");

    let mut dead = Rounds::default();
    for d in 0..args.dead {
        let name = format!("doomed-{d}");
        let mut victim = sims.pop().expect("a simulated agent");
        departed = departed + Counters::of(std::slice::from_ref(&victim), &[]);
        let watching = catalogs(&sims);
        let round = reach(&watching, &dns, &name, true, victim.add(&name)).await;
        assert_eq!(round.missed, 0, "{name} did not reach every agent");
        let round = reach(&watching, &dns, &name, false, async move { victim.kill() }).await;
        dead.push(round);
    }
    dead.print(&format!("dead host (lease_ttl {:?})", args.ttl));

    if let Some(rest) = args.steady.checked_sub(steady_started.elapsed()) {
        tokio::time::sleep(rest).await;
    }
    let steady = Counters::of(&sims, &reals) + departed - after_cold;
    for line in window.report(&cluster, "steady window") {
        println!("{line}");
    }
    println!(
        "steady window: {steady}, across {} agents",
        sims.len() + reals.len()
    );

    if args.restart {
        let window = Window::open(&cluster);
        let stopping = Instant::now();
        let n = sims.len();
        let mut stops = JoinSet::new();
        for s in sims.drain(..) {
            stops.spawn(s.stop());
        }
        stops.join_all().await;
        let stopped = stopping.elapsed();
        let (restarted, took) = start_fleet(n, &config, &root).await;
        sims = restarted;
        for line in window.report(&cluster, "mass restart") {
            println!("{line}");
        }
        let alarms = cluster
            .alarms()
            .await
            .unwrap_or_else(|e| vec![format!("alarm list: {e}")]);
        let restarted = Counters::of(&sims, &[]);
        println!(
            "mass restart: {n} agents stopped (deregistered) in {:.1} s, all registered again \
             with the whole catalog in {:.1} s; restarted agents: {restarted}; leader changes \
             {:.0}, etcd alarms: {}",
            stopped.as_secs_f64(),
            took.as_secs_f64(),
            window.leader_changes(&cluster),
            if alarms.is_empty() {
                "none".to_owned()
            } else {
                alarms.join("; ")
            }
        );
    }

    let down = cluster.all_running();
    let crashed: Vec<&str> = reals
        .iter_mut()
        .filter_map(|r| (!r.proc.is_running()).then_some(r.name.as_str()))
        .collect();
    println!(
        "end: etcd members and proxies down: {}; real agents exited: {}",
        if down.is_empty() {
            "none".to_owned()
        } else {
            down.join(", ")
        },
        if crashed.is_empty() {
            "none".to_owned()
        } else {
            crashed.join(", ")
        }
    );
}

/// Starts simulated agents `0..n` at once and waits until every one is registered and has the
/// catalog (all the app services they run between them); returns them in index order and how
/// long that took.
async fn start_fleet(n: usize, config: &SimConfig, root: &Path) -> (Vec<Sim>, Duration) {
    let started = Instant::now();
    let apps = n.min(APPS);
    let mut starting = JoinSet::new();
    for i in 0..n {
        let (config, root) = (config.clone(), root.to_owned());
        starting.spawn(async move { (i, Sim::start(i, &config, &root).await) });
    }
    let mut sims: Vec<Option<Sim>> = (0..n).map(|_| None).collect();
    while let Some(done) = starting.join_next().await {
        let (i, sim) = done.expect("a simulated agent's start");
        sims[i] = Some(sim.unwrap_or_else(|e| panic!("sim-{i}: {e}")));
    }
    let sims: Vec<Sim> = sims.into_iter().flatten().collect();
    loop {
        let waiting = sims.iter().filter(|s| !s.settled(apps)).count();
        if waiting == 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "{waiting} of {n} simulated agents not registered with the whole catalog in 600 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (sims, started.elapsed())
}

/// A service `name` that agents can route to: it has a VIP and a passing instance.
fn visible(s: &Snapshot, name: &str) -> bool {
    s.service(name)
        .is_some_and(|svc| svc.vip.is_some() && svc.passing().next().is_some())
}

/// How long one change took to reach each agent.
#[derive(Debug, Default)]
struct Round {
    sims: Vec<Duration>,
    reals: Vec<Duration>,
    /// Agents it did not reach within [`REACH_WITHIN`].
    missed: usize,
}

/// Runs `change` and times, from just before it, how long until every catalog (of the simulated
/// agents) and every real agent's DNS shows `name` as `present` (or gone).
async fn reach(
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
struct Rounds(Vec<Round>);

impl Rounds {
    fn push(&mut self, r: Round) {
        self.0.push(r);
    }

    fn print(&self, what: &str) {
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

/// The registrar's trouble counters summed over agents.
#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    lease_losses: f64,
    failed_keepalives: f64,
    watch_restarts: f64,
}

impl Counters {
    /// Summed over the simulated agents' metrics and the real agents' /metrics.
    fn of(sims: &[Sim], reals: &[Real]) -> Counters {
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
