//! The data path end to end: an unmodified client on host A calls `NAME.mesh:PORT`; the request
//! crosses A's agent and the instance host's agent to a real app.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hostmesh_tests::{
    Agent, AgentOpts, Backend, Etcd, FaultProxy, Host, Net, Nginx, RedisServer, Signal, wait_for,
    wait_until,
};

pub(crate) fn agent(host: &Host, etcd: &Etcd, opts: AgentOpts) -> Agent {
    let mut a = Agent::start(host, etcd, opts);
    a.wait_ready(Duration::from_secs(15));
    a
}

fn orders(tags: &str) -> String {
    format!("name = \"orders\"\nport = 8080\ntarget = \"127.0.0.1:18080\"\ntags = [{tags}]\n")
}

/// curl from a host; returns (status, body, the x-backend header).
fn call(host: &Host, args: &[&str]) -> (u16, String, String) {
    let mut all = vec![
        "-sS",
        "-D",
        "/dev/stderr",
        "-o",
        "-",
        "-w",
        "\n%{http_code}",
    ];
    all.extend_from_slice(args);
    let out = host.run("curl", &all);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = stdout.rsplit_once('\n').unwrap_or(("", "0"));
    let headers = String::from_utf8_lossy(&out.stderr).to_lowercase();
    let backend = headers
        .lines()
        .find_map(|l| l.strip_prefix("x-backend: "))
        .unwrap_or("")
        .trim()
        .to_owned();
    (code.trim().parse().unwrap_or(0), body.to_owned(), backend)
}

/// Waits until the service answers through the mesh from `host`.
fn wait_reachable(host: &Host, url: &str) {
    wait_until(
        Duration::from_secs(10),
        &format!("{url} answers 200"),
        || call(host, &["--max-time", "2", url]).0 == 200,
    );
}

#[test]
fn curl_reaches_instances_on_other_hosts_through_both_agents() {
    let net = Net::new();
    let etcd = Etcd::start(&net);
    let a = net.host("a");
    let b = net.host("b");
    let c = net.host("c");
    let _app_b = Backend::http(&b, 18080, "hello from b\n");
    let _app_c = Backend::http(&c, 18080, "hello from c\n");
    let _agent_a = agent(&a, &etcd, AgentOpts::new());
    let _agent_b = agent(
        &b,
        &etcd,
        AgentOpts::new().service("orders-1", &orders("\"v1\"")),
    );
    let _agent_c = agent(
        &c,
        &etcd,
        AgentOpts::new().service("orders-2", &orders("\"v2\"")),
    );
    wait_reachable(&a, "http://orders.mesh:8080/");

    // Under concurrent load both instances get traffic: the balancer weighs latency by the
    // requests already in flight. (One request at a time goes to whichever answers faster.)
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for backend in backends_parallel(&a, "http://orders.mesh:8080/", 80, 8) {
        *seen.entry(backend).or_default() += 1;
    }
    assert_eq!(
        seen.keys().collect::<Vec<_>>(),
        ["b", "c"],
        "both instances get traffic: {seen:?}"
    );
    assert_eq!(seen.values().sum::<usize>(), 80);
    let (code, body, backend) = call(&a, &["http://orders.mesh:8080/"]);
    assert_eq!((code, body), (200, format!("hello from {backend}\n")));

    // HTTP/2 from the client; the app still speaks HTTP/1.1.
    let (code, _, _) = call(&a, &["--http2-prior-knowledge", "http://orders.mesh:8080/"]);
    assert_eq!(code, 200);

    // A tag subset's VIP reaches only instances with that tag.
    for _ in 0..10 {
        assert_eq!(call(&a, &["http://v2.orders.mesh:8080/"]).2, "c");
    }
}

#[test]
fn the_app_sees_the_caller_and_bodies_stream_intact_both_ways() {
    let net = Net::new();
    let etcd = Etcd::start(&net);
    let a = net.host("a");
    let b = net.host("b");
    let app = Backend::http(&b, 18080, "ok\n");
    let _agent_a = agent(&a, &etcd, AgentOpts::new());
    let _agent_b = agent(&b, &etcd, AgentOpts::new().service("orders-1", &orders("")));
    wait_reachable(&a, "http://orders.mesh:8080/");

    // Client-sent internal headers are dropped; the app learns who called.
    let (code, _, _) = call(
        &a,
        &[
            "-H",
            "x-hostmesh-dst: evil/1",
            "-H",
            "x-hostmesh-timeout: 5s",
            "http://orders.mesh:8080/who",
        ],
    );
    assert_eq!(code, 200);
    let seen = app
        .requests()
        .into_iter()
        .find(|r| r["path"] == "/who")
        .expect("the request");
    let h = &seen["headers"];
    assert_eq!(h["x-hostmesh-caller"], "a", "{seen}");
    assert_eq!(h["forwarded"], format!("for={}", a.addr()), "{seen}");
    assert_eq!(h["host"], "orders.mesh:8080", "{seen}");
    assert!(h.get("x-hostmesh-dst").is_none(), "{seen}");
    assert!(
        h["x-hostmesh-timeout"]
            .as_str()
            .is_some_and(|t| t.ends_with("ms")),
        "{seen}"
    );

    // Request heads beyond the limits (100 headers, 64 KiB) are refused with 431.
    let mut many: Vec<String> = Vec::new();
    for i in 0..120 {
        many.extend(["-H".to_owned(), format!("x-h{i}: {i}")]);
    }
    let mut args: Vec<&str> = many.iter().map(String::as_str).collect();
    args.push("http://orders.mesh:8080/");
    assert_eq!(call(&a, &args).0, 431);
    let big = format!("x-big: {}", "a".repeat(70 * 1024));
    assert_eq!(call(&a, &["-H", &big, "http://orders.mesh:8080/"]).0, 431);

    // 10 MiB down and up, compared byte for byte.
    let n = 10 * 1024 * 1024;
    let out = a.run(
        "sh",
        &[
            "-c",
            &format!("curl -sS http://orders.mesh:8080/bytes?n={n} | sha256sum"),
        ],
    );
    let expected = b.run(
        "sh",
        &[
            "-c",
            &format!("curl -sS http://127.0.0.1:18080/bytes?n={n} | sha256sum"),
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&expected.stdout)
    );
    let up = a.run(
        "sh",
        &["-c", "head -c 10485760 /dev/urandom > /tmp/hm-up-$$ && sha256sum < /tmp/hm-up-$$ && curl -sS --data-binary @/tmp/hm-up-$$ http://orders.mesh:8080/echo | sha256sum; rm -f /tmp/hm-up-$$"],
    );
    let text = String::from_utf8_lossy(&up.stdout);
    let sums: Vec<&str> = text
        .lines()
        .map(|l| l.split_whitespace().next().unwrap_or(""))
        .collect();
    assert_eq!(
        sums.len(),
        2,
        "{text} {}",
        String::from_utf8_lossy(&up.stderr)
    );
    assert_eq!(sums[0], sums[1], "10 MiB upload echoed intact");
}

#[test]
fn no_instances_is_503_at_once_and_all_refusing_is_502() {
    let net = Net::new();
    let etcd = Etcd::start(&net);
    let a = net.host("a");
    let b = net.host("b");
    let _agent_a = agent(&a, &etcd, AgentOpts::new());
    // Registered, no check, but nothing listens at the target: every connect is refused.
    let agent_b = agent(&b, &etcd, AgentOpts::new().service("orders-1", &orders("")));
    wait_until(Duration::from_secs(10), "the VIP resolves on A", || {
        a.dig(&["orders.mesh"]).status == "NOERROR"
    });
    let (code, body, _) = {
        let mut r = (0, String::new(), String::new());
        wait_until(Duration::from_secs(10), "502 from the mesh", || {
            r = call(&a, &["--max-time", "5", "http://orders.mesh:8080/"]);
            r.0 == 502
        });
        r
    };
    assert_eq!(code, 502);
    assert!(body.contains("upstream-unreachable"), "{body}");

    // Instances gone: 503 no-endpoints, fast.
    agent_b.write_service(
        "orders-1",
        "name = \"orders\"\nport = 8080\n[check]\ntcp = true\ninterval = \"1s\"\n",
    );
    agent_b.signal(Signal::Hup);
    wait_until(Duration::from_secs(10), "503 no-endpoints", || {
        call(&a, &["--max-time", "5", "http://orders.mesh:8080/"]).0 == 503
    });
    let started = Instant::now();
    let (code, body, _) = call(&a, &["--max-time", "5", "http://orders.mesh:8080/"]);
    assert_eq!((code, body.trim()), (503, "hostmesh: no-endpoints"));
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "took {:?}",
        started.elapsed()
    );
}

/// redis-cli against redis.mesh:6379 from a host.
pub(crate) fn redis_mesh(host: &Host, args: &[&str]) -> String {
    let mut all = vec!["-h", "redis.mesh", "-p", "6379"];
    all.extend_from_slice(args);
    String::from_utf8_lossy(&host.run("redis-cli", &all).stdout).into_owned()
}

/// The backends that answered a batch of sequential requests, from one curl process.
fn backends(host: &Host, url: &str, n: usize) -> Vec<String> {
    backends_parallel(host, url, n, 1)
}

/// The same with up to `parallel` requests in flight at once.
fn backends_parallel(host: &Host, url: &str, n: usize, parallel: usize) -> Vec<String> {
    let parallel = parallel.to_string();
    let mut args = vec!["-s", "-w", "%header{x-backend}\\n", "--max-time", "30"];
    if parallel != "1" {
        args.extend([
            "--parallel",
            "--parallel-immediate",
            "--parallel-max",
            &parallel,
        ]);
    }
    for _ in 0..n {
        // One `-o` per URL: curl applies each to the next URL only.
        args.extend(["-o", "/dev/null", url]);
    }
    let out = host.run("curl", &args);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn nft_capture_coexists_with_an_app_on_the_wildcard_address() {
    let net = Net::new();
    let etcd = Etcd::start(&net);
    let a = net.host("a");
    let b = net.host("b");
    let _local_app = Backend::http(&a, 8080, "a's own app\n");
    let _app_b = Backend::http(&b, 18080, "hello from b\n");
    let mut agent_a = agent(
        &a,
        &etcd,
        AgentOpts::new().set_str("proxy", "capture", "nft"),
    );
    let _agent_b = agent(&b, &etcd, AgentOpts::new().service("orders-1", &orders("")));
    wait_reachable(&a, "http://orders.mesh:8080/");
    assert_eq!(call(&a, &["http://orders.mesh:8080/"]).2, "b");
    // The app on 0.0.0.0:8080 is untouched: only TCP to the VIP range is redirected.
    assert_eq!(call(&a, &["http://127.0.0.1:8080/"]).1, "a's own app\n");
    let tables = a.run_ok("nft", &["list", "tables"]);
    assert!(tables.contains("hostmesh"), "{tables}");
    agent_a.signal(Signal::Term);
    agent_a
        .wait_exit(Duration::from_secs(10))
        .expect("agent stops");
    let tables = a.run_ok("nft", &["list", "tables"]);
    assert!(
        !tables.contains("hostmesh"),
        "the table goes with the agent: {tables}"
    );
}

#[test]
fn listen_capture_reports_a_wildcard_conflict_and_keeps_running() {
    let net = Net::new();
    let etcd = Etcd::start(&net);
    let a = net.host("a");
    let b = net.host("b");
    let _local_app = Backend::http(&a, 8080, "a's own app\n");
    let _app_b = Backend::http(&b, 18080, "hello from b\n");
    let agent_a = agent(&a, &etcd, AgentOpts::new());
    let _agent_b = agent(&b, &etcd, AgentOpts::new().service("orders-1", &orders("")));
    wait_until(Duration::from_secs(10), "the conflict in /status", || {
        agent_a.status()["problems"].as_array().is_some_and(|p| {
            p.iter().any(|p| {
                p.as_str()
                    .is_some_and(|p| p.contains(":8080: address in use"))
            })
        })
    });
    assert!(
        agent_a
            .metrics()
            .contains("hostmesh_capture_bind_problems 1")
    );
    assert_eq!(agent_a.admin_get("/live").0, 200);
    assert_eq!(call(&a, &["http://127.0.0.1:8080/"]).1, "a's own app\n");
}

#[test]
fn tcp_services_fail_over_while_connecting_and_close_at_once_with_nowhere_to_go() {
    let net = Net::new();
    let etcd = Etcd::start(&net);
    let a = net.host("a");
    let b = net.host("b");
    let c = net.host("c");
    let _redis = RedisServer::start(&b, 16379);
    let redis = "name = \"redis\"\nport = 6379\ntarget = \"127.0.0.1:16379\"\nprotocol = \"tcp\"\n";
    let _agent_a = agent(&a, &etcd, AgentOpts::new());
    let _agent_b = agent(&b, &etcd, AgentOpts::new().service("redis-1", redis));
    // On c nothing listens at the target: every connection there is refused.
    let agent_c = agent(&c, &etcd, AgentOpts::new().service("redis-2", redis));
    wait_until(
        Duration::from_secs(10),
        "both instances in A's catalog",
        || {
            a.dig(&["SRV", "_redis._tcp.mesh"]).status == "NOERROR"
                && agent_c.status()["services"]["redis"]["endpoints"]
                    .as_array()
                    .is_some_and(|e| e.len() == 2)
        },
    );
    for i in 0..20 {
        let out = redis_mesh(&a, &["PING"]);
        assert_eq!(out.trim(), "PONG", "connection {i}");
    }
    assert_eq!(redis_mesh(&a, &["SET", "k", "v"]).trim(), "OK");
    assert_eq!(redis_mesh(&a, &["GET", "k"]).trim(), "v");

    // Nowhere to go: the connection is closed at once, not left hanging.
    let none =
        "name = \"nothing\"\nport = 7000\ntarget = \"127.0.0.1:17000\"\nprotocol = \"tcp\"\n";
    agent_c.write_service("nothing-1", none);
    agent_c.signal(Signal::Hup);
    wait_until(Duration::from_secs(10), "nothing.mesh resolves", || {
        a.dig(&["nothing.mesh"]).status == "NOERROR"
    });
    let started = Instant::now();
    let out = a.run("sh", &["-c", "printf 'PING\\r\\n' | timeout 5 curl -sS telnet://nothing.mesh:7000 2>&1; echo exit=$?"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}: {text}",
        started.elapsed()
    );
    assert!(!text.contains("exit=124"), "left hanging: {text}");
}

#[test]
fn latency_aware_balancing_avoids_a_slow_instance_and_comes_back_to_it() {
    let net = Net::new();
    let etcd = Etcd::start(&net);
    let a = net.host("a");
    let b = net.host("b");
    let c = net.host("c");
    let _app_b = Backend::http(&b, 18080, "b\n");
    let _app_c = Backend::http(&c, 18080, "c\n");
    // B's instance sits behind a fault proxy that adds latency to every response.
    let slow = FaultProxy::start(
        &b,
        "127.0.0.1:18081".parse().expect("addr"),
        "127.0.0.1:18080".parse().expect("addr"),
    );
    let via_proxy = "name = \"orders\"\nport = 8080\ntarget = \"127.0.0.1:18081\"\n";
    let _agent_a = agent(&a, &etcd, AgentOpts::new());
    let _agent_b = agent(&b, &etcd, AgentOpts::new().service("orders-1", via_proxy));
    let _agent_c = agent(&c, &etcd, AgentOpts::new().service("orders-2", &orders("")));
    wait_until(Duration::from_secs(10), "both instances answer", || {
        let seen = backends(&a, "http://orders.mesh:8080/", 20);
        seen.iter().any(|s| s == "b") && seen.iter().any(|s| s == "c")
    });
    slow.set_delay(Duration::from_millis(50));
    let seen = backends(&a, "http://orders.mesh:8080/", 500);
    assert_eq!(seen.len(), 500);
    let to_c = seen.iter().filter(|s| *s == "c").count();
    assert!(to_c >= 400, "{to_c} of 500 to the fast instance");

    // Fast again: an instance nobody picks only looks better as its estimate decays.
    slow.set_delay(Duration::ZERO);
    let started = Instant::now();
    wait_until(Duration::from_secs(60), "b gets traffic again", || {
        backends(&a, "http://orders.mesh:8080/", 20)
            .iter()
            .any(|s| s == "b")
    });
    eprintln!("b picked again after {:?}", started.elapsed());
}

#[test]
fn a_new_service_is_reachable_through_its_vip_on_another_host_within_3s() {
    let net = Net::new();
    let etcd = Etcd::start(&net);
    let a = net.host("a");
    let b = net.host("b");
    let _app = Nginx::start(&b, 18090, "from nginx\n");
    let _agent_a = agent(&a, &etcd, AgentOpts::new());
    let agent_b = agent(&b, &etcd, AgentOpts::new());
    agent_b.write_service(
        "web-1",
        "name = \"web\"\nport = 80\ntarget = \"127.0.0.1:18090\"\n",
    );
    agent_b.signal(Signal::Hup);
    let vip = wait_for(Duration::from_secs(5), "web's VIP", || {
        etcd.get("/hostmesh/v1/vips/web")
            .and_then(|v| serde_json::from_str::<String>(&v).ok())
    });
    let started = Instant::now();
    let url = format!("http://{vip}/");
    wait_until(
        Duration::from_secs(3),
        "web answers through its VIP",
        || call(&a, &["--max-time", "1", &url]).0 == 200,
    );
    eprintln!("reachable after {:?}", started.elapsed());
    assert_eq!(call(&a, &[&url]).1, "from nginx\n");
}
