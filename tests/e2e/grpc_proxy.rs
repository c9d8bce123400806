//! Agents behind etcd's own gRPC proxy (`etcd grpc-proxy start`), as fleets deploy them: the
//! proxy answers lease keep-alives on its own clock and drops watch progress requests without a
//! word. The agents must keep their leases and their one catalog watch all the same.

use std::time::{Duration, Instant};

use hostmesh_tests::{
    Agent, AgentOpts, Backend, Etcd, GrpcProxy, Host, Net, PROXY_PORT, Signal, toml_str, wait_until,
};

use crate::proxy::agent;

const ORDERS: &str = "name = \"orders\"\nport = 8080\ntarget = \"127.0.0.1:18080\"\n";

/// Short, so that the windows below span several TTLs.
const LEASE_TTL: &str = "4s";
/// Three TTLs: a keep-alive every third of one, and a watch the old silence rule gave up on
/// every 4 s.
const STEADY: Duration = Duration::from_secs(12);

/// Client `a` and `orders` on `b`, both agents talking to etcd only through `proxies`, with a
/// short lease. Fields drop in order: agents and the app before the caller's etcd and network.
struct Mesh {
    a: Host,
    agents: [Agent; 2],
    _app: Backend,
}

impl Mesh {
    /// Starts both agents and returns once `a` reaches `orders`.
    fn start(net: &Net, etcd: &Etcd, proxies: &[&GrpcProxy]) -> Mesh {
        let endpoints: Vec<String> = proxies.iter().map(|p| toml_str(p.endpoint())).collect();
        let endpoints = format!("[{}]", endpoints.join(", "));
        let opts = || {
            AgentOpts::new()
                .set("etcd", "endpoints", &endpoints)
                .lease_ttl(LEASE_TTL)
        };
        let a = net.host("a");
        let b = net.host("b");
        let app = Backend::http(&b, 18080, "orders\n");
        let agent_a = agent(&a, etcd, opts());
        let agent_b = agent(&b, etcd, opts().service("orders-1", ORDERS));
        wait_until(Duration::from_secs(10), "a reaches orders", || {
            a.curl("http://orders.mesh:8080/")
                .is_ok_and(|(code, _)| code == 200)
        });
        Mesh {
            a,
            agents: [agent_a, agent_b],
            _app: app,
        }
    }

    /// Watches both agents' logs for `window`, failing at the first lost lease.
    fn keep_leases_for(&self, window: Duration, while_what: &str) {
        let started = Instant::now();
        while started.elapsed() < window {
            for agent in &self.agents {
                let log = agent.log();
                assert!(
                    !log.contains("lease lost"),
                    "{} lost its lease {while_what}:\n{log}",
                    agent.host().name()
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Adds `service` on `b` (file + SIGHUP) and waits until `a` reaches it: the watch carries
    /// news.
    fn add_and_reach(&self, service: &str, port: u16, while_what: &str) {
        let def = format!("name = \"{service}\"\nport = {port}\ntarget = \"127.0.0.1:18080\"\n");
        self.agents[1].write_service(&format!("{service}-1"), &def);
        self.agents[1].signal(Signal::Hup);
        let url = format!("http://{service}.mesh:{port}/");
        wait_until(
            Duration::from_secs(10),
            &format!("a reaches {service} {while_what}"),
            || self.a.curl(&url).is_ok_and(|(code, _)| code == 200),
        );
    }
}

#[test]
fn agents_behind_etcds_grpc_proxy_keep_their_leases_and_their_watch() {
    let net = Net::new();
    let etcd = Etcd::start(&net);
    let proxy = GrpcProxy::start(&etcd);
    let m = Mesh::start(&net, &etcd, &[&proxy]);

    m.keep_leases_for(STEADY, "behind the proxy");
    for agent in &m.agents {
        let name = agent.host().name();
        // The proxy answers a keep-alive when its own comes back, on its own clock (up to a
        // third of the TTL plus 500 ms later): a beat waits for that, and none fails.
        let failures = agent.sample("hostmesh_lease_keepalive_failures_total");
        assert_eq!(
            failures, 0.0,
            "{name}: {failures} failed keep-alives in {STEADY:?}"
        );
        assert_eq!(agent.sample("hostmesh_lease_losses_total"), 0.0, "{name}");
        let restarts = agent.sample("hostmesh_etcd_watch_restarts_total");
        assert_eq!(
            restarts,
            0.0,
            "{name}'s catalog watch restarted:\n{}",
            agent.log()
        );
    }

    m.add_and_reach("billing", 8081, "behind the proxy");
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
    let started: Vec<&GrpcProxy> = proxies.iter().flatten().collect();
    let m = Mesh::start(&net, &etcd, &started);

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
        for agent in &m.agents {
            wait_until(
                Duration::from_secs(5),
                &format!("{} stops using proxy {dead}", agent.host().name()),
                || {
                    agent
                        .log()
                        .lines()
                        .any(|l| l.contains("does not accept connections") && l.contains(&gone))
                },
            );
        }
        // Past a TTL with one proxy: the leases live on through the other, and news arrives.
        let down = format!("with proxy {dead} down");
        m.keep_leases_for(Duration::from_secs(6), &down);
        m.add_and_reach(service, port, &down);
    }
}
