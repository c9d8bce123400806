//! The status page (`GET /` on the admin endpoint) in headless Chromium against real agents: it
//! loads without console errors, lists the services and their traffic, shows an instance its
//! breaker ejected, and a new service, each within 3 s.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use hostmesh_tests::{Backend, Browser, Etcd, Net, Signal, wait_until};

use crate::resilience::{ORDERS, agent, route_set, statuses};
use hostmesh_tests::AgentOpts;

const URL: &str = "http://orders.mesh:8080/";

/// Where CI keeps the screenshot: `target/e2e-artifacts/` of the workspace.
fn artifact(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../target/e2e-artifacts")
        .join(name)
}

#[test]
fn the_status_page_shows_services_traffic_ejections_and_new_services() {
    let net = Net::new();
    let etcd = Etcd::start(&net);
    let (a, b, c) = (net.host("a"), net.host("b"), net.host("c"));
    let mut app_b = Backend::http(&b, 18080, "b\n");
    let _app_c = Backend::http(&c, 18080, "c\n");
    let agent_a = agent(&a, &etcd, AgentOpts::new());
    let _agent_b = agent(&b, &etcd, AgentOpts::new().service("orders-1", ORDERS));
    let agent_c = agent(&c, &etcd, AgentOpts::new().service("orders-1", ORDERS));
    // A long ejection, so that the page has time to show it.
    let policy =
        "[breaker]\nconsecutive_failures = 3\nbase_ejection = \"60s\"\nmax_ejection = \"60s\"\n";
    assert!(
        route_set(&agent_a, &etcd, "orders", policy)
            .status
            .success()
    );
    wait_until(Duration::from_secs(10), "both instances serve", || {
        let seen = statuses(&a, &[], URL, 20, 4);
        seen.iter().any(|(_, b)| b == "b") && seen.iter().any(|(_, b)| b == "c")
    });

    let mut page = Browser::open(&a, &format!("http://{}/", agent_a.admin_addr()));
    page.wait_for_text(Duration::from_secs(15), "the services", |t| {
        t.contains("orders") && t.contains("b/orders-1") && t.contains("c/orders-1")
    });
    // Traffic while the page is open: it shows the rate and the answers.
    statuses(&a, &[], URL, 200, 4);
    page.wait_for_text(Duration::from_secs(10), "orders' traffic", |t| {
        t.lines()
            .any(|l| l.starts_with("orders\toutbound") && l.contains("200×"))
    });
    page.screenshot(&artifact("status-page.png"));

    // b's app dies; GETs fail over to c until b's breaker ejects it.
    app_b.kill();
    let ejected = |s: &serde_json::Value| {
        s["services"]["orders"]["endpoints"]
            .as_array()
            .is_some_and(|e| {
                e.iter()
                    .any(|e| e["host"] == "b" && e["breaker"] == "ejected")
            })
    };
    wait_until(Duration::from_secs(20), "b ejected", || {
        statuses(&a, &[], URL, 10, 1);
        ejected(&agent_a.status())
    });
    let seen_at = Instant::now();
    let took = page.wait_for_text(Duration::from_secs(10), "b ejected", |t| {
        t.lines()
            .any(|l| l.contains("b/orders-1") && l.contains("ejected"))
    });
    let since = seen_at.elapsed();
    assert!(
        since <= Duration::from_secs(3),
        "the page showed the ejection {since:?} after /status did ({took:?} of polling)"
    );

    // A new service on c: on the page within 3 s of reaching a's catalog.
    agent_c.write_service(
        "billing-1",
        "name = \"billing\"\nport = 9000\ntarget = \"127.0.0.1:19000\"\n",
    );
    agent_c.signal(Signal::Hup);
    wait_until(Duration::from_secs(10), "billing in a's catalog", || {
        agent_a.status()["services"]["billing"].is_object()
    });
    let seen_at = Instant::now();
    page.wait_for_text(Duration::from_secs(10), "billing", |t| {
        t.lines().any(|l| l.starts_with("billing"))
    });
    let since = seen_at.elapsed();
    assert!(
        since <= Duration::from_secs(3),
        "the page showed the new service {since:?} after /status did"
    );

    let errors = page.errors();
    assert!(errors.is_empty(), "the page logged errors: {errors:#?}");
    page.screenshot(&artifact("status-page-ejected.png"));
}
