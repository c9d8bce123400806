//! Keeping apps working when instances fail: retries only when safe and within a budget,
//! deadlines, breakers, and route policy from etcd.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hostmesh_tests::{Agent, AgentOpts, Backend, Etcd, GrpcApp, Host, Net, grpc_call, wait_until};

pub(crate) fn agent(host: &Host, etcd: &Etcd, opts: AgentOpts) -> Agent {
    let mut a = Agent::start(host, etcd, opts);
    a.wait_ready(Duration::from_secs(15));
    a
}

pub(crate) const ORDERS: &str = "name = \"orders\"\nport = 8080\ntarget = \"127.0.0.1:18080\"\n";

fn orders_tagged(tag: &str) -> String {
    format!("{ORDERS}tags = [\"{tag}\"]\n")
}

/// Status codes (and x-backend) of `n` requests from one curl process with `parallel` in flight.
pub(crate) fn statuses(
    host: &Host,
    args: &[&str],
    url: &str,
    n: usize,
    parallel: usize,
) -> Vec<(u16, String)> {
    let parallel = parallel.to_string();
    let mut all: Vec<&str> = vec![
        "-s",
        "-w",
        "%{http_code} %header{x-backend}\\n",
        "--max-time",
        "30",
    ];
    if parallel != "1" {
        all.extend([
            "--parallel",
            "--parallel-immediate",
            "--parallel-max",
            &parallel,
        ]);
    }
    all.extend_from_slice(args);
    for _ in 0..n {
        all.extend(["-o", "/dev/null", url]);
    }
    let out = host.run("curl", &all);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (code, backend) = l.split_once(' ').unwrap_or((l, ""));
            Some((code.parse().ok()?, backend.trim().to_owned()))
        })
        .collect()
}

/// `hostmesh route set` with a policy file, from a host.
pub(crate) fn route_set(
    agent: &Agent,
    etcd: &Etcd,
    service: &str,
    policy: &str,
) -> std::process::Output {
    let file = agent.dir().join(format!("route-{service}.toml"));
    std::fs::write(&file, policy).expect("route file");
    let file = file.to_string_lossy().into_owned();
    agent.run_cli(&["route", "set", service, &file, "--etcd", &etcd.endpoint()])
}

/// Host `a` (an agent, no services) calling `orders` on `b` and `c` (an app and an agent each),
/// both serving. Fields drop in order: apps and agents, then etcd, then the network.
pub(crate) struct TwoInstances {
    pub(crate) a: Host,
    pub(crate) app_b: Backend,
    pub(crate) app_c: Backend,
    pub(crate) agent_a: Agent,
    _agents: [Agent; 2],
    pub(crate) etcd: Etcd,
    _net: Net,
}

pub(crate) fn two_instances() -> TwoInstances {
    let net = Net::new();
    let etcd = Etcd::start(&net);
    let a = net.host("a");
    let b = net.host("b");
    let c = net.host("c");
    let app_b = Backend::http(&b, 18080, "b\n");
    let app_c = Backend::http(&c, 18080, "c\n");
    let agent_a = agent(&a, &etcd, AgentOpts::new());
    let agent_b = agent(&b, &etcd, AgentOpts::new().service("orders-1", ORDERS));
    let agent_c = agent(&c, &etcd, AgentOpts::new().service("orders-2", ORDERS));
    wait_until(Duration::from_secs(10), "both instances serve", || {
        let seen = statuses(&a, &[], "http://orders.mesh:8080/", 20, 4);
        seen.iter().any(|(_, b)| b == "b") && seen.iter().any(|(_, b)| b == "c")
    });
    TwoInstances {
        a,
        app_b,
        app_c,
        agent_a,
        _agents: [agent_b, agent_c],
        etcd,
        _net: net,
    }
}

#[test]
fn a_crashed_instance_costs_no_failed_get() {
    let net = Net::new();
    let etcd = Etcd::start(&net);
    let a = net.host("a");
    let hosts: Vec<Host> = ["b", "c", "d"].iter().map(|h| net.host(h)).collect();
    let mut apps: Vec<Backend> = hosts
        .iter()
        .map(|h| Backend::http(h, 18080, "ok\n"))
        .collect();
    let agent_a = agent(&a, &etcd, AgentOpts::new());
    let _agents: Vec<Agent> = hosts
        .iter()
        .map(|h| agent(h, &etcd, AgentOpts::new().service("orders-1", ORDERS)))
        .collect();
    wait_until(Duration::from_secs(10), "all three instances serve", || {
        let seen = statuses(&a, &[], "http://orders.mesh:8080/", 30, 4);
        ["b", "c", "d"]
            .iter()
            .all(|h| seen.iter().any(|(_, b)| b == h))
    });
    // 2,000 GETs over 4 connections; b's app crashes a moment in.
    let url = "http://orders.mesh:8080/".to_owned();
    let a2 = a.clone();
    let load = std::thread::spawn(move || statuses(&a2, &[], &url, 2000, 4));
    std::thread::sleep(Duration::from_millis(300));
    apps[0].kill();
    let results = load.join().expect("load");
    assert_eq!(results.len(), 2000);
    let failed: Vec<_> = results.iter().filter(|(c, _)| *c != 200).collect();
    assert!(
        failed.is_empty(),
        "{} failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    // b is ejected (or, between ejections, half-open: only a probe gets through).
    wait_until(Duration::from_secs(5), "b held out by its breaker", || {
        agent_a.status()["services"]["orders"]["endpoints"]
            .as_array()
            .is_some_and(|e| {
                e.iter().any(|e| {
                    e["host"] == "b" && (e["breaker"] == "ejected" || e["breaker"] == "half-open")
                })
            })
    });
    let metrics = agent_a.metrics();
    assert!(
        metric(&metrics, "hostmesh_ejections_total{service=\"orders\"}") >= 1.0,
        "{metrics}"
    );
    // Once ejected, b gets no traffic: at most its one half-open probe fails and is retried.
    let retries = |m: &str| {
        metric(
            m,
            "hostmesh_retries_total{service=\"orders\",reason=\"never-reached\"}",
        )
    };
    let before = retries(&agent_a.metrics());
    let after = statuses(&a, &[], "http://orders.mesh:8080/", 100, 4);
    assert!(after.iter().all(|(c, _)| *c == 200), "{after:?}");
    let extra = retries(&agent_a.metrics()) - before;
    assert!(extra <= 1.0, "{extra} requests still went to b");
}

/// A sample's value from Prometheus text, 0 when absent.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

#[test]
fn a_post_that_may_have_reached_the_app_is_never_sent_twice() {
    let mut m = two_instances();
    m.app_b.set_hangup(true);
    m.app_c.set_hangup(true);
    let before = m.app_b.request_count() + m.app_c.request_count();
    let out = statuses(
        &m.a,
        &["-X", "POST", "--data", "order=1"],
        "http://orders.mesh:8080/pay",
        1,
        1,
    );
    assert_eq!(out[0].0, 502, "{out:?}");
    let after = m.app_b.request_count() + m.app_c.request_count();
    assert_eq!(after - before, 1, "the POST reached exactly one app");

    // The client says it is safe: tried again elsewhere.
    let out = statuses(
        &m.a,
        &[
            "-X",
            "POST",
            "--data",
            "order=2",
            "-H",
            "x-hostmesh-retryable: true",
        ],
        "http://orders.mesh:8080/pay",
        1,
        1,
    );
    assert_eq!(out[0].0, 502, "both hang up");
    let retried = m.app_b.request_count() + m.app_c.request_count() - after;
    assert!(retried >= 2, "retried on the other instance: {retried}");

    // A POST to an instance whose port refuses never reached it: it goes elsewhere.
    m.app_b.set_hangup(false);
    m.app_c.set_hangup(false);
    m.app_b.kill();
    let mut ok = 0;
    for i in 0..10 {
        let out = statuses(
            &m.a,
            &["-X", "POST", "--data", &format!("order={i}")],
            "http://orders.mesh:8080/pay",
            1,
            1,
        );
        if out[0] == (200, "c".to_owned()) {
            ok += 1;
        }
    }
    assert_eq!(ok, 10, "every POST succeeded on c");
}

#[test]
fn retries_stay_within_the_budget_when_everything_fails() {
    let m = two_instances();
    let (a, app_b, app_c, agent_a) = (&m.a, &m.app_b, &m.app_c, &m.agent_a);
    // Breakers off the table for this one: every instance fails, none may be ejected for long.
    app_b.set_status(503);
    app_c.set_status(503);
    let before = app_b.request_count() + app_c.request_count();
    let started = Instant::now();
    let mut requests = 0;
    while started.elapsed() < Duration::from_secs(10) {
        requests += statuses(a, &[], "http://orders.mesh:8080/", 200, 4).len();
    }
    let attempts = app_b.request_count() + app_c.request_count() - before;
    // 20 % of requests plus the reserve (10/s over the 10 s window), plus 10 % slack.
    let bound = ((requests as f64 * 1.2 + 100.0) * 1.1) as usize;
    assert!(
        attempts <= bound,
        "{attempts} attempts for {requests} requests (bound {bound})"
    );
    assert!(
        attempts > requests,
        "some retries happened: {attempts} for {requests}"
    );
    let metrics = agent_a.metrics();
    let exhausted: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("hostmesh_retry_budget_exhausted_total{service=\"orders\"} "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert!(exhausted > 0.0, "the exhaustion counter grows:\n{metrics}");
}

#[test]
fn a_deadline_fails_fast_and_shrinks_along_the_way() {
    let net = Net::new();
    let etcd = Etcd::start(&net);
    let a = net.host("a");
    let b = net.host("b");
    let app = Backend::http(&b, 18080, "slow\n");
    let _agent_a = agent(&a, &etcd, AgentOpts::new());
    let _agent_b = agent(&b, &etcd, AgentOpts::new().service("orders-1", ORDERS));
    wait_until(Duration::from_secs(10), "orders answers", || {
        statuses(&a, &[], "http://orders.mesh:8080/", 1, 1)[0].0 == 200
    });
    // The next hop sees what is left of the client's deadline.
    statuses(
        &a,
        &["-H", "x-hostmesh-timeout: 800ms"],
        "http://orders.mesh:8080/seen",
        1,
        1,
    );
    let seen = app
        .requests()
        .into_iter()
        .rev()
        .find(|r| r["path"] == "/seen")
        .expect("request");
    let left = seen["headers"]["x-hostmesh-timeout"]
        .as_str()
        .expect("timeout header");
    let ms: u64 = left.trim_end_matches("ms").parse().expect("ms");
    assert!(
        (1..800).contains(&ms),
        "the app sees less than 800ms: {left}"
    );

    app.set_delay(Duration::from_secs(1));
    let started = Instant::now();
    let out = a.run(
        "curl",
        &[
            "-s",
            "-o",
            "/dev/null",
            "-D",
            "-",
            "-H",
            "x-hostmesh-timeout: 250ms",
            "http://orders.mesh:8080/",
        ],
    );
    let took = started.elapsed();
    let head = String::from_utf8_lossy(&out.stdout).to_lowercase();
    assert!(head.starts_with("http/1.1 504"), "{head}");
    assert!(
        head.contains("x-hostmesh-error: deadline-exceeded"),
        "{head}"
    );
    assert!(
        took >= Duration::from_millis(230) && took <= Duration::from_millis(750),
        "{took:?}"
    );
}

#[test]
fn a_route_split_sends_about_a_tenth_to_v2_and_changes_apply_without_errors() {
    let net = Net::new();
    let etcd = Etcd::start(&net);
    let a = net.host("a");
    let b = net.host("b");
    let c = net.host("c");
    let _app_b = Backend::http(&b, 18080, "v1\n");
    let _app_c = Backend::http(&c, 18080, "v2\n");
    let agent_a = agent(&a, &etcd, AgentOpts::new());
    let _agent_b = agent(
        &b,
        &etcd,
        AgentOpts::new().service("orders-1", &orders_tagged("v1")),
    );
    let _agent_c = agent(
        &c,
        &etcd,
        AgentOpts::new().service("orders-2", &orders_tagged("v2")),
    );
    wait_until(Duration::from_secs(10), "orders answers", || {
        statuses(&a, &[], "http://orders.mesh:8080/", 1, 1)[0].0 == 200
    });

    // An invalid file: refused with the key named, nothing written.
    let out = route_set(
        &agent_a,
        &etcd,
        "orders",
        "[[rules]]\nsplit = [ { tags = [\"v2\"], weight = -1 } ]\n",
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("rules[0].split[0].weight"),
        "{out:?}"
    );
    assert!(etcd.get("/hostmesh/v1/routes/orders").is_none());

    let split = "[[rules]]\nmatch = { path_prefix = \"/\" }\nsplit = [ { tags = [\"v1\"], weight = 90 }, { tags = [\"v2\"], weight = 10 } ]\n";
    let out = route_set(&agent_a, &etcd, "orders", split);
    assert!(out.status.success(), "{out:?}");
    // `route get` prints TOML that `route set` accepts.
    let got = agent_a.run_cli(&["route", "get", "orders", "--etcd", &etcd.endpoint()]);
    assert!(got.status.success());
    assert!(
        route_set(
            &agent_a,
            &etcd,
            "orders",
            &String::from_utf8_lossy(&got.stdout)
        )
        .status
        .success()
    );

    // Applied within 3 s, then about 10 % to v2.
    wait_until(Duration::from_secs(3), "the split applies", || {
        let seen = statuses(&a, &[], "http://orders.mesh:8080/", 40, 4);
        seen.iter().filter(|(_, b)| b == "b").count() >= 30
    });
    let seen = statuses(&a, &[], "http://orders.mesh:8080/", 1000, 4);
    assert!(seen.iter().all(|(c, _)| *c == 200));
    let v2 = seen.iter().filter(|(_, b)| b == "c").count();
    assert!((50..=150).contains(&v2), "{v2} of 1000 to v2");

    // A change under load: all to v2, within 3 s, with no failed request.
    let url = "http://orders.mesh:8080/".to_owned();
    let a2 = a.clone();
    let load = std::thread::spawn(move || {
        let mut all = Vec::new();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(5) {
            all.extend(statuses(&a2, &[], &url, 50, 4));
        }
        all
    });
    let changed = Instant::now();
    let all_v2 = "[[rules]]\nsplit = [ { tags = [\"v2\"], weight = 100 } ]\n";
    assert!(
        route_set(&agent_a, &etcd, "orders", all_v2)
            .status
            .success()
    );
    let results = load.join().expect("load");
    assert!(
        results.iter().all(|(c, _)| *c == 200),
        "a request failed during the change"
    );
    wait_until(
        Duration::from_secs(3).saturating_sub(changed.elapsed()) + Duration::from_millis(100),
        "all to v2",
        || {
            statuses(&a, &[], "http://orders.mesh:8080/", 20, 4)
                .iter()
                .all(|(_, b)| b == "c")
        },
    );
    let mut by: BTreeMap<String, usize> = BTreeMap::new();
    for (_, b) in statuses(&a, &[], "http://orders.mesh:8080/", 50, 4) {
        *by.entry(b).or_default() += 1;
    }
    assert_eq!(by.keys().collect::<Vec<_>>(), ["c"], "{by:?}");
    // Deleting an absent route exits 0.
    assert!(
        agent_a
            .run_cli(&["route", "delete", "nosuch", "--etcd", &etcd.endpoint()])
            .status
            .success()
    );
}

#[test]
fn breakers_eject_at_most_half_and_bring_instances_back() {
    let net = Net::new();
    let etcd = Etcd::start(&net);
    let a = net.host("a");
    let hosts: Vec<Host> = ["b", "c", "d", "e"].iter().map(|h| net.host(h)).collect();
    let apps: Vec<Backend> = hosts
        .iter()
        .map(|h| Backend::http(h, 18080, "ok\n"))
        .collect();
    let agent_a = agent(&a, &etcd, AgentOpts::new());
    let _agents: Vec<Agent> = hosts
        .iter()
        .map(|h| agent(h, &etcd, AgentOpts::new().service("orders-1", ORDERS)))
        .collect();
    wait_until(Duration::from_secs(10), "all four serve", || {
        let seen = statuses(&a, &[], "http://orders.mesh:8080/", 40, 4);
        ["b", "c", "d", "e"]
            .iter()
            .all(|h| seen.iter().any(|(_, b)| b == h))
    });
    for app in &apps[..3] {
        app.set_status(503);
    }
    let breakers = || -> Vec<String> {
        agent_a.status()["services"]["orders"]["endpoints"]
            .as_array()
            .map(|e| {
                e.iter()
                    .map(|e| e["breaker"].as_str().unwrap_or("").to_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut most = 0;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(4) {
        statuses(&a, &[], "http://orders.mesh:8080/", 40, 4);
        let out = breakers().iter().filter(|b| *b != "closed").count();
        most = most.max(out);
    }
    assert!(most >= 1, "failing instances get ejected");
    assert!(most <= 2, "at most 50 % of 4 ejected at once, saw {most}");
    // Recovery: once the ejection ends, one probe succeeds and the instance is back.
    for app in &apps[..3] {
        app.set_status(200);
    }
    wait_until(
        Duration::from_secs(20),
        "every breaker closed again",
        || {
            statuses(&a, &[], "http://orders.mesh:8080/", 20, 4);
            breakers().iter().all(|b| b == "closed")
        },
    );
    let seen = statuses(&a, &[], "http://orders.mesh:8080/", 80, 8);
    assert!(seen.iter().all(|(c, _)| *c == 200));
}

#[test]
fn grpc_calls_cross_the_mesh_and_deadlines_come_back_as_grpc_statuses() {
    let net = Net::new();
    let etcd = Etcd::start(&net);
    let a = net.host("a");
    let b = net.host("b");
    let _app = GrpcApp::start(&b, 15051);
    let def = "name = \"echo\"\nport = 50051\ntarget = \"127.0.0.1:15051\"\nprotocol = \"grpc\"\n";
    let _agent_a = agent(&a, &etcd, AgentOpts::new());
    let _agent_b = agent(&b, &etcd, AgentOpts::new().service("echo-1", def));
    let target = "echo.mesh:50051";
    let reply = hostmesh_tests::wait_for(
        Duration::from_secs(10),
        "a gRPC call through the mesh",
        || {
            let r = grpc_call(&a, target, "hi", Duration::from_secs(2), &[]);
            r.starts_with("OK").then_some(r)
        },
    );
    // The app (h2c) learns the caller, and what is left of the client's grpc-timeout.
    assert!(reply.contains("caller=a"), "{reply}");
    let left: u64 = reply
        .split("timeout=")
        .nth(1)
        .and_then(|t| t.split("ms").next())
        .and_then(|t| t.parse().ok())
        .expect("the app saw x-hostmesh-timeout");
    assert!((1..=2000).contains(&left), "{reply}");

    // A deadline the agent enforces comes back as DEADLINE_EXCEEDED with the agent's reason.
    let started = Instant::now();
    let r = grpc_call(
        &a,
        target,
        "sleep:1000",
        Duration::from_secs(5),
        &["x-hostmesh-timeout=250ms"],
    );
    let took = started.elapsed();
    assert!(r.starts_with("DEADLINE_EXCEEDED"), "{r}");
    assert!(r.ends_with("error=deadline-exceeded"), "{r}");
    assert!(took < Duration::from_millis(1500), "{took:?}");
}
