//! Agents behind etcd's own gRPC proxy (`etcd grpc-proxy start`), as fleets deploy them: the
//! proxy answers lease keep-alives on its own clock and drops watch progress requests without a
//! word. The agents must keep their leases and their one catalog watch all the same.

use std::time::{Duration, Instant};

use hostmesh_tests::{AgentOpts, Backend, Etcd, GrpcProxy, Net, PROXY_PORT, toml_str, wait_until};

use crate::proxy::agent;

const ORDERS: &str = "name = \"orders\"\nport = 8080\ntarget = \"127.0.0.1:18080\"\n";
const BILLING: &str = "name = \"billing\"\nport = 8081\ntarget = \"127.0.0.1:18080\"\n";

/// Short, so that the window below spans several TTLs.
const LEASE_TTL: &str = "4s";
/// Three TTLs: a keep-alive every third of one, and a watch the old silence rule gave up on
/// every 4 s.
const STEADY: Duration = Duration::from_secs(12);

#[test]
fn agents_behind_etcds_grpc_proxy_keep_their_leases_and_their_watch() {
    let net = Net::new();
    let etcd = Etcd::start(&net);
    let proxy = GrpcProxy::start(&etcd);
    let endpoints = format!("[{}]", toml_str(proxy.endpoint()));
    let opts = || {
        AgentOpts::new()
            .set("etcd", "endpoints", &endpoints)
            .lease_ttl(LEASE_TTL)
    };
    let a = net.host("a");
    let b = net.host("b");
    let _app = Backend::http(&b, 18080, "orders\n");
    let agent_a = agent(&a, &etcd, opts());
    let agent_b = agent(&b, &etcd, opts().service("orders-1", ORDERS));
    wait_until(Duration::from_secs(10), "a reaches orders", || {
        a.curl("http://orders.mesh:8080/")
            .is_ok_and(|(code, _)| code == 200)
    });

    let started = Instant::now();
    while started.elapsed() < STEADY {
        for agent in [&agent_a, &agent_b] {
            let log = agent.log();
            assert!(
                !log.contains("lease lost"),
                "{} lost its lease behind the proxy:\n{log}",
                agent.host().name()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    for agent in [&agent_a, &agent_b] {
        let name = agent.host().name();
        // The proxy answers a keep-alive when its own comes back, on its own clock: a beat may
        // miss one now and then, not (as before) every one.
        let failures = agent.sample("hostmesh_lease_keepalive_failures_total");
        assert!(
            failures <= 2.0,
            "{name}: {failures} failed keep-alives in {STEADY:?}"
        );
        let restarts = agent.sample("hostmesh_etcd_watch_restarts_total");
        assert_eq!(
            restarts,
            0.0,
            "{name}'s catalog watch restarted:\n{}",
            agent.log()
        );
    }

    // The watch carries news: a service added on b reaches a.
    agent_b.write_service("billing-1", BILLING);
    agent_b.signal(hostmesh_tests::Signal::Hup);
    wait_until(Duration::from_secs(10), "a reaches billing", || {
        a.curl("http://billing.mesh:8081/")
            .is_ok_and(|(code, _)| code == 200)
    });
    assert!(!proxy.log().contains("panic"), "{}", proxy.log());
}

/// Fleets run a proxy per rack or zone and give each agent more than one. Two proxies in front of
/// one etcd; each in turn is killed while the agents use both: no lease is lost and news still
/// reaches every agent through the other.
#[test]
fn agents_fail_over_between_grpc_proxies() {
    let net = Net::new();
    let etcd = Etcd::start(&net);
    let ports = [PROXY_PORT, PROXY_PORT + 1];
    let mut proxies = ports.map(|port| Some(GrpcProxy::start_on(&etcd, port)));
    let endpoints: Vec<String> = proxies
        .iter()
        .flatten()
        .map(|p| toml_str(p.endpoint()))
        .collect();
    let endpoints = format!("[{}]", endpoints.join(", "));
    let opts = || {
        AgentOpts::new()
            .set("etcd", "endpoints", &endpoints)
            .lease_ttl(LEASE_TTL)
    };
    let a = net.host("a");
    let b = net.host("b");
    let _app = Backend::http(&b, 18080, "orders\n");
    let agent_a = agent(&a, &etcd, opts());
    let agent_b = agent(&b, &etcd, opts().service("orders-1", ORDERS));
    wait_until(Duration::from_secs(10), "a reaches orders", || {
        a.curl("http://orders.mesh:8080/")
            .is_ok_and(|(code, _)| code == 200)
    });

    let news = [("billing", 8081), ("carts", 8082)];
    for (dead, (service, port)) in news.into_iter().enumerate() {
        // One proxy down (the other back up, after the first round).
        let alive = 1 - dead;
        if proxies[alive].is_none() {
            proxies[alive] = Some(GrpcProxy::start_on(&etcd, ports[alive]));
        }
        drop(proxies[dead].take());
        // Each agent takes the dead proxy out of its rotation (else every other request goes
        // there and fails).
        let gone = format!("endpoint=\"http://{}:{}\"", etcd.addr(), ports[dead]);
        for agent in [&agent_a, &agent_b] {
            wait_until(
                Duration::from_secs(5),
                &format!("{} stops using proxy {dead}", agent.host().name()),
                || {
                    let log = agent.log();
                    let taken_out = log
                        .lines()
                        .filter(|l| l.contains("does not accept connections") && l.contains(&gone));
                    taken_out.count() > 0
                },
            );
        }
        // Past a TTL with one proxy: the leases live on through the other.
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(6) {
            for agent in [&agent_a, &agent_b] {
                assert!(
                    !agent.log().contains("lease lost"),
                    "{} lost its lease with proxy {dead} down:\n{}",
                    agent.host().name(),
                    agent.log()
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        // And a change made now reaches a.
        let def = format!("name = \"{service}\"\nport = {port}\ntarget = \"127.0.0.1:18080\"\n");
        agent_b.write_service(&format!("{service}-1"), &def);
        agent_b.signal(hostmesh_tests::Signal::Hup);
        let url = format!("http://{service}.mesh:{port}/");
        wait_until(
            Duration::from_secs(10),
            &format!("a reaches {service} with proxy {dead} down"),
            || a.curl(&url).is_ok_and(|(code, _)| code == 200),
        );
    }
}
