//! The agent's lifecycle as systemd and operators see it: notify messages, reload, drain.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use hostmesh_tests::{Agent, AgentOpts, Etcd, Net, Signal, wait_for};

/// A `NOTIFY_SOCKET` as systemd would offer it: every datagram the agent sends, kept in order.
struct NotifySocket {
    _dir: tempfile::TempDir,
    path: String,
    sock: UnixDatagram,
    seen: Vec<String>,
}

impl NotifySocket {
    fn new() -> NotifySocket {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("notify.sock");
        let sock = UnixDatagram::bind(&path).expect("bind the notify socket");
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("read timeout");
        NotifySocket {
            path: path.to_string_lossy().into_owned(),
            _dir: dir,
            sock,
            seen: Vec::new(),
        }
    }

    /// Reads until a message with the line `state` arrives; returns its index in `seen`.
    #[track_caller]
    fn expect(&mut self, state: &str, after: usize) -> usize {
        let mut buf = [0u8; 4096];
        wait_for(Duration::from_secs(10), &format!("notify {state}"), || {
            if let Ok(n) = self.sock.recv(&mut buf) {
                self.seen
                    .push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
            self.seen
                .iter()
                .enumerate()
                .skip(after)
                .find(|(_, m)| m.lines().any(|l| l == state))
                .map(|(i, _)| i)
        })
    }
}

#[test]
fn systemd_hears_ready_reloading_stopping_and_watchdog() {
    let net = Net::new();
    let etcd = Etcd::start(&net);
    let mut notify = NotifySocket::new();
    let mut a = Agent::start(
        &net.host("a"),
        &etcd,
        AgentOpts::new()
            .env("NOTIFY_SOCKET", &notify.path)
            .env("WATCHDOG_USEC", "300000"),
    );
    let ready = notify.expect("READY=1", 0);
    // READY means what /ready means: sent only once it would answer 200.
    assert!(a.is_ready(), "READY=1 sent before /ready said 200");
    let first_ping = notify.expect("WATCHDOG=1", 0);
    notify.expect("WATCHDOG=1", first_ping + 1);

    a.signal(Signal::Hup);
    let reloading = notify.expect("RELOADING=1", ready + 1);
    assert!(
        notify.seen[reloading]
            .lines()
            .any(|l| l.starts_with("MONOTONIC_USEC=")),
        "RELOADING=1 comes with MONOTONIC_USEC (Type=notify-reload): {:?}",
        notify.seen[reloading]
    );
    notify.expect("READY=1", reloading + 1);

    a.signal(Signal::Term);
    notify.expect("STOPPING=1", reloading + 1);
    let status = a
        .wait_exit(Duration::from_secs(5))
        .expect("exits after SIGTERM");
    assert_eq!(status.code(), Some(0), "{}", a.log_tail(20));
}

fn orders_at(port: u16) -> String {
    format!("name = \"orders\"\nport = 8080\ntarget = \"127.0.0.1:{port}\"\n")
}

/// The bodies of `n` sequential GETs from `host` (errors as their message).
fn bodies(host: &hostmesh_tests::Host, url: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| match host.curl(url) {
            Ok((200, body)) => body.trim().to_owned(),
            Ok((code, body)) => format!("{code}: {}", body.trim()),
            Err(e) => e.to_string(),
        })
        .collect()
}

/// Host `a` (an agent, no services) calling `orders` on host `b` (the app and an agent), both
/// agents built from `opts`, ready and serving. Fields drop in order: apps and agents, then etcd,
/// then the network.
struct CallerAndOrders {
    app: hostmesh_tests::Backend,
    _agent_a: Agent,
    agent_b: Agent,
    a: hostmesh_tests::Host,
    b: hostmesh_tests::Host,
    etcd: Etcd,
    _net: Net,
}

const ORDERS_URL: &str = "http://orders.mesh:8080/";

fn caller_and_orders(opts: impl Fn(AgentOpts) -> AgentOpts) -> CallerAndOrders {
    let net = Net::new();
    let etcd = Etcd::start(&net);
    let a = net.host("a");
    let b = net.host("b");
    let app = hostmesh_tests::Backend::http(&b, 18080, "b\n");
    let mut agent_a = Agent::start(&a, &etcd, opts(AgentOpts::new()));
    let mut agent_b = Agent::start(
        &b,
        &etcd,
        opts(AgentOpts::new().service("orders-1", &orders_at(18080))),
    );
    agent_a.wait_ready(Duration::from_secs(15));
    agent_b.wait_ready(Duration::from_secs(15));
    hostmesh_tests::wait_until(Duration::from_secs(10), "orders serves", || {
        bodies(&a, ORDERS_URL, 1) == ["b"]
    });
    CallerAndOrders {
        app,
        _agent_a: agent_a,
        agent_b,
        a,
        b,
        etcd,
        _net: net,
    }
}

#[test]
fn maint_takes_an_instance_out_of_rotation_everywhere_and_back() {
    let net = Net::new();
    let etcd = Etcd::start(&net);
    let a = net.host("a");
    let b = net.host("b");
    let one = hostmesh_tests::Backend::http(&b, 18080, "one\n");
    let _two = hostmesh_tests::Backend::http(&b, 18081, "two\n");
    let mut agent_a = Agent::start(&a, &etcd, AgentOpts::new());
    let mut agent_b = Agent::start(
        &b,
        &etcd,
        AgentOpts::new()
            // Reachable from host a, to check that only loopback may switch maintenance.
            .set_str("admin", "listen", "0.0.0.0:9190")
            .service("orders-1", &orders_at(18080))
            .service("orders-2", &orders_at(18081)),
    );
    agent_a.wait_ready(Duration::from_secs(15));
    agent_b.wait_ready(Duration::from_secs(15));
    let url = "http://orders.mesh:8080/";
    hostmesh_tests::wait_until(Duration::from_secs(10), "both instances serve", || {
        let seen = bodies(&a, url, 20);
        seen.iter().any(|s| s == "one") && seen.iter().any(|s| s == "two")
    });

    // Only from the host itself: the admin port may face a remote Prometheus.
    let remote = a
        .curl_args(&[
            "-X",
            "POST",
            &format!("http://{}:9190/maint/orders/on", b.addr()),
        ])
        .expect("b's admin answers");
    assert_eq!(remote.0, 403, "{remote:?}");

    let on = agent_b.run_cli(&["maint", "orders/orders-1", "on"]);
    assert!(on.status.success(), "{on:?}");
    assert!(String::from_utf8_lossy(&on.stdout).contains("orders-1"));
    hostmesh_tests::wait_until(Duration::from_secs(3), "orders-1 out of rotation", || {
        bodies(&a, url, 10).iter().all(|s| s == "two")
    });
    let before = one.requests().len();
    let seen = bodies(&a, url, 40);
    assert!(seen.iter().all(|s| s == "two"), "{seen:?}");
    assert_eq!(one.requests().len(), before, "a request reached orders-1");
    let endpoints = agent_a.run_cli(&["endpoints", "orders", "--json", "--etcd", &etcd.endpoint()]);
    let endpoints = String::from_utf8_lossy(&endpoints.stdout);
    assert!(endpoints.contains("maintenance"), "{endpoints}");

    let off = agent_b.run_cli(&["maint", "orders/orders-1", "off"]);
    assert!(off.status.success(), "{off:?}");
    // The issue bounds only the way out (3 s); back in rotation is checked with room for a
    // loaded CI machine.
    hostmesh_tests::wait_until(Duration::from_secs(10), "orders-1 back", || {
        bodies(&a, url, 6).iter().any(|s| s == "one")
    });

    let unknown = agent_b.run_cli(&["maint", "orders/nope", "on"]);
    assert_eq!(unknown.status.code(), Some(1), "{unknown:?}");
    let bad = agent_b.run_cli(&["maint", "Orders", "on"]);
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
}

#[test]
fn sigterm_under_load_of_slow_requests_fails_none_and_exits_within_drain() {
    let net = Net::new();
    let etcd = Etcd::start(&net);
    let a = net.host("a");
    let b = net.host("b");
    let c = net.host("c");
    let app_b = hostmesh_tests::Backend::http(&b, 18080, "b\n");
    let app_c = hostmesh_tests::Backend::http(&c, 18080, "c\n");
    let mut agent_a = Agent::start(&a, &etcd, AgentOpts::new());
    let mut agent_b = Agent::start(
        &b,
        &etcd,
        AgentOpts::new()
            .drain("5s")
            .service("orders-1", &orders_at(18080)),
    );
    let mut agent_c = Agent::start(
        &c,
        &etcd,
        AgentOpts::new().service("orders-2", &orders_at(18080)),
    );
    for agent in [&mut agent_a, &mut agent_b, &mut agent_c] {
        agent.wait_ready(Duration::from_secs(15));
    }
    let url = "http://orders.mesh:8080/";
    hostmesh_tests::wait_until(Duration::from_secs(10), "both instances serve", || {
        let seen = bodies(&a, url, 20);
        seen.iter().any(|s| s == "b") && seen.iter().any(|s| s == "c")
    });
    app_b.set_delay(Duration::from_millis(1500));
    app_c.set_delay(Duration::from_millis(1500));

    // 8 connections, 48 requests of 1.5 s each: about 9 s of steady load.
    let a2 = a.clone();
    let load = std::thread::spawn(move || crate::resilience::statuses(&a2, &[], url, 48, 8));
    hostmesh_tests::wait_until(Duration::from_secs(5), "b busy", || {
        app_b.request_count() >= 2
    });
    let stopped = std::time::Instant::now();
    agent_b.signal(Signal::Term);
    let status = agent_b
        .wait_exit(Duration::from_secs(9))
        .expect("b exits within its drain and a margin");
    let took = stopped.elapsed();
    assert_eq!(status.code(), Some(0), "{}", agent_b.log_tail(20));
    assert!(took < Duration::from_secs(7), "exit took {took:?}");

    let results = load.join().expect("load");
    assert_eq!(results.len(), 48, "{results:?}");
    let failed: Vec<_> = results.iter().filter(|(code, _)| *code != 200).collect();
    assert!(failed.is_empty(), "{} failed: {failed:?}", failed.len());
}

/// The value of the series `name{labels}` in a Prometheus text exposition, if present.
pub(crate) fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

#[test]
fn ten_sighups_under_load_one_broken_fail_no_request_and_keep_the_old_definitions() {
    let m = caller_and_orders(|o| o);
    let (a, agent_b, etcd, url) = (&m.a, &m.agent_b, &m.etcd, ORDERS_URL);
    let a2 = a.clone();
    let load = std::thread::spawn(move || crate::resilience::statuses(&a2, &[], url, 1500, 4));
    let reloads = |result: &str| {
        metric(
            &agent_b.metrics(),
            &format!("hostmesh_config_reloads_total{{result=\"{result}\"}}"),
        )
        .unwrap_or(-1.0)
    };
    for i in 1..=10u32 {
        if i == 5 {
            agent_b.write_service("broken", "name = \"Not A Name\"\nport = \"x\"\n");
        } else {
            // A real change each time: the weight of the one instance.
            agent_b.write_service(
                "orders-1",
                &format!("{}weight = {}\n", orders_at(18080), 100 + i),
            );
        }
        agent_b.signal(Signal::Hup);
        let (ok, rejected) = if i < 5 { (i, 0) } else { (i - 1, 1) };
        hostmesh_tests::wait_until(
            Duration::from_secs(5),
            &format!("reload {i} counted"),
            || reloads("ok") == f64::from(ok) && reloads("rejected") == f64::from(rejected),
        );
        if i == 5 {
            assert!(
                agent_b.log().contains("reload rejected"),
                "the problems are logged"
            );
            // The old definitions are still served and registered.
            assert_eq!(bodies(a, url, 3), ["b", "b", "b"]);
            agent_b.remove_service("broken");
        }
    }
    let results = load.join().expect("load");
    assert_eq!(results.len(), 1500);
    let failed: Vec<_> = results.iter().filter(|(code, _)| *code != 200).collect();
    assert!(failed.is_empty(), "{} failed: {failed:?}", failed.len());
    // The last good definition is what etcd has.
    let stored = etcd.get("/hostmesh/v1/hosts/b/instances/orders/orders-1");
    assert!(
        stored
            .as_deref()
            .is_some_and(|v| v.contains("\"weight\":110")),
        "{stored:?}"
    );
}

/// The spans in the OTLP/HTTP requests a collector stand-in received.
pub(crate) fn exported_spans(collector: &hostmesh_tests::Backend) -> Vec<serde_json::Value> {
    collector
        .requests()
        .iter()
        .filter(|r| r["path"] == "/v1/traces")
        .flat_map(|r| {
            r["json"]["resourceSpans"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .flat_map(|rs| {
            rs["scopeSpans"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .flat_map(|ss| ss["spans"].as_array().cloned().unwrap_or_default())
        })
        .collect()
}

pub(crate) const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
pub(crate) const CLIENT_SPAN: &str = "00f067aa0ba902b7";

#[test]
fn traceparent_gets_a_span_per_hop_and_spans_reach_the_collector() {
    let m = caller_and_orders(|opts| {
        opts.set_str("tracing", "otlp_endpoint", "http://127.0.0.1:4318")
            .set("tracing", "sample_ratio", "0")
    });
    let (a, app) = (&m.a, &m.app);
    // A stand-in OTLP/HTTP collector next to each agent.
    let collector_a = hostmesh_tests::Backend::http_on(a, [127, 0, 0, 1].into(), 4318, "");
    let collector_b = hostmesh_tests::Backend::http_on(&m.b, [127, 0, 0, 1].into(), 4318, "");
    let url = "http://orders.mesh:8080/traced";

    let parent = format!("traceparent: 00-{TRACE_ID}-{CLIENT_SPAN}-01");
    let (code, _) = a
        .curl_args(&["-H", &parent, "-H", "tracestate: vendor=1", url])
        .expect("curl");
    assert_eq!(code, 200);
    let seen = app
        .requests()
        .into_iter()
        .rev()
        .find(|r| {
            r["headers"]["traceparent"]
                .as_str()
                .is_some_and(|t| t.contains(TRACE_ID))
        })
        .expect("the app got the trace");
    let at_app = seen["headers"]["traceparent"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let parts: Vec<&str> = at_app.split('-').collect();
    assert_eq!(parts.len(), 4, "{at_app}");
    assert_eq!(parts[1], TRACE_ID, "same trace");
    assert_ne!(parts[2], CLIENT_SPAN, "a new parent span");
    assert_eq!(parts[3], "01", "still sampled");
    assert_eq!(seen["headers"]["tracestate"], "vendor=1");

    // One client span on a (child of curl's), one server span on b (child of a's), the app's
    // parent being b's span.
    let spans = hostmesh_tests::wait_for(Duration::from_secs(5), "spans exported", || {
        let on_a = exported_spans(&collector_a);
        let on_b = exported_spans(&collector_b);
        let find =
            |spans: &[serde_json::Value]| spans.iter().find(|s| s["traceId"] == TRACE_ID).cloned();
        Some((find(&on_a)?, find(&on_b)?))
    });
    let (client, server) = spans;
    assert_eq!(client["kind"], 3);
    assert_eq!(client["parentSpanId"], CLIENT_SPAN);
    assert_eq!(server["kind"], 2);
    assert_eq!(server["parentSpanId"], client["spanId"]);
    assert_eq!(server["spanId"], parts[2]);

    // Not sampled (flag 00, ratio 0): propagated with a new parent, nothing exported.
    let unsampled = "00-11111111111111111111111111111111-2222222222222222-00";
    let (code, _) = a
        .curl_args(&["-H", &format!("traceparent: {unsampled}"), url])
        .expect("curl");
    assert_eq!(code, 200);
    let seen = app.requests().pop().expect("a request");
    let at_app = seen["headers"]["traceparent"].as_str().unwrap_or_default();
    assert!(
        at_app.starts_with("00-11111111111111111111111111111111-"),
        "{at_app}"
    );
    assert!(at_app.ends_with("-00"), "{at_app}");
    // A sampled request after it: once that one is exported, the unsampled one would have been
    // too (one queue per agent, exported in order).
    let marker = "33333333333333333333333333333333";
    let (code, _) = a
        .curl_args(&[
            "-H",
            &format!("traceparent: 00-{marker}-4444444444444444-01"),
            url,
        ])
        .expect("curl");
    assert_eq!(code, 200);
    hostmesh_tests::wait_until(Duration::from_secs(5), "the marker trace exported", || {
        [&collector_a, &collector_b]
            .iter()
            .all(|c| exported_spans(c).iter().any(|s| s["traceId"] == marker))
    });
    assert!(
        !exported_spans(&collector_a)
            .iter()
            .chain(exported_spans(&collector_b).iter())
            .any(|s| s["traceId"] == "11111111111111111111111111111111"),
        "an unsampled trace was exported"
    );
}

#[test]
fn without_an_otlp_endpoint_traceparent_passes_untouched() {
    let m = caller_and_orders(|o| o);
    let (a, app, url) = (&m.a, &m.app, ORDERS_URL);
    let value = format!("00-{TRACE_ID}-{CLIENT_SPAN}-01");
    let (code, _) = a
        .curl_args(&["-H", &format!("traceparent: {value}"), url])
        .expect("curl");
    assert_eq!(code, 200);
    let seen = app.requests().pop().expect("a request");
    assert_eq!(seen["headers"]["traceparent"], value.as_str());
}
