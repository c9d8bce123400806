//! The metrics operators alert on: counts that agree across hosts, every documented name present, and
//! an exposition a real Prometheus parser accepts.

use std::time::Duration;

use hostmesh_tests::{Agent, AgentOpts, Backend, Etcd, Net, wait_for};

pub(crate) type Sample = (String, serde_json::Value, f64);

/// An OpenMetrics exposition parsed by the Prometheus project's own parser (python
/// `prometheus_client`): the metric family names (counters without `_total`, as OpenMetrics
/// names them) and every sample `(name, labels, value)`. Panics with the parser's complaint.
fn parse_families(text: &str) -> (Vec<String>, Vec<Sample>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("metrics.txt");
    std::fs::write(&file, text).expect("write");
    let script = "import json,sys\n\
        from prometheus_client.openmetrics.parser import text_string_to_metric_families as p\n\
        fs=list(p(open(sys.argv[1]).read()))\n\
        print(json.dumps([[f.name for f in fs],[[s.name,s.labels,s.value] for f in fs for s in f.samples]]))";
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(&file)
        .output()
        .expect("python3 runs (CI installs prometheus_client)");
    assert!(
        out.status.success(),
        "the OpenMetrics parser refused the exposition: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<(Vec<String>, Vec<Sample>)>(&out.stdout).expect("parser output")
}

pub(crate) fn parse(text: &str) -> Vec<Sample> {
    parse_families(text).1
}

/// The sum of the samples named `name` whose labels include all of `labels`.
pub(crate) fn sum(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|(n, l, _)| n == name && labels.iter().all(|(k, v)| l[*k] == *v))
        .map(|(_, _, v)| v)
        .sum()
}

#[test]
fn a_thousand_requests_are_counted_alike_on_both_agents_and_every_documented_metric_exists() {
    let net = Net::new();
    let etcd = Etcd::start(&net);
    let a = net.host("a");
    let b = net.host("b");
    let _app = Backend::http(&b, 18080, "b\n");
    let mut agent_a = Agent::start(&a, &etcd, AgentOpts::new());
    let mut agent_b = Agent::start(
        &b,
        &etcd,
        AgentOpts::new()
            .service(
                "orders-1",
                "name = \"orders\"\nport = 8080\ntarget = \"127.0.0.1:18080\"\n",
            )
            // The same app as an opaque TCP service, for the TCP metrics.
            .service(
                "plain-1",
                "name = \"plain\"\nport = 8081\ntarget = \"127.0.0.1:18080\"\nprotocol = \"tcp\"\n",
            )
            // Never called: its instance counts are b's to show, not a's.
            .service(
                "idle-1",
                "name = \"idle\"\nport = 8082\ntarget = \"127.0.0.1:18080\"\n",
            ),
    );
    agent_a.wait_ready(Duration::from_secs(15));
    agent_b.wait_ready(Duration::from_secs(15));
    let url = "http://orders.mesh:8080/";
    hostmesh_tests::wait_until(Duration::from_secs(10), "orders serves", || {
        a.curl(url).is_ok_and(|(code, _)| code == 200)
    });
    let before_a = sum(
        &parse(&agent_a.metrics()),
        "hostmesh_requests_total",
        &[("direction", "outbound"), ("service", "orders")],
    );
    let before_b = sum(
        &parse(&agent_b.metrics()),
        "hostmesh_requests_total",
        &[("direction", "inbound"), ("service", "orders")],
    );

    hostmesh_tests::wait_until(Duration::from_secs(10), "plain serves over TCP", || {
        a.curl("http://plain.mesh:8081/")
            .is_ok_and(|(code, _)| code == 200)
    });
    let results = crate::resilience::statuses(&a, &[], url, 1000, 8);
    assert_eq!(results.len(), 1000);
    assert!(results.iter().all(|(code, _)| *code == 200));

    for (agent, direction, before) in [
        (&agent_a, "outbound", before_a),
        (&agent_b, "inbound", before_b),
    ] {
        let labels = [("direction", direction), ("service", "orders")];
        wait_for(
            Duration::from_secs(2),
            &format!("{direction} counts"),
            || {
                let samples = parse(&agent.metrics());
                let requests = sum(&samples, "hostmesh_requests_total", &labels) - before;
                let ok = sum(
                    &samples,
                    "hostmesh_requests_total",
                    &[
                        ("direction", direction),
                        ("service", "orders"),
                        ("code", "200"),
                    ],
                ) - before;
                let observed = sum(&samples, "hostmesh_request_duration_seconds_count", &labels);
                (requests == 1000.0 && ok == 1000.0 && observed == 1000.0 + before).then_some(())
            },
        );
    }

    // Instance counts for the services an agent calls or runs, not for the whole catalog.
    let passing = |agent: &Agent, service: &str| {
        sum(
            &parse(&agent.metrics()),
            "hostmesh_endpoints",
            &[("service", service), ("state", "passing")],
        )
    };
    assert_eq!(passing(&agent_a, "orders"), 1.0, "a calls orders");
    assert_eq!(passing(&agent_b, "idle"), 1.0, "b runs idle");
    assert!(
        !agent_a.metrics().contains("service=\"idle\""),
        "a neither calls nor runs idle:\n{}",
        agent_a.metrics()
    );

    // Families, not samples: a counter nothing has counted yet has no sample.
    let (families, _) = parse_families(&agent_a.metrics());
    for name in [
        "hostmesh_requests",
        "hostmesh_request_duration_seconds",
        "hostmesh_retries",
        "hostmesh_retry_budget_exhausted",
        "hostmesh_ejections",
        "hostmesh_endpoints",
        "hostmesh_tcp_connections",
        "hostmesh_dns_queries",
        "hostmesh_registry_connected",
        "hostmesh_catalog_staleness_seconds",
        "hostmesh_config_reloads",
    ] {
        assert!(
            families.iter().any(|n| n == name),
            "{name} missing from a's /metrics"
        );
    }
}
