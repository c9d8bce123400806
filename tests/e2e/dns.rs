//! The DNS shim as apps use it: real resolvers (getent through the host's resolv.conf, dig)
//! inside network-namespace hosts whose `/etc/resolv.conf` points at the host's agent.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use hostmesh_tests::{
    Agent, AgentOpts, Dnsmasq, Etcd, Host, Net, Signal, toml_str, wait_for, wait_until,
};

const ORDERS_1: &str = "name = \"orders\"\nport = 8080\ntags = [\"v2\"]\n";
const ORDERS_2: &str = "name = \"orders\"\nport = 8081\ntags = [\"v1\"]\n";

fn agent(host: &Host, etcd: &Etcd, opts: AgentOpts) -> Agent {
    let mut a = Agent::start(host, etcd, opts);
    a.wait_ready(Duration::from_secs(15));
    a
}

/// The VIP etcd holds for a name.
fn vip(etcd: &Etcd, name: &str) -> String {
    wait_for(Duration::from_secs(5), &format!("vips/{name}"), || {
        etcd.get(&format!("/hostmesh/v1/vips/{name}"))
            .and_then(|v| serde_json::from_str::<String>(&v).ok())
    })
}

#[test]
fn mesh_names_resolve_for_real_clients() {
    let net = Net::new();
    let etcd = Etcd::start(&net);
    let a_host = net.host("a");
    let b_host = net.host("b");
    let _a = agent(&a_host, &etcd, AgentOpts::new());
    let _b = agent(
        &b_host,
        &etcd,
        AgentOpts::new()
            .service("orders-1", ORDERS_1)
            .service("orders-2", ORDERS_2),
    );
    let orders = vip(&etcd, "orders");
    let v2 = vip(&etcd, "v2.orders");
    assert_ne!(orders, v2, "a tag subset has its own VIP");

    // Through the host's resolver, as an unmodified app resolves.
    let line = wait_for(Duration::from_secs(5), "getent hosts orders.mesh", || {
        let out = a_host.run("getent", &["hosts", "orders.mesh"]);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    });
    assert_eq!(
        line.split_whitespace().collect::<Vec<_>>(),
        [orders.as_str(), "orders.mesh"]
    );

    let a = a_host.dig(&["orders.mesh"]);
    assert_eq!(a.status, "NOERROR", "{}", a.raw);
    assert!(a.has_flag("aa"), "{}", a.raw);
    assert_eq!(a.data("A"), std::slice::from_ref(&orders));
    assert_eq!(a.answer[0].ttl, 5, "the configured dns.ttl");
    // Case does not matter, and the answer keeps the question's case.
    let mixed = a_host.dig(&["OrDeRs.MeSh"]);
    assert_eq!(
        mixed.data("A"),
        std::slice::from_ref(&orders),
        "{}",
        mixed.raw
    );

    srv_has_both_ports(&a_host, "_orders._tcp.mesh", "orders.mesh.", &orders);

    assert_eq!(a_host.dig(&["v2.orders.mesh"]).data("A"), [v2]);
    let aaaa = a_host.dig(&["AAAA", "orders.mesh"]);
    assert_eq!(
        (aaaa.status.as_str(), aaaa.answer.len()),
        ("NOERROR", 0),
        "{}",
        aaaa.raw
    );

    let missing = a_host.dig(&["nosuch.mesh"]);
    assert_eq!(missing.status, "NXDOMAIN", "{}", missing.raw);
    assert!(
        missing.authority.iter().any(|r| r.rtype == "SOA"),
        "an SOA for negative caching:\n{}",
        missing.raw
    );
    assert_eq!(
        a_host.dig(&["v9.orders.mesh"]).status,
        "NXDOMAIN",
        "an unused tag"
    );

    // The same VIP on every host.
    assert_eq!(b_host.dig(&["orders.mesh"]).data("A"), [orders]);
}

#[test]
fn a_new_service_resolves_elsewhere_within_3s_and_a_removed_one_stops() {
    let net = Net::new();
    let etcd = Etcd::start(&net);
    let a_host = net.host("a");
    let _a = agent(&a_host, &etcd, AgentOpts::new());
    let b = agent(
        &net.host("b"),
        &etcd,
        AgentOpts::new().service("orders-1", ORDERS_1),
    );
    wait_until(Duration::from_secs(5), "orders resolves", || {
        a_host.dig(&["orders.mesh"]).status == "NOERROR"
    });

    b.write_service("billing-1", "name = \"billing\"\nport = 9000\n");
    b.signal(Signal::Hup);
    let added = Instant::now();
    wait_until(Duration::from_secs(3), "billing.mesh on A", || {
        a_host.dig(&["billing.mesh"]).data("A").len() == 1
    });
    let billing = a_host.dig(&["billing.mesh"]).data("A");
    eprintln!("billing resolved on A after {:?}", added.elapsed());

    b.remove_service("billing-1");
    b.signal(Signal::Hup);
    wait_until(Duration::from_secs(3), "billing.mesh NXDOMAIN on A", || {
        a_host.dig(&["billing.mesh"]).status == "NXDOMAIN"
    });
    // Its VIP stays reserved: back under the same address.
    b.write_service("billing-1", "name = \"billing\"\nport = 9000\n");
    b.signal(Signal::Hup);
    wait_until(
        Duration::from_secs(3),
        "billing.mesh back with its VIP",
        || a_host.dig(&["billing.mesh"]).data("A") == billing,
    );
}

#[test]
fn other_names_are_forwarded_upstream_with_tc_over_udp_and_whole_over_tcp() {
    let net = Net::new();
    let etcd = Etcd::start(&net);
    let upstream_host = net.host("upstream");
    let mut records = vec![("www.example.test", Ipv4Addr::new(192, 0, 2, 10))];
    for i in 0..100u8 {
        records.push(("big.example.test", Ipv4Addr::new(198, 51, 100, i)));
    }
    let upstream = Dnsmasq::start(&upstream_host, &records);
    let a_host = net.host("a");
    let _a = agent(
        &a_host,
        &etcd,
        AgentOpts::new().set(
            "dns",
            "upstream",
            &format!("[{}]", toml_str(&upstream.addr().to_string())),
        ),
    );
    let www = a_host.dig(&["www.example.test"]);
    assert_eq!(
        (www.status.as_str(), www.data("A")),
        ("NOERROR", vec!["192.0.2.10".to_owned()]),
        "{}",
        www.raw
    );
    let out = a_host.run("getent", &["hosts", "www.example.test"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("192.0.2.10"),
        "{out:?}"
    );
    assert_eq!(a_host.dig(&["nothing.example.test"]).status, "NXDOMAIN");

    // 100 A records do not fit 512 bytes: truncated over UDP, whole over TCP.
    let udp = a_host.dig(&["+notcp", "+ignore", "+noedns", "big.example.test"]);
    assert!(udp.has_flag("tc"), "{}", udp.raw);
    let tcp = a_host.dig(&["+tcp", "big.example.test"]);
    assert_eq!(tcp.data("A").len(), 100, "{}", tcp.raw);
    // A client that retries over TCP by itself gets everything.
    let auto = a_host.dig(&["big.example.test"]);
    assert_eq!(auto.data("A").len(), 100, "{}", auto.raw);
}

#[test]
fn with_no_upstream_other_names_are_refused() {
    let net = Net::new();
    let etcd = Etcd::start(&net);
    let a_host = net.host("a");
    let _a = agent(
        &a_host,
        &etcd,
        AgentOpts::new().set("dns", "upstream", "[]"),
    );
    assert_eq!(a_host.dig(&["www.example.test"]).status, "REFUSED");
}

#[test]
fn an_agent_that_never_saw_a_catalog_answers_servfail() {
    let net = Net::new();
    let etcd = Etcd::start(&net);
    let a_host = net.host("a");
    a_host.cut_from(etcd.addr());
    let a = Agent::start(&a_host, &etcd, AgentOpts::new());
    let answer = wait_for(Duration::from_secs(10), "the shim answers", || {
        let d = a_host.dig(&["orders.mesh"]);
        (!d.status.is_empty()).then_some(d)
    });
    assert_eq!(answer.status, "SERVFAIL", "{}", answer.raw);
    assert_eq!(a.admin_get("/ready").0, 503, "not ready without a catalog");
}

#[test]
fn consul_names_answer_the_mesh_vips_when_on_and_are_forwarded_when_off() {
    let net = Net::new();
    let etcd = Etcd::start(&net);
    // An upstream that has its own `orders.service.consul`, so that "forwarded" is visible.
    let upstream_host = net.host("upstream");
    let elsewhere = Ipv4Addr::new(192, 0, 2, 77);
    let upstream = Dnsmasq::start(&upstream_host, &[("orders.service.consul", elsewhere)]);
    let to_upstream = format!("[{}]", toml_str(&upstream.addr().to_string()));
    let a_host = net.host("a");
    let b_host = net.host("b");
    let c_host = net.host("c");
    let consul_on = || {
        AgentOpts::new()
            .set("dns", "consul", "true")
            .set("dns", "upstream", &to_upstream)
    };
    let _a = agent(&a_host, &etcd, consul_on());
    let _b = agent(
        &b_host,
        &etcd,
        consul_on()
            .service("orders-1", ORDERS_1)
            .service("orders-2", ORDERS_2),
    );
    // Off by default.
    let _c = agent(
        &c_host,
        &etcd,
        AgentOpts::new().set("dns", "upstream", &to_upstream),
    );
    let orders = vip(&etcd, "orders");
    let v2 = vip(&etcd, "v2.orders");

    let a = wait_for(Duration::from_secs(5), "orders.service.consul on a", || {
        let d = a_host.dig(&["orders.service.consul"]);
        (d.data("A") == std::slice::from_ref(&orders)).then_some(d)
    });
    assert_eq!(a.status, "NOERROR", "{}", a.raw);
    assert!(a.has_flag("aa"), "{}", a.raw);
    assert_eq!(a.answer[0].ttl, 5, "{}", a.raw);
    // Through the host's resolver, as an unmodified app resolves.
    let out = a_host.run("getent", &["hosts", "orders.service.consul"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with(&orders),
        "{out:?}"
    );
    // Any datacenter label is this mesh; case does not matter.
    let dc = a_host.dig(&["OrDeRs.service.dc1.consul"]);
    assert_eq!(dc.data("A"), std::slice::from_ref(&orders), "{}", dc.raw);
    assert_eq!(
        a_host.dig(&["v2.orders.service.consul"]).data("A"),
        std::slice::from_ref(&v2)
    );

    srv_has_both_ports(
        &a_host,
        "_orders._tcp.service.consul",
        "orders.service.consul.",
        &orders,
    );
    // A tag in RFC 2782's proto place: the instances carrying it.
    let tagged = a_host.dig(&["SRV", "_orders._v2.service.consul"]);
    assert_eq!(
        tagged.data("SRV"),
        ["0 1 8080 v2.orders.service.consul."],
        "{}",
        tagged.raw
    );

    // A host's advertised address.
    let node = a_host.dig(&["b.node.consul"]);
    assert_eq!(node.data("A"), [b_host.addr().to_string()], "{}", node.raw);
    assert!(node.has_flag("aa"), "{}", node.raw);

    let missing = a_host.dig(&["nosuch.service.consul"]);
    assert_eq!(missing.status, "NXDOMAIN", "{}", missing.raw);
    assert!(
        missing
            .authority
            .iter()
            .any(|r| r.rtype == "SOA" && r.name == "consul."),
        "consul.'s SOA for negative caching:\n{}",
        missing.raw
    );
    let aaaa = a_host.dig(&["AAAA", "orders.service.consul"]);
    assert_eq!(
        (aaaa.status.as_str(), aaaa.answer.len()),
        ("NOERROR", 0),
        "{}",
        aaaa.raw
    );

    // Off (the default): `*.consul` goes upstream like any other name.
    let off = c_host.dig(&["orders.service.consul"]);
    assert_eq!(off.data("A"), [elsewhere.to_string()], "{}", off.raw);
    assert_eq!(c_host.dig(&["b.node.consul"]).status, "NXDOMAIN");
    // Mesh names are unchanged there.
    assert_eq!(c_host.dig(&["orders.mesh"]).data("A"), [orders]);
}

/// `question`'s SRV answer names `target` on ports 8080 and 8081 (orders' two instances), and
/// its additional section gives `target`'s A record, `vip`.
fn srv_has_both_ports(host: &Host, question: &str, target: &str, vip: &str) {
    let srv = host.dig(&["SRV", question]);
    let mut ports: Vec<String> = srv
        .data("SRV")
        .iter()
        .map(|d| {
            let f: Vec<&str> = d.split_whitespace().collect();
            assert_eq!(f[3], target, "{}", srv.raw);
            f[2].to_owned()
        })
        .collect();
    ports.sort();
    assert_eq!(ports, ["8080", "8081"], "{}", srv.raw);
    assert!(
        srv.additional
            .iter()
            .any(|r| r.name == target && r.rtype == "A" && r.data == vip),
        "the A record in the additional section:\n{}",
        srv.raw
    );
}
