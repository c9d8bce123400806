//! Same-host instances that fail: the agent's own answers, retries where safe, never twice where
//! not.

use std::net::SocketAddr;
use std::time::Duration;

use hostmesh_tests::{
    Agent, AgentOpts, Backend, Etcd, Host, Net, RawConn, Signal, wait_for, wait_until,
};

use super::{assert_agent_answer, assert_lean, get, post};
use crate::hardening::vip;
use crate::metrics::{parse, sum};
use crate::proxy::agent;
use crate::resilience::{ORDERS, statuses};

/// A second instance of `orders` on the same host.
const ORDERS_2: &str = "name = \"orders\"\nport = 8080\ntarget = \"127.0.0.1:18081\"\n";

#[test]
fn an_instance_not_listening_is_502_upstream_unreachable_and_none_passing_is_503() {
    let net = Net::new();
    let etcd = Etcd::start(&net);
    let a = net.host("a");
    // Registered, no check, nothing listening at the target: every connect is refused.
    let agent_a = agent(&a, &etcd, AgentOpts::new().service("orders-1", ORDERS));
    let ip = wait_for(Duration::from_secs(10), "orders' VIP", || {
        agent_a.service_vip("orders")
    });
    let vip = SocketAddr::new(ip.into(), 8080);
    // Once the route is in place, every answer is the agent's; the connection stays usable.
    let answers = |status: u16| {
        wait_for(
            Duration::from_secs(10),
            &format!("{status} from the agent"),
            || {
                a.in_ns(|| {
                    let mut c = RawConn::try_connect(vip).ok()?;
                    c.send(&get("/", ""));
                    let first = c.try_response(false).ok()?;
                    (first.status == status).then_some(())?;
                    Some((first, c.request(&get("/", ""))))
                })
            },
        )
    };
    let (first, second) = answers(502);
    for r in [&first, &second] {
        assert_agent_answer(r, 502, "upstream-unreachable");
    }

    // The only instance fails its check: no endpoints.
    agent_a.write_service(
        "orders-1",
        &format!("{ORDERS}[check]\ntcp = true\ninterval = \"1s\"\n"),
    );
    agent_a.signal(Signal::Hup);
    let (first, second) = answers(503);
    for r in [&first, &second] {
        assert_agent_answer(r, 503, "no-endpoints");
    }
}

/// Host `a` with two instances of `orders` on it: the app at 18080 and whatever is (or is not)
/// at 18081. Returns once the agent has both.
fn two_local_instances(net: &Net, etcd: &Etcd) -> (Host, Agent) {
    let a = net.host("a");
    let agent_a = agent(
        &a,
        etcd,
        AgentOpts::new()
            .service("orders-1", ORDERS)
            .service("orders-2", ORDERS_2),
    );
    wait_until(
        Duration::from_secs(10),
        "both instances in the route",
        || {
            agent_a.status()["services"]["orders"]["endpoints"]
                .as_array()
                .is_some_and(|e| e.len() == 2)
        },
    );
    (a, agent_a)
}

#[test]
fn an_instance_refusing_connections_beside_a_good_one_costs_no_request() {
    let net = Net::new();
    let etcd = Etcd::start(&net);
    let (a, agent_a) = two_local_instances(&net, &etcd);
    let _app = Backend::http(&a, 18080, "ok\n");
    // Nothing listens at 18081. Every instance never tried is tried first, so it is.
    let url = "http://orders.mesh:8080/";
    let gets = statuses(&a, &[], url, 100, 4);
    assert_eq!(gets.len(), 100);
    assert!(gets.iter().all(|(c, _)| *c == 200), "{gets:?}");
    let posts = statuses(&a, &["-X", "POST", "--data", "order=1"], url, 10, 1);
    assert!(
        posts.iter().all(|(c, _)| *c == 200) && posts.len() == 10,
        "{posts:?}"
    );
    let retried = sum(
        &parse(&agent_a.metrics()),
        "hostmesh_retries_total",
        &[("service", "orders"), ("reason", "never-reached")],
    );
    assert!(retried >= 1.0, "the refusing instance was never tried");
    // The same over one raw connection: the lean path answered.
    let vip = SocketAddr::new(agent_a.service_vip("orders").expect("a VIP").into(), 8080);
    let rs = a.in_ns(|| {
        let mut c = RawConn::connect(vip);
        (0..20)
            .map(|_| c.request(&get("/", "")))
            .collect::<Vec<_>>()
    });
    for r in &rs {
        assert_eq!(r.status, 200, "{}", r.head);
        assert_lean(r, "a GET");
    }
}

#[test]
fn a_post_the_app_dropped_is_502_upstream_reset_and_never_sent_twice() {
    let net = Net::new();
    let etcd = Etcd::start(&net);
    let (a, agent_a) = two_local_instances(&net, &etcd);
    let apps = [
        Backend::http(&a, 18080, "ok\n"),
        Backend::http(&a, 18081, "ok\n"),
    ];
    let vip = vip(&agent_a, "orders", 8080);
    for app in &apps {
        app.set_hangup(true);
    }
    let pays = || -> usize {
        apps.iter()
            .map(|app| {
                app.requests()
                    .iter()
                    .filter(|r| r["path"] == "/pay")
                    .count()
            })
            .sum()
    };
    let send = |req: Vec<u8>| {
        a.in_ns(|| {
            let mut c = RawConn::connect(vip);
            c.request(&req)
        })
    };
    let r = send(post("/pay", b"order=1", ""));
    assert_agent_answer(&r, 502, "upstream-reset");
    assert_eq!(pays(), 1, "the POST reached exactly one app");

    // The client says it is safe: tried on the other instance too.
    let r = send(post("/pay", b"order=2", "x-hostmesh-retryable: true\r\n"));
    assert_eq!(r.status, 502, "{}", r.head);
    assert_eq!(pays(), 3, "the retryable POST reached both apps");
    for app in &apps {
        app.set_hangup(false);
    }
    let r = send(post("/pay", b"order=3", ""));
    assert_eq!(r.status, 200, "{}", r.head);
    assert_lean(&r, "POST /pay");
    assert_eq!(pays(), 4);
}
