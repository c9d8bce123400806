//! Catalog scale benchmark (not a test): fills a private etcd with N services x 3 instances on
//! N/10 hosts, starts a release `hostmesh agent` against it and reports
//! - the time from process start to `/ready` (first snapshot loaded from etcd),
//! - the agent's RSS once loaded (and etcd's, for reference),
//! - the time from one `put` to the agent's catalog revision reaching it (median of 20).

#![allow(clippy::print_stdout, reason = "a benchmark reports on stdout")]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use etcd_client::{Client, PutOptions};
use hostmesh_bench_support::{Killed, fill_catalog, free_port, http_get, rss_kib};
use hostmesh_registrar::etcd::launch::Member;

fn catalog_revision(admin: &str) -> i64 {
    http_get(admin, "/metrics")
        .and_then(|(_, body)| {
            body.lines()
                .find_map(|l| l.strip_prefix("hostmesh_catalog_revision "))
                .and_then(|v| v.trim().parse::<f64>().ok())
        })
        .map_or(0, |v| v as i64)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let bin = args
        .get(1)
        .expect("usage: catalog-scale HOSTMESH_BIN [SERVICES]");
    let services: usize = args.get(2).and_then(|n| n.parse().ok()).unwrap_or(10_000);
    let dir = tempfile::tempdir().expect("tempdir");

    let (cport, pport) = (free_port(), free_port());
    let url = format!("http://127.0.0.1:{cport}");
    let peer = format!("http://127.0.0.1:{pport}");
    let etcd = Killed(
        Command::new("etcd")
            .args(
                Member {
                    name: "bench",
                    data_dir: &dir.path().join("etcd"),
                    client: &url,
                    advertise: &url,
                    peer: &peer,
                }
                .args(),
            )
            .args(["--quota-backend-bytes", "4294967296"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd (Debian package etcd-server) must be installed"),
    );
    let client = loop {
        if let Ok(mut c) = Client::connect([url.as_str()], None).await
            && c.get("/", None).await.is_ok()
        {
            break c;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    let filled = fill_catalog(&client, services).await.expect("fill etcd");
    let lease = filled.lease;
    let mut kv = client.kv_client();
    println!(
        "filled etcd: {services} services x 3 instances on {} hosts, {} keys in {:.1}s",
        filled.hosts,
        filled.keys,
        filled.took.as_secs_f64()
    );

    let admin = format!("127.0.0.1:{}", free_port());
    let config = format!(
        "[agent]\nhost = \"bench-agent\"\nadvertise_address = \"127.0.0.1\"\nservices_dir = \"{sd}\"\ndata_dir = \"{dd}\"\n\
         [etcd]\nendpoints = [\"{url}\"]\n[dns]\nlisten = \"127.0.0.1:{dns}\"\n[proxy]\ncapture = \"listen\"\n\
         outbound_listen = \"127.0.0.1:{o}\"\ninbound_listen = \"127.0.0.1:{i}\"\n[tls]\nmode = \"disabled\"\n\
         [admin]\nlisten = \"{admin}\"\n[log]\nlevel = \"warn\"\n",
        sd = dir.path().join("services.d").display(),
        dd = dir.path().join("data").display(),
        dns = free_port(),
        o = free_port(),
        i = free_port(),
    );
    std::fs::create_dir_all(dir.path().join("services.d")).expect("services dir");
    let config_path = dir.path().join("agent.toml");
    std::fs::write(&config_path, config).expect("config");

    let started = Instant::now();
    let agent = Killed(
        Command::new(bin)
            .args(["agent", "--config"])
            .arg(&config_path)
            .stdout(Stdio::null())
            .spawn()
            .expect("start the agent"),
    );
    let pid = agent.0.id();
    while http_get(&admin, "/ready").map(|(c, _)| c) != Some(200) {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "agent not ready within 120s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let first_snapshot = started.elapsed();
    // Let the persister write and allocations settle before reading RSS.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss = rss_kib(pid);
    let etcd_rss = rss_kib(etcd.0.id());

    let mut samples = Vec::new();
    // etcd's own part (the put's commit, an fsync on this disk) apart from the agent's.
    let mut commits = Vec::new();
    let mut after_commit = Vec::new();
    for n in 0..20 {
        let health = if n % 2 == 0 { "critical" } else { "passing" };
        let t = Instant::now();
        let resp = kv
            .put(
                "/hostmesh/v1/hosts/h0/instances/svc-0/i0",
                format!(r#"{{"port":8080,"protocol":"http","tags":["v1"],"weight":100,"health":"{health}"}}"#),
                Some(PutOptions::new().with_lease(lease)),
            )
            .await
            .expect("put");
        let committed = t.elapsed();
        let rev = resp.header().map_or(0, |h| h.revision());
        while catalog_revision(&admin) < rev {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "change not applied within 30s"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        samples.push(t.elapsed());
        commits.push(committed);
        after_commit.push(t.elapsed() - committed);
    }
    let median_ms = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2].as_secs_f64() * 1000.0
    };
    let commit_ms = median_ms(&mut commits);
    let agent_ms = median_ms(&mut after_commit);
    samples.sort();
    let median = samples[samples.len() / 2];
    let worst = samples[samples.len() - 1];

    println!(
        "agent: first snapshot (start to /ready): {:.2}s",
        first_snapshot.as_secs_f64()
    );
    println!(
        "agent: RSS {:.1} MiB (etcd holding the same data: {:.1} MiB, ratio agent/etcd {:.2})",
        rss as f64 / 1024.0,
        etcd_rss as f64 / 1024.0,
        rss as f64 / etcd_rss.max(1) as f64
    );
    println!(
        "agent: one change applied: median {:.1} ms, worst {:.1} ms (20 changes, polled every 2 ms)",
        median.as_secs_f64() * 1000.0,
        worst.as_secs_f64() * 1000.0
    );
    println!(
        "  of which etcd committing the put: median {commit_ms:.1} ms; the agent after the \
         commit: median {agent_ms:.1} ms"
    );
}
