//! Zone-aware routing (`locality = "zone"` in a route policy): requests stay in the caller's
//! zone, move to another zone when it has nothing eligible left and come back, and a zone with
//! few instances for many callers sends a share of its requests elsewhere.

use std::time::Duration;

use hostmesh_tests::{Agent, AgentOpts, Backend, Etcd, Host, Net, wait_until};

use crate::resilience::{ORDERS, agent, route_set, statuses};

const URL: &str = "http://orders.mesh:8080/";

/// How many requests backend `name` answered with 200.
fn served_by(results: &[(u16, String)], name: &str) -> usize {
    results
        .iter()
        .filter(|(c, b)| *c == 200 && b == name)
        .count()
}

/// The answers that were not 200.
fn failures(results: &[(u16, String)]) -> Vec<&(u16, String)> {
    results.iter().filter(|(c, _)| *c != 200).collect()
}

/// An agent in `zone` with `orders` served by an app on its host (`name` in x-backend), or
/// with no service when `name` is `None`.
fn zoned_agent(host: &Host, etcd: &Etcd, zone: &str, serves: bool) -> Agent {
    let mut opts = AgentOpts::new().zone(zone);
    if serves {
        opts = opts.service("orders-1", ORDERS);
    }
    agent(host, etcd, opts)
}

fn set_zone_locality(agent: &Agent, etcd: &Etcd) {
    let out = route_set(agent, etcd, "orders", "locality = \"zone\"\n");
    assert!(
        out.status.success(),
        "route set: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn requests_stay_in_the_callers_zone_leave_it_when_nothing_is_left_and_come_back() {
    let net = Net::new();
    let etcd = Etcd::start(&net);
    let (a, b, c) = (net.host("a"), net.host("b"), net.host("c"));
    let mut app_b = Backend::http(&b, 18080, "b\n");
    let _app_c = Backend::http(&c, 18080, "c\n");
    let agent_a = zoned_agent(&a, &etcd, "z1", false);
    let _agent_b = zoned_agent(&b, &etcd, "z1", true);
    let _agent_c = zoned_agent(&c, &etcd, "z2", true);
    wait_until(Duration::from_secs(10), "both zones serve", || {
        let seen = statuses(&a, &[], URL, 20, 4);
        served_by(&seen, "b") > 0 && served_by(&seen, "c") > 0
    });

    set_zone_locality(&agent_a, &etcd);
    // The policy reaches a's route table within about a second; then every request stays.
    wait_until(Duration::from_secs(10), "requests stay in z1", || {
        served_by(&statuses(&a, &[], URL, 20, 1), "b") == 20
    });
    let results = statuses(&a, &[], URL, 200, 4);
    assert!(failures(&results).is_empty(), "{:?}", failures(&results));
    let in_zone = served_by(&results, "b");
    assert!(
        in_zone >= 190,
        "{in_zone} of 200 requests stayed in z1; at least 95 % must"
    );
    let explain = agent_a.run_cli(&["explain", URL]);
    let text = String::from_utf8_lossy(&explain.stdout);
    assert!(
        text.contains("zones:     locality = \"zone\": this agent is in z1")
            && text.contains("picked in it")
            && text.contains("pick:      b/orders-1"),
        "{text}"
    );

    // b's app dies in the middle of a run of GETs: none fails, they move to z2.
    let a2 = a.clone();
    let load = std::thread::spawn(move || statuses(&a2, &[], URL, 600, 4));
    wait_until(Duration::from_secs(10), "the load reaches b", || {
        app_b.request_count() > 20
    });
    app_b.kill();
    let results = load.join().expect("load");
    assert_eq!(results.len(), 600);
    assert!(
        failures(&results).is_empty(),
        "GETs failed when z1's instance died: {:?}",
        failures(&results)
    );
    let after = statuses(&a, &[], URL, 50, 4);
    assert!(failures(&after).is_empty(), "{:?}", failures(&after));
    assert_eq!(served_by(&after, "c"), 50, "z1 has nothing left: z2 serves");
    let text = String::from_utf8_lossy(&agent_a.run_cli(&["explain", URL]).stdout).into_owned();
    assert!(
        text.contains("no eligible instance in it is left: another zone's"),
        "{text}"
    );

    // b comes back: once its breaker lets it in again, requests return to z1.
    let _app_b = Backend::http(&b, 18080, "b\n");
    wait_until(Duration::from_secs(90), "requests return to z1", || {
        served_by(&statuses(&a, &[], URL, 20, 1), "b") == 20
    });
    let same = agent_a.sample("hostmesh_zone_attempts_total{service=\"orders\",zone=\"same\"}");
    let other = agent_a.sample("hostmesh_zone_attempts_total{service=\"orders\",zone=\"other\"}");
    assert!(same >= 190.0 && other >= 50.0, "same {same}, other {other}");
}

#[test]
fn a_zone_with_one_instance_and_many_callers_is_not_flooded() {
    let net = Net::new();
    let etcd = Etcd::start(&net);
    // z1: five callers and b, the one instance there; z2: c, d and e.
    let callers: Vec<Host> = ["a", "w", "x", "y", "z"]
        .iter()
        .map(|h| net.host(h))
        .collect();
    let servers: Vec<Host> = ["b", "c", "d", "e"].iter().map(|h| net.host(h)).collect();
    let _apps: Vec<Backend> = servers
        .iter()
        .map(|h| Backend::http(h, 18080, &format!("{}\n", h.name())))
        .collect();
    let caller_agents: Vec<Agent> = callers
        .iter()
        .map(|h| zoned_agent(h, &etcd, "z1", false))
        .collect();
    let _server_agents: Vec<Agent> = servers
        .iter()
        .zip(["z1", "z2", "z2", "z2"])
        .map(|(h, zone)| zoned_agent(h, &etcd, zone, true))
        .collect();
    let a = &callers[0];
    wait_until(Duration::from_secs(10), "all four instances serve", || {
        let seen = statuses(a, &[], URL, 40, 4);
        ["b", "c", "d", "e"].iter().all(|n| served_by(&seen, n) > 0)
    });

    set_zone_locality(&caller_agents[0], &etcd);
    // z1 has 1 of the 4 instances and 6 of the 9 hosts: it keeps 2 × 0.25 / (6/9) = 75 % and
    // sends a quarter to z2, so b takes 1.5 times its fair share, not everything z1 calls.
    wait_until(Duration::from_secs(10), "the policy applies", || {
        let text = String::from_utf8_lossy(&caller_agents[0].run_cli(&["explain", URL]).stdout)
            .into_owned();
        text.contains("it keeps 75% of requests")
    });
    let results = statuses(a, &[], URL, 800, 4);
    assert!(failures(&results).is_empty(), "{:?}", failures(&results));
    let in_zone = served_by(&results, "b");
    // 600 expected; the bounds are 5 standard deviations (12 requests each) either side.
    assert!(
        (540..=660).contains(&in_zone),
        "{in_zone} of 800 requests went to z1's one instance; about 600 should"
    );
    // The rest went to z2. How it splits between c, d and e is latency-aware balancing's
    // business (P2C rarely picks the slowest of three), not this test's: it checks the total.
    let other_zone: usize = ["c", "d", "e"].iter().map(|n| served_by(&results, n)).sum();
    assert_eq!(
        other_zone + in_zone,
        800,
        "every request was served by b, c, d or e"
    );
}
