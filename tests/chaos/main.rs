//! The chaos soak: real agents in namespace hosts under mixed traffic while a seeded schedule
//! of faults hits them, then the mesh's promises checked on everything that happened.
//!
//! Hosts: `a` calls `orders` (HTTP), `echo` (gRPC) and `cache` (TCP, redis), each served on `b`
//! and `c`; every agent speaks mTLS to the others. From `a`, without pause: GETs of framed bodies
//! (content-length and chunked), POSTs each with its own id, gRPC calls, redis PINGs. Faults, one
//! at a time, on `b` or `c` (`a` is the client's own agent: it is only reloaded): agent SIGKILL
//! and restart, SIGSTOP and SIGCONT, the HTTP app killed and started again, etcd restarted, the
//! host partitioned by nft, a reload, a route or access policy change, a certificate rotation.
//!
//! Checked at the end:
//! - no POST ran twice (the apps' records, across every app process), and one answered 200 ran
//!   exactly once;
//! - no body that its framing said was complete is wrong; a non-200 answer carries
//!   `x-hostmesh-error`, as does every failed gRPC call; no connection to the agent ended
//!   without an answer head;
//! - the agents' RSS and descriptors stay bounded, and no agent panicked;
//! - once the faults stop, every kind of traffic succeeds again.
//!
//! `HOSTMESH_CHAOS_SECS` (default 120) sets how long faults run, `HOSTMESH_CHAOS_SEED` replays a
//! schedule; the seed is printed first. See docs/chaos.md.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hostmesh_tests::{
    Agent, AgentOpts, Backend, Etcd, GrpcApp, Host, MeshCa, Net, RawConn, RedisServer, Signal,
    grpc_call, try_redis_cli, wait_for, wait_until,
};

const ORDERS: &str = "name = \"orders\"\nport = 8080\ntarget = \"127.0.0.1:18080\"\n";
const ECHO: &str =
    "name = \"echo\"\nport = 50051\ntarget = \"127.0.0.1:15051\"\nprotocol = \"grpc\"\n";
const CACHE: &str =
    "name = \"cache\"\nport = 6379\ntarget = \"127.0.0.1:16379\"\nprotocol = \"tcp\"\n";
/// RSS and descriptors an agent may have at the end (an idle agent has about 30 MiB, 60).
const MAX_RSS_KIB: u64 = 200 * 1024;
const MAX_FDS: usize = 1000;

/// splitmix64: a whole schedule from one seed, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// A duration in `lo..hi` milliseconds.
    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi - lo))
    }
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    Some(
        v.parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
    )
}

/// One server host: its agent, apps (the HTTP app's earlier processes kept for their records)
/// and certificate directory.
struct Server {
    host: Host,
    agent: Agent,
    http: Backend,
    dead_http: Vec<Backend>,
    _grpc: GrpcApp,
    _redis: RedisServer,
    certs: tempfile::TempDir,
}

#[derive(Debug, Default)]
struct Tally {
    get_ok: u64,
    get_failed_with_reason: u64,
    post_ok: u64,
    post_failed_with_reason: u64,
    truncated_detected: u64,
    grpc_ok: u64,
    grpc_failed_with_reason: u64,
    tcp_ok: u64,
    tcp_failed: u64,
    /// Each a sentence saying what broke a promise.
    violations: Vec<String>,
    /// POST ids answered 200, and every POST id sent.
    posts_ok: Vec<u64>,
    posts_sent: u64,
}

impl Tally {
    fn merge(&mut self, o: Tally) {
        self.get_ok += o.get_ok;
        self.get_failed_with_reason += o.get_failed_with_reason;
        self.post_ok += o.post_ok;
        self.post_failed_with_reason += o.post_failed_with_reason;
        self.truncated_detected += o.truncated_detected;
        self.grpc_ok += o.grpc_ok;
        self.grpc_failed_with_reason += o.grpc_failed_with_reason;
        self.tcp_ok += o.tcp_ok;
        self.tcp_failed += o.tcp_failed;
        self.violations.extend(o.violations);
        self.posts_ok.extend(o.posts_ok);
        self.posts_sent += o.posts_sent;
    }
}

/// HTTP/1.1 traffic to `orders` from inside host `a`, a new connection per request, until `stop`.
fn http_traffic(vip: SocketAddr, stop: &AtomicBool, ids: &AtomicU64, seed: u64) -> Tally {
    let mut t = Tally::default();
    let mut rng = Rng(seed);
    while !stop.load(Ordering::Relaxed) {
        let (request, expect, post_id) = match rng.below(3) {
            0 => {
                let id = ids.fetch_add(1, Ordering::Relaxed);
                t.posts_sent += 1;
                let req = format!(
                    "POST /order?id={id} HTTP/1.1\r\nhost: orders.mesh\r\ncontent-length: 5\r\n\
                     connection: close\r\n\r\nhello"
                );
                (req, None, Some(id))
            }
            1 => {
                let n = 1 + rng.below(20_000) as usize;
                let req = format!(
                    "GET /bytes?n={n} HTTP/1.1\r\nhost: orders.mesh\r\nconnection: close\r\n\r\n"
                );
                (req, Some(n), None)
            }
            _ => {
                let n = 1 + rng.below(20_000) as usize;
                let req = format!(
                    "GET /chunked?n={n}&size=997 HTTP/1.1\r\nhost: orders.mesh\r\n\
                     connection: close\r\n\r\n"
                );
                (req, Some(n), None)
            }
        };
        let mut conn = match RawConn::try_connect(vip) {
            Ok(c) => c,
            Err(e) => {
                t.violations
                    .push(format!("connecting to the agent's VIP {vip}: {e}"));
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        // The agent may answer (and close) before taking the whole request: read it anyway.
        let _ = conn.try_send(request.as_bytes());
        let resp = match conn.try_response(false) {
            Ok(r) => r,
            Err(e) if e.starts_with("body of a ") => {
                // The framing says the body is incomplete: detected, not reported complete.
                t.truncated_detected += 1;
                continue;
            }
            Err(e) => {
                t.violations.push(format!(
                    "{}: no answer from the agent: {e}",
                    first_line(&request)
                ));
                continue;
            }
        };
        let reason = resp.header("x-hostmesh-error").map(str::to_owned);
        match (resp.status, post_id) {
            (200, Some(id)) => {
                t.post_ok += 1;
                t.posts_ok.push(id);
            }
            (200, None) => {
                let n = expect.unwrap_or(0);
                if resp.body != Backend::bytes(n) {
                    t.violations.push(format!(
                        "{}: 200 with a wrong body of {} bytes reported complete",
                        first_line(&request),
                        resp.body.len()
                    ));
                } else {
                    t.get_ok += 1;
                }
            }
            (status, _) if reason.is_some() => {
                let _ = status;
                if post_id.is_some() {
                    t.post_failed_with_reason += 1;
                } else {
                    t.get_failed_with_reason += 1;
                }
            }
            (status, _) => t.violations.push(format!(
                "{}: {status} without x-hostmesh-error",
                first_line(&request)
            )),
        }
    }
    t
}

fn first_line(request: &str) -> &str {
    request.split("\r\n").next().unwrap_or(request)
}

fn grpc_traffic(a: &Host, stop: &AtomicBool) -> Tally {
    let mut t = Tally::default();
    while !stop.load(Ordering::Relaxed) {
        // The client waits longer than any deadline the agent enforces (request_timeout 3 s).
        let r = grpc_call(a, "echo.mesh:50051", "hi", Duration::from_secs(10), &[]);
        if r.starts_with("OK") {
            t.grpc_ok += 1;
        } else if r.contains("error=") && !r.trim_end().ends_with("error=") {
            t.grpc_failed_with_reason += 1;
        } else {
            t.violations
                .push(format!("gRPC call failed without a reason: {r}"));
        }
    }
    t
}

fn tcp_traffic(a: &Host, cache: SocketAddr, stop: &AtomicBool) -> Tally {
    let mut t = Tally::default();
    while !stop.load(Ordering::Relaxed) {
        match try_redis_cli(a, cache, &["PING"]) {
            Ok(out) if out.trim() == "PONG" => t.tcp_ok += 1,
            Ok(out) => t
                .violations
                .push(format!("redis PING through the mesh answered {out:?}")),
            // TCP has no way to carry a reason: a failure is a closed connection.
            Err(_) => t.tcp_failed += 1,
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    t
}

/// `hostmesh route set` or `policy set` with a file, from agent `a`.
fn document_set(a: &Agent, etcd: &Etcd, kind: &str, service: &str, toml: &str) {
    let file = a.dir().join(format!("{kind}-{service}.toml"));
    std::fs::write(&file, toml).expect("document file");
    let file = file.to_string_lossy().into_owned();
    let out = a.run_cli(&[kind, "set", service, &file, "--etcd", &etcd.endpoint()]);
    // etcd may be down (a fault of its own): then the change simply does not happen.
    if !out.status.success() {
        eprintln!(
            "  ({kind} set failed: {})",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

#[test]
fn chaos_soak() {
    let seed = env_u64("HOSTMESH_CHAOS_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let secs = env_u64("HOSTMESH_CHAOS_SECS").unwrap_or(120);
    eprintln!("chaos soak: seed {seed}, {secs} s of faults (replay: HOSTMESH_CHAOS_SEED={seed})");
    let mut rng = Rng(seed);

    let net = Net::new();
    let mut etcd = Etcd::start(&net);
    let ca = MeshCa::new();
    let issued = |host: &str| {
        let dir = tempfile::tempdir().expect("tmp");
        ca.issue(host, dir.path());
        dir
    };
    let server_opts = |certs: &std::path::Path| {
        AgentOpts::new()
            .mtls(certs)
            .lease_ttl("4s")
            .set_str("proxy", "request_timeout", "3s")
            .service("orders-1", ORDERS)
            .service("echo-1", ECHO)
            .service("cache-1", CACHE)
    };
    let mut servers: Vec<Server> = ["b", "c"]
        .into_iter()
        .map(|name| {
            let host = net.host(name);
            let certs = issued(name);
            let http = Backend::http(&host, 18080, "orders\n");
            let grpc = GrpcApp::start(&host, 15051);
            let redis = RedisServer::start(&host, 16379);
            let mut agent = Agent::start(&host, &etcd, server_opts(certs.path()));
            agent.wait_ready(Duration::from_secs(20));
            Server {
                host,
                agent,
                http,
                dead_http: Vec::new(),
                _grpc: grpc,
                _redis: redis,
                certs,
            }
        })
        .collect();
    let a = net.host("a");
    let a_certs = issued("a");
    let mut agent_a = Agent::start(
        &a,
        &etcd,
        AgentOpts::new()
            .mtls(a_certs.path())
            .set_str("proxy", "request_timeout", "3s"),
    );
    agent_a.wait_ready(Duration::from_secs(20));
    wait_until(Duration::from_secs(20), "a reaches orders", || {
        a.curl("http://orders.mesh:8080/")
            .is_ok_and(|(code, _)| code == 200)
    });
    let orders = SocketAddr::new(agent_a.service_vip("orders").expect("VIP").into(), 8080);
    let cache = SocketAddr::new(agent_a.service_vip("cache").expect("VIP").into(), 6379);

    let stop = AtomicBool::new(false);
    let ids = AtomicU64::new(1);
    let mut tally = Tally::default();
    std::thread::scope(|scope| {
        let traffic: Vec<_> = (0..2u64)
            .map(|i| {
                let (a, stop, ids) = (&a, &stop, &ids);
                scope.spawn(move || a.in_ns(|| http_traffic(orders, stop, ids, seed ^ i)))
            })
            .chain([
                scope.spawn(|| grpc_traffic(&a, &stop)),
                scope.spawn(|| tcp_traffic(&a, cache, &stop)),
            ])
            .collect();

        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(secs) {
            let which = rng.below(2) as usize;
            let lasting = rng.millis(1000, 4000);
            let at = started.elapsed().as_secs_f64();
            let s = &mut servers[which];
            let name = s.host.name().to_owned();
            match rng.below(10) {
                0 => {
                    eprintln!("{at:7.1}s  SIGKILL agent {name}, restart after {lasting:?}");
                    s.agent.signal(Signal::Kill);
                    std::thread::sleep(lasting);
                    s.agent.restart();
                }
                1 => {
                    eprintln!("{at:7.1}s  SIGSTOP agent {name} for {lasting:?}");
                    s.agent.signal(Signal::Stop);
                    std::thread::sleep(lasting);
                    s.agent.signal(Signal::Cont);
                }
                2 => {
                    eprintln!("{at:7.1}s  kill the HTTP app on {name}, start it after {lasting:?}");
                    s.http.kill();
                    std::thread::sleep(lasting);
                    let fresh = Backend::http(&s.host, 18080, "orders\n");
                    s.dead_http.push(std::mem::replace(&mut s.http, fresh));
                }
                3 => {
                    eprintln!("{at:7.1}s  restart etcd after {lasting:?}");
                    etcd.kill();
                    std::thread::sleep(lasting);
                    etcd.restart();
                }
                4 => {
                    eprintln!("{at:7.1}s  partition {name} for {lasting:?}");
                    s.host.isolate();
                    std::thread::sleep(lasting);
                    s.host.heal();
                }
                5 => {
                    eprintln!("{at:7.1}s  reload agent {name} and agent a");
                    s.agent.signal(Signal::Hup);
                    agent_a.signal(Signal::Hup);
                }
                6 => {
                    let attempts = 1 + rng.below(3);
                    let timeout = 1 + rng.below(3);
                    eprintln!("{at:7.1}s  route: timeout {timeout}s, max_attempts {attempts}");
                    let route = format!(
                        "timeout = \"{timeout}s\"\n[retry]\nmax_attempts = {attempts}\n\
                         per_try_timeout = \"1s\"\n"
                    );
                    document_set(&agent_a, &etcd, "route", "orders", &route);
                }
                7 => {
                    let hosts = if rng.below(2) == 0 {
                        "[\"a\"]"
                    } else {
                        "[\"a\", \"b\", \"c\"]"
                    };
                    eprintln!("{at:7.1}s  policy: allow_hosts = {hosts}");
                    let policy = format!("allow_hosts = {hosts}\n");
                    document_set(&agent_a, &etcd, "policy", "orders", &policy);
                }
                8 => {
                    eprintln!("{at:7.1}s  rotate {name}'s certificate");
                    ca.issue(&name, s.certs.path());
                }
                _ => {
                    eprintln!("{at:7.1}s  quiet for {lasting:?}");
                    std::thread::sleep(lasting);
                }
            }
            std::thread::sleep(rng.millis(500, 2000));
        }
        // Faults over: every kind of traffic must come back.
        eprintln!(
            "faults over after {:.1}s; checking recovery",
            started.elapsed().as_secs_f64()
        );
        for s in &mut servers {
            s.host.heal();
        }
        stop.store(true, Ordering::Relaxed);
        for t in traffic {
            tally.merge(t.join().expect("a traffic thread"));
        }
    });

    wait_until(
        Duration::from_secs(30),
        "HTTP through the mesh again",
        || {
            a.curl("http://orders.mesh:8080/")
                .is_ok_and(|(code, _)| code == 200)
        },
    );
    wait_for(
        Duration::from_secs(30),
        "gRPC through the mesh again",
        || {
            grpc_call(&a, "echo.mesh:50051", "hi", Duration::from_secs(2), &[])
                .starts_with("OK")
                .then_some(())
        },
    );
    wait_until(
        Duration::from_secs(30),
        "TCP through the mesh again",
        || try_redis_cli(&a, cache, &["PING"]).is_ok_and(|o| o.trim() == "PONG"),
    );

    // No POST ran twice; one answered 200 ran exactly once.
    let mut runs: std::collections::HashMap<u64, usize> = std::collections::HashMap::new();
    for s in &servers {
        for app in s.dead_http.iter().chain([&s.http]) {
            for r in app.requests() {
                let path = r["path"].as_str().unwrap_or_default();
                if let Some(id) = path.strip_prefix("/order?id=") {
                    *runs.entry(id.parse().expect("an id")).or_default() += 1;
                }
            }
        }
    }
    for (id, n) in &runs {
        if *n > 1 {
            tally.violations.push(format!("POST {id} ran {n} times"));
        }
    }
    for id in &tally.posts_ok {
        if runs.get(id).copied().unwrap_or(0) != 1 {
            tally.violations.push(format!(
                "POST {id} answered 200 but ran {:?} times",
                runs.get(id)
            ));
        }
    }

    // Bounded, and no panic.
    for agent in servers.iter().map(|s| &s.agent).chain([&agent_a]) {
        let name = agent.host().name();
        let pid = agent.pid().expect("the agent runs");
        let (rss, fds) = (rss_kib(pid), fds(pid));
        eprintln!("agent {name}: RSS {} MiB, {fds} descriptors", rss / 1024);
        if rss > MAX_RSS_KIB || fds > MAX_FDS {
            tally
                .violations
                .push(format!("agent {name}: RSS {rss} KiB, {fds} descriptors"));
        }
        if agent.log().contains("panicked") {
            tally
                .violations
                .push(format!("agent {name} panicked:\n{}", agent.log_tail(40)));
        }
    }

    eprintln!(
        "chaos soak (seed {seed}): GET {} ok, {} failed with a reason; POST {} of {} ok, {} \
         failed with a reason, {} ran; {} truncations detected by framing; gRPC {} ok, {} \
         failed with a reason; TCP {} ok, {} failed",
        tally.get_ok,
        tally.get_failed_with_reason,
        tally.post_ok,
        tally.posts_sent,
        tally.post_failed_with_reason,
        runs.len(),
        tally.truncated_detected,
        tally.grpc_ok,
        tally.grpc_failed_with_reason,
        tally.tcp_ok,
        tally.tcp_failed,
    );
    assert!(
        tally.get_ok > 0 && tally.post_ok > 0 && tally.grpc_ok > 0 && tally.tcp_ok > 0,
        "traffic of every kind got through at some point: {tally:?}"
    );
    assert!(
        tally.violations.is_empty(),
        "seed {seed}: {} broken promises:\n{}",
        tally.violations.len(),
        tally.violations.join("\n")
    );
}
