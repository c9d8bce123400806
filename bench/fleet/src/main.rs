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
//!        [--steady S] [--changes N] [--dead N] [--ramp N] [--no-restart]

#![allow(clippy::print_stdout, reason = "a benchmark reports on stdout")]

mod args;
mod cluster;
mod counters;
mod reach;
mod real;
mod sim;
mod stats;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use hostmesh_bench_support::{fill_catalog, rss_kib};
use hostmesh_registrar::catalog::Snapshots;
use tokio::task::JoinSet;

use args::parse_args;
use cluster::Cluster;
use counters::Counters;
use reach::{Rounds, reach};
use real::Real;
use sim::{Sim, SimConfig};
use stats::Window;

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
    let (mut sims, cold) = start_fleet(args.agents, &config, &root, args.ramp).await;
    let per_agent =
        (rss_kib(std::process::id()).saturating_sub(base_rss)) as f64 / args.agents as f64;
    println!(
        "cold start ({} agents, {}): every agent registered with the whole catalog in {:.1} s; \
         memory per simulated agent {:.0} KiB",
        args.agents,
        if args.ramp == 0 {
            "all at once".to_owned()
        } else {
            format!("{} a second", args.ramp)
        },
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
        let watching = catalogs(&sims);
        let round = reach(&watching, &dns, &name, true, victim.add(&name)).await;
        assert_eq!(round.missed, 0, "{name} did not reach every agent");
        departed = departed + Counters::of(std::slice::from_ref(&victim), &[]);
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
        let (restarted, took) = start_fleet(n, &config, &root, 0).await;
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
            or_none(&alarms)
        );
    }

    let down = cluster.down();
    let crashed: Vec<&str> = reals
        .iter_mut()
        .filter_map(|r| (!r.proc.is_running()).then_some(r.name.as_str()))
        .collect();
    println!(
        "end: etcd members and proxies down: {}; real agents exited: {}",
        or_none(&down),
        or_none(&crashed)
    );
}

/// `items` joined for the report, or "none".
fn or_none(items: &[impl AsRef<str>]) -> String {
    if items.is_empty() {
        return "none".to_owned();
    }
    items
        .iter()
        .map(AsRef::as_ref)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Starts simulated agents `0..n`, `ramp` a second (0: all at once), and waits until every one
/// is registered and has the catalog (all the app services they run between them); returns them
/// in index order and how long that took.
async fn start_fleet(
    n: usize,
    config: &SimConfig,
    root: &Path,
    ramp: usize,
) -> (Vec<Sim>, Duration) {
    let started = Instant::now();
    let apps = sim::app_names(n);
    let mut starting = JoinSet::new();
    for i in 0..n {
        let (config, root) = (config.clone(), root.to_owned());
        let delay = if ramp == 0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(i as f64 / ramp as f64)
        };
        starting.spawn(async move {
            tokio::time::sleep(delay).await;
            (i, Sim::start(i, &config, &root).await)
        });
    }
    let mut sims: Vec<Option<Sim>> = (0..n).map(|_| None).collect();
    while let Some(done) = starting.join_next().await {
        let (i, sim) = done.expect("a simulated agent's start");
        sims[i] = Some(sim.unwrap_or_else(|e| panic!("sim-{i}: {e}")));
    }
    let sims: Vec<Sim> = sims.into_iter().flatten().collect();
    // Checked every 200 ms, only those not settled yet, then all once more: checking all of a
    // thousand agents every 50 ms was this process's heaviest work, and slowed the agents down.
    let mut pending: Vec<usize> = (0..n).collect();
    loop {
        pending.retain(|&i| !sims[i].settled(&apps));
        if pending.is_empty() {
            pending = (0..n).filter(|&i| !sims[i].settled(&apps)).collect();
            if pending.is_empty() {
                break;
            }
        }
        if started.elapsed() > Duration::from_secs(600) {
            for &i in pending.iter().take(10) {
                eprintln!("not settled: {}", sims[i].unsettled(&apps));
            }
            panic!(
                "{} of {n} simulated agents not registered with the whole catalog in 600 s",
                pending.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    (sims, started.elapsed())
}
