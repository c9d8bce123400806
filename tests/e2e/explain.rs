//! `hostmesh explain` and the breaker columns of `hostmesh endpoints`, against a real mesh: an
//! instance failing until its breaker ejects it is named as ejected (with the time left) and
//! never picked; a header rule is reported as matched only when the request carries it.

use std::process::Output;
use std::time::Duration;

use hostmesh_tests::wait_until;

use crate::resilience::{TwoInstances, route_set, statuses, two_instances};

/// Breakers quick to eject and slow to bring back (the test reads the ejection at leisure), and
/// one rule that only requests with `x-canary: 1` match.
const POLICY: &str = r#"
[breaker]
consecutive_failures = 2
base_ejection = "30s"
max_ejection = "60s"
[[rules]]
match = { headers = { "x-canary" = "1" } }
timeout = "700ms"
"#;

const URL: &str = "http://orders.mesh:8080/";

/// `hostmesh ARGS --config <a's config>` on host a.
fn cli(t: &TwoInstances, args: &[&str]) -> Output {
    let config = t.agent_a.config_path().to_string_lossy().into_owned();
    let mut all = args.to_vec();
    all.extend(["--config", &config]);
    t.agent_a.run_cli(&all)
}

fn explain_json(t: &TwoInstances, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["explain", URL, "--json"];
    args.extend_from_slice(extra);
    let out = cli(t, &args);
    assert!(
        out.status.success(),
        "explain failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("explain --json prints JSON")
}

fn candidate<'a>(report: &'a serde_json::Value, host: &str) -> &'a serde_json::Value {
    report["candidates"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["host"] == host))
        .unwrap_or_else(|| panic!("no candidate on {host} in {report:#}"))
}

#[test]
fn explain_names_the_ejected_instance_and_picks_the_passing_one() {
    let t = two_instances();
    let out = route_set(&t.agent_a, &t.etcd, "orders", POLICY);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until(Duration::from_secs(5), "the route policy applies", || {
        explain_json(&t, &["--header", "x-canary:1"])["rule"]["index"] == 0
    });

    // The rule matches only with its header; the deadline says where it comes from.
    let canary = explain_json(&t, &["--header", "X-Canary: 1"]);
    assert_eq!(canary["deadline"]["ms"], 700, "{canary:#}");
    assert_eq!(canary["deadline"]["source"], "rule-timeout");
    for plain in [
        explain_json(&t, &[]),
        explain_json(&t, &["--header", "x-canary:2"]),
    ] {
        assert!(plain["rule"].is_null(), "{plain:#}");
        assert_eq!(plain["deadline"]["source"], "request-timeout", "{plain:#}");
        assert_eq!(plain["service"], "orders");
        assert_eq!(plain["retry"]["max_attempts"], 3);
        assert!(
            plain["retry"]["budget_left"].as_u64().is_some(),
            "{plain:#}"
        );
    }
    let timeout = explain_json(&t, &["--header", "x-hostmesh-timeout:250ms"]);
    assert_eq!(timeout["deadline"]["ms"], 250, "{timeout:#}");
    assert_eq!(timeout["deadline"]["source"], "hostmesh-timeout-header");

    // b fails until its breaker ejects it.
    t.app_b.set_status(503);
    wait_until(Duration::from_secs(15), "b ejected by a's breaker", || {
        statuses(&t.a, &[], URL, 10, 2);
        candidate(&explain_json(&t, &[]), "b")["breaker"] == "ejected"
    });
    for _ in 0..5 {
        let report = explain_json(&t, &[]);
        let b = candidate(&report, "b");
        let left = b["ejected_for_ms"].as_u64().unwrap_or(0);
        assert!((1..=30_000).contains(&left), "{b:#}");
        assert!(
            b["excluded"].as_str().unwrap_or("").contains("ejected"),
            "{b:#}"
        );
        assert_eq!(b["health"], "passing", "{b:#}");
        let c = candidate(&report, "c");
        assert!(c["excluded"].is_null(), "{c:#}");
        assert_eq!(c["breaker"], "closed", "{c:#}");
        assert_eq!(report["pick"]["host"], "c", "{report:#}");
        assert!(
            report["outcome"]
                .as_str()
                .unwrap_or("")
                .contains("sent to c/"),
            "{report:#}"
        );
    }

    // The text report and the endpoints table show the same.
    let out = cli(&t, &["explain", "orders.mesh", "--header", "x-canary:1"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "rules[0] (of 1) matches x-canary: 1",
        "700ms from the matched rule's timeout",
        "ejected by its breaker",
        "pick:      c/orders-2",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    let out = cli(&t, &["endpoints", "orders"]);
    let table = String::from_utf8_lossy(&out.stdout);
    let b_row = table
        .lines()
        .find(|l| l.starts_with("b "))
        .unwrap_or_else(|| panic!("no row for b in:\n{table}"));
    // BREAKER, then LOCKED (`-`: no lockdown here) last.
    let cells: Vec<&str> = b_row.split_whitespace().collect();
    assert_eq!(cells[cells.len() - 3..][..1], ["ejected"], "{table}");
    assert!(
        cells[cells.len() - 2].ends_with('s'),
        "time left shown: {table}"
    );
    assert_eq!(cells.last(), Some(&"-"), "{table}");
    let c_row = table.lines().find(|l| l.starts_with("c ")).unwrap_or("");
    let cells: Vec<&str> = c_row.split_whitespace().collect();
    assert!(cells.ends_with(&["closed", "-"]), "{table}");

    // Looking changed nothing: c is still the only one taking traffic, b still ejected.
    let seen = statuses(&t.a, &[], URL, 20, 2);
    assert!(
        seen.iter()
            .all(|(code, backend)| *code == 200 && backend == "c"),
        "{seen:?}"
    );
    assert_eq!(candidate(&explain_json(&t, &[]), "b")["breaker"], "ejected");
}

#[test]
fn explain_refuses_unknown_names_and_bad_input_with_the_documented_exit_codes() {
    let t = two_instances();
    let code = |out: &Output| out.status.code();
    let stderr = |out: &Output| String::from_utf8_lossy(&out.stderr).into_owned();

    let out = cli(&t, &["explain", "nosuch.mesh:8080"]);
    assert_eq!(code(&out), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("nosuch"), "{}", stderr(&out));
    let out = cli(&t, &["explain", "orders.mesh:9999"]);
    assert_eq!(code(&out), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("port 9999"), "{}", stderr(&out));

    for bad in [
        vec!["explain", URL, "--header", "x-canary"],
        vec!["explain", "https://orders.mesh/"],
        vec!["explain", "orders.mesh:port"],
    ] {
        let out = cli(&t, &bad);
        assert_eq!(code(&out), Some(2), "{bad:?}: {}", stderr(&out));
        assert!(!stderr(&out).trim().is_empty(), "{bad:?} says why");
    }

    // A VIP and a bare name reach the same service.
    let by_name = explain_json(&t, &[]);
    let vip = format!("{}:8080", by_name["vip"].as_str().unwrap_or(""));
    let out = cli(&t, &["explain", &vip, "--json"]);
    let by_vip: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    assert_eq!(by_vip["service"], "orders", "{}", stderr(&out));
    let out = cli(&t, &["explain", "orders", "--json"]);
    let bare: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    assert_eq!(bare["port"], 8080, "{}", stderr(&out));

    // No agent answering: exit 1 and say so.
    let out = t
        .agent_a
        .run_cli(&["explain", URL, "--admin", "127.0.0.1:1"]);
    assert_eq!(code(&out), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no agent answers"),
        "{}",
        stderr(&out)
    );
}
