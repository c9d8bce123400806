//! Lockdown (`proxy.lockdown`, docs/lockdown.md): an app bound to `0.0.0.0` on host b is
//! refused to direct connections from host c, while c still reaches it through the mesh; the
//! service's `allow_direct` lets c in; reloads follow service changes; the rules outlive the
//! agent (fail closed); an agent without lockdown installs nothing.

use std::time::Duration;

use hostmesh_tests::{AgentOpts, Backend, Host, Net, Signal, wait_until};

use crate::proxy::agent;

const ORDERS: &str = "name = \"orders\"\nport = 8080\ntarget = \"127.0.0.1:18080\"\n";
const TABLE: &[&str] = &["list", "table", "inet", "hostmesh_lockdown"];

/// Whether a direct connection from `from` to `to`'s app port is refused (curl exit 7).
fn direct_refused(from: &Host, to: &Host) -> bool {
    match from.curl(&format!("http://{}:18080/", to.addr())) {
        Ok((code, _)) => {
            assert_eq!(code, 200, "the app answers when reached");
            false
        }
        Err(e) if e.is_refused() => true,
        Err(e) => panic!("direct connection neither refused nor answered: {e}"),
    }
}

fn has_table(host: &Host) -> bool {
    host.run("nft", TABLE).status.success()
}

#[test]
fn lockdown_refuses_direct_connections_from_other_hosts_but_not_the_mesh() {
    let net = Net::new();
    let etcd = hostmesh_tests::Etcd::start(&net);
    let b = net.host("b");
    let c = net.host("c");
    let _app = Backend::http(&b, 18080, "hello from b\n");
    let mut agent_b = agent(
        &b,
        &etcd,
        AgentOpts::new()
            .set("proxy", "lockdown", "true")
            .service("orders-1", ORDERS),
    );
    let agent_c = agent(&c, &etcd, AgentOpts::new());

    // Through the mesh from c: 200 (c's agent → b's inbound port → the app, from b itself).
    wait_until(
        Duration::from_secs(10),
        "orders answers through the mesh",
        || {
            c.curl("http://orders.mesh:8080/")
                .is_ok_and(|(code, _)| code == 200)
        },
    );
    // Directly from c: refused. From b itself: answered.
    assert!(direct_refused(&c, &b));
    assert_eq!(b.curl("http://127.0.0.1:18080/").map(|r| r.0), Ok(200));
    assert_eq!(
        b.curl(&format!("http://{}:18080/", b.addr())).map(|r| r.0),
        Ok(200)
    );

    // Reported: b's /status, and every agent's view of the record in etcd.
    let status = agent_b.status();
    assert_eq!(status["lockdown"]["enabled"], true, "{status:#}");
    assert_eq!(status["lockdown"]["table"], "inet hostmesh_lockdown");
    assert_eq!(status["lockdown"]["ports"][0]["port"], 18080, "{status:#}");
    wait_until(
        Duration::from_secs(5),
        "b's instance locked in /status",
        || agent_b.status()["registration"]["instances"][0]["locked"] == true,
    );
    wait_until(Duration::from_secs(5), "c sees orders locked", || {
        agent_c.status()["services"]["orders"]["endpoints"][0]["locked"] == true
    });
    let out = agent_c.run_cli(&["endpoints", "orders", "--etcd", &etcd.endpoint()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let header = text.lines().next().unwrap_or_default();
    assert!(header.trim_end().ends_with("LOCKED"), "{text}");
    assert!(
        text.lines()
            .nth(1)
            .is_some_and(|l| l.trim_end().ends_with("locked")),
        "{text}"
    );
    // c has no lockdown: nothing installed there.
    assert!(!has_table(&c));
    assert_eq!(agent_c.status()["lockdown"]["enabled"], false);

    // c's address in allow_direct, after a reload: direct works.
    agent_b.write_service(
        "orders-1",
        &format!("{ORDERS}allow_direct = [\"{}/32\"]\n", c.addr()),
    );
    agent_b.signal(Signal::Hup);
    wait_until(Duration::from_secs(5), "c allowed directly", || {
        !direct_refused(&c, &b)
    });
    // The registrar and /status follow the reload a moment after the kernel does.
    let allowed = format!("{}/32", c.addr());
    wait_until(Duration::from_secs(5), "allow_direct in /status", || {
        let status = agent_b.status();
        status["registration"]["instances"][0]["allow_direct"][0] == allowed.as_str()
            && status["lockdown"]["ports"][0]["allow_direct"][0] == allowed.as_str()
    });
    // Taken out again: refused again.
    agent_b.write_service("orders-1", ORDERS);
    agent_b.signal(Signal::Hup);
    wait_until(Duration::from_secs(5), "c refused again", || {
        direct_refused(&c, &b)
    });

    // A reload that removes the service: its port is no longer locked.
    agent_b.remove_service("orders-1");
    agent_b.signal(Signal::Hup);
    wait_until(Duration::from_secs(5), "port 18080 unlocked", || {
        !direct_refused(&c, &b)
    });
    wait_until(Duration::from_secs(5), "no port locked in /status", || {
        agent_b.status()["lockdown"]["ports"] == serde_json::json!([])
    });

    // The rules outlive the agent: locked again, then stopped, still locked.
    agent_b.write_service("orders-1", ORDERS);
    agent_b.signal(Signal::Hup);
    wait_until(Duration::from_secs(5), "locked again", || {
        direct_refused(&c, &b)
    });
    agent_b.signal(Signal::Term);
    assert!(
        agent_b.wait_exit(Duration::from_secs(10)).is_some(),
        "b did not stop"
    );
    assert!(has_table(&b), "the lockdown table went with the agent");
    assert!(direct_refused(&c, &b));
}
