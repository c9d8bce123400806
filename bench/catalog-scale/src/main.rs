//! Catalog scale benchmark (not a test): fills a private etcd with N services x 3 instances on
//! N/10 hosts, starts a release `hostmesh agent` against it and reports
//! - the time from process start to `/ready` (first snapshot loaded from etcd),
//! - the agent's RSS once loaded (and etcd's, for reference),
//! - the time from one `put` to the agent's catalog revision reaching it (median of 20).

#![allow(clippy::print_stdout, reason = "a benchmark reports on stdout")]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use etcd_client::{Client, PutOptions, Txn, TxnOp};
use hostmesh_registrar::etcd::launch::SingleMember;

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// A plain HTTP/1.0 GET (keeps the benchmark free of client libraries).
fn get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let code = out.split(' ').nth(1)?.parse().ok()?;
    let body = out.split_once("\r\n\r\n")?.1.to_owned();
    Some((code, body))
}

fn catalog_revision(admin: &str) -> i64 {
    get(admin, "/metrics")
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
                SingleMember {
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

    let fill = Instant::now();
    let hosts = (services / 10).max(3);
    let mut kv = client.kv_client();
    let mut ops = Vec::new();
    let lease = client
        .lease_client()
        .grant(3600, None)
        .await
        .expect("lease")
        .id();
    for h in 0..hosts {
        ops.push(TxnOp::put(
            format!("/hostmesh/v1/hosts/h{h}/info"),
            format!(
                r#"{{"address":"10.{}.{}.{}","inbound_port":4143,"version":"bench"}}"#,
                h / 65536 % 256,
                h / 256 % 256,
                h % 256
            ),
            Some(PutOptions::new().with_lease(lease)),
        ));
    }
    for s in 0..services {
        ops.push(TxnOp::put(
            format!("/hostmesh/v1/vips/svc-{s}"),
            format!("\"127.77.{}.{}\"", s / 254 % 256, s % 254 + 1),
            None,
        ));
        for i in 0..3 {
            let host = (s * 3 + i) % hosts;
            ops.push(TxnOp::put(
                format!("/hostmesh/v1/hosts/h{host}/instances/svc-{s}/i{i}"),
                r#"{"port":8080,"protocol":"http","tags":["v1"],"weight":100,"health":"passing"}"#,
                Some(PutOptions::new().with_lease(lease)),
            ));
        }
    }
    let keys = ops.len();
    for chunk in ops.chunks(100) {
        kv.txn(Txn::new().and_then(chunk.to_vec()))
            .await
            .expect("fill txn");
    }
    println!(
        "filled etcd: {services} services x 3 instances on {hosts} hosts, {keys} keys in {:.1}s",
        fill.elapsed().as_secs_f64()
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
    while get(&admin, "/ready").map(|(c, _)| c) != Some(200) {
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
        let rev = resp.header().map_or(0, |h| h.revision());
        while catalog_revision(&admin) < rev {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "change not applied within 30s"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        samples.push(t.elapsed());
    }
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
}
