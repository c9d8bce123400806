//! The data path end to end: an unmodified client on host A calls `NAME.mesh:PORT`; the request
//! crosses A's agent and the instance host's agent to a real app.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hostmesh_tests::{Agent, AgentOpts, Backend, Etcd, Host, Net, Signal, wait_until};

fn agent(host: &Host, etcd: &Etcd, opts: AgentOpts) -> Agent {
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

    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..40 {
        let (code, body, backend) = call(&a, &["http://orders.mesh:8080/"]);
        assert_eq!(code, 200);
        assert_eq!(body, format!("hello from {backend}\n"));
        *seen.entry(backend).or_default() += 1;
    }
    assert_eq!(
        seen.keys().collect::<Vec<_>>(),
        ["b", "c"],
        "both instances get traffic: {seen:?}"
    );

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
