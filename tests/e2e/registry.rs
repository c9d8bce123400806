//! Registration and the catalog against a real etcd: hosts appear and disappear, survive etcd
//! outages, partitions and compaction, and bad data never blanks a service.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use hostmesh_tests::{
    Agent, AgentOpts, Backend, CLIENT_PORT, Etcd, FaultProxy, Net, Signal, toml_str, wait_for,
    wait_until,
};

/// etcd's election timeout (Debian's default, 1 s): a new leader extends every lease by it.
const ELECTION: Duration = Duration::from_secs(1);
const TTL: Duration = Duration::from_secs(3);

const ORDERS: &str = "name = \"orders\"\nport = 8080\n";

/// (service, host, id, health) of every instance an agent's `/status` shows.
fn agent_view(agent: &Agent) -> BTreeSet<(String, String, String, String)> {
    let status = agent.status();
    let mut out = BTreeSet::new();
    if let Some(services) = status["services"].as_object() {
        for (name, svc) in services {
            for e in svc["endpoints"].as_array().into_iter().flatten() {
                out.insert((
                    name.clone(),
                    e["host"].as_str().unwrap_or_default().to_owned(),
                    e["id"].as_str().unwrap_or_default().to_owned(),
                    e["health"].as_str().unwrap_or_default().to_owned(),
                ));
            }
        }
    }
    out
}

/// The same, read from etcd directly (values that do not parse are left out, as agents do).
fn etcd_view(etcd: &Etcd) -> BTreeSet<(String, String, String, String)> {
    etcd.get_prefix("/hostmesh/v1/hosts/")
        .into_iter()
        .filter_map(|(key, value)| {
            let rest = key.strip_prefix("/hostmesh/v1/hosts/")?;
            let [host, "instances", service, id] = rest.split('/').collect::<Vec<_>>()[..] else {
                return None;
            };
            let v: serde_json::Value = serde_json::from_str(&value).ok()?;
            Some(instance(service, host, id, v["health"].as_str()?))
        })
        .collect()
}

fn instance(service: &str, host: &str, id: &str, health: &str) -> (String, String, String, String) {
    (service.into(), host.into(), id.into(), health.into())
}

/// Starts an agent and waits until it is ready.
/// The lease `b`'s info key is on, when it is there.
fn lease_of(etcd: &Etcd) -> Option<i64> {
    let v = etcd.ctl_json(&["get", "/hostmesh/v1/hosts/b/info", "-w", "json"]);
    v["kvs"][0]["lease"].as_i64()
}

fn agent(host: &hostmesh_tests::Host, etcd: &Etcd, opts: AgentOpts) -> Agent {
    let mut a = Agent::start(host, etcd, opts);
    a.wait_ready(Duration::from_secs(15));
    a
}

/// Host `a` with an agent and no services, host `b` with an agent running `orders-1`, both
/// ready and `orders` in A's catalog. Fields drop in order: agents, then etcd, then the network.
struct Mesh {
    a: Agent,
    b: Agent,
    etcd: Etcd,
    /// Held for its `Drop`, which removes the hosts.
    _net: Net,
}

fn mesh() -> Mesh {
    let net = Net::new();
    let etcd = Etcd::start(&net);
    let a = agent(&net.host("a"), &etcd, AgentOpts::new());
    let b = agent(
        &net.host("b"),
        &etcd,
        AgentOpts::new().service("orders-1", ORDERS),
    );
    wait_until(Duration::from_secs(5), "orders in A", || {
        !agent_view(&a).is_empty()
    });
    Mesh {
        a,
        b,
        etcd,
        _net: net,
    }
}

#[test]
fn a_service_registered_on_one_host_appears_everywhere_within_3s() {
    let net = Net::new();
    let etcd = Etcd::start(&net);
    let a = agent(&net.host("a"), &etcd, AgentOpts::new());
    let started = Instant::now();
    let _b = agent(
        &net.host("b"),
        &etcd,
        AgentOpts::new().service("orders-1", ORDERS),
    );
    let want = instance("orders", "b", "orders-1", "passing");
    wait_until(
        Duration::from_secs(3) + (Instant::now() - started),
        "orders in A's /status",
        || agent_view(&a).contains(&want),
    );
    let out = a.run_cli(&["services", "--etcd", &etcd.endpoint(), "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("services --json");
    assert_eq!(rows[0]["name"], "orders", "{rows}");
    assert_eq!(rows[0]["ready"], 1);
    assert_eq!(rows[0]["total"], 1);
    assert_eq!(rows[0]["ports"], serde_json::json!([8080]));
    let vip = rows[0]["vip"].as_str().expect("a VIP");
    assert!(vip.starts_with("127.77."), "{vip}");
    // The table form, with the columns of docs/reference/cli.md.
    let out = a.run_cli(&["services", "--etcd", &etcd.endpoint()]);
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    assert_eq!(
        lines
            .next()
            .map(|l| l.split_whitespace().collect::<Vec<_>>()),
        Some(vec!["NAME", "VIP", "PORT", "PROTOCOL", "READY"])
    );
    assert_eq!(
        lines
            .next()
            .map(|l| l.split_whitespace().collect::<Vec<_>>()),
        Some(vec!["orders", vip, "8080", "http", "1/1"])
    );
}

#[test]
fn sigkill_removes_a_hosts_instances_within_its_ttl() {
    let m = mesh();
    m.b.signal(Signal::Kill);
    let killed = Instant::now();
    wait_until(
        TTL + ELECTION + Duration::from_secs(2),
        "b's instance gone from A",
        || agent_view(&m.a).is_empty(),
    );
    assert!(
        killed.elapsed() >= TTL - Duration::from_millis(500),
        "gone before the lease could expire"
    );
    assert!(m.etcd.get_prefix("/hostmesh/v1/hosts/b/").is_empty());
}

#[test]
fn sigterm_deregisters_at_once_and_exits_0() {
    let net = Net::new();
    let etcd = Etcd::start(&net);
    let mut b = agent(
        &net.host("b"),
        &etcd,
        AgentOpts::new().service("orders-1", ORDERS),
    );
    wait_until(Duration::from_secs(5), "b registered", || {
        !etcd.get_prefix("/hostmesh/v1/hosts/b/").is_empty()
    });
    b.signal(Signal::Term);
    let status = b
        .wait_exit(Duration::from_secs(5))
        .expect("exits after SIGTERM");
    assert_eq!(status.code(), Some(0), "{}", b.log_tail(30));
    // Revoked, not expired: gone right away.
    assert!(etcd.get_prefix("/hostmesh/v1/hosts/b/").is_empty());
    // The VIP stays reserved for the name.
    assert!(etcd.get("/hostmesh/v1/vips/orders").is_some());
}

#[test]
fn etcd_restart_reregisters_and_catalogs_converge() {
    let mut m = mesh();
    m.etcd.kill();
    wait_until(Duration::from_secs(10), "A notices etcd is gone", || {
        m.a.status()["etcd"]["connected"] == false
    });
    // Meanwhile A keeps what it knew.
    assert_eq!(
        agent_view(&m.a),
        BTreeSet::from([instance("orders", "b", "orders-1", "passing")])
    );
    m.etcd.restart();
    wait_until(
        Duration::from_secs(15),
        "A's catalog equals etcd with b registered",
        || {
            let in_etcd = etcd_view(&m.etcd);
            in_etcd.contains(&instance("orders", "b", "orders-1", "passing"))
                && agent_view(&m.a) == in_etcd
                && m.a.status()["etcd"]["connected"] == true
        },
    );
}

/// Found by the lab (issue 13): through a whole etcd outage an agent keeps its lease (no
/// answer is not "lease gone"), and a service added by a reload while etcd was down gets its
/// VIP and registers once etcd is back, without waiting for a new session.
#[test]
fn a_service_added_while_etcd_is_down_gets_its_vip_when_etcd_returns() {
    let mut m = mesh();
    let before = lease_of(&m.etcd).expect("b's info on a lease");
    m.etcd.kill();
    wait_until(Duration::from_secs(10), "B notices etcd is gone", || {
        m.b.status()["etcd"]["connected"] == false
    });
    m.b.write_service(
        "billing-1",
        "name = \"billing\"\nport = 8081\ntarget = \"127.0.0.1:18081\"\n",
    );
    m.b.signal(Signal::Hup);
    wait_until(
        Duration::from_secs(5),
        "B tried and failed to get a VIP",
        || m.b.status()["registration"]["vip_errors"]["billing"].is_string(),
    );
    // Longer than the lease TTL without any answer from etcd.
    std::thread::sleep(TTL + Duration::from_secs(1));
    m.etcd.restart();
    wait_until(
        Duration::from_secs(15),
        "billing with a VIP in A's catalog",
        || {
            m.a.service_vip("billing").is_some()
                && agent_view(&m.a).contains(&instance("billing", "b", "billing-1", "passing"))
        },
    );
    assert_eq!(
        lease_of(&m.etcd),
        Some(before),
        "B kept the lease that outlived the outage"
    );
    assert!(m.b.status()["registration"]["vip_errors"]["billing"].is_null());
}

/// Issue 14, finding 7: a host's keys deleted or overwritten by someone else come back as soon
/// as the host's own watch shows it (debounced), not at the next anti-entropy pass (30 s), and
/// each repair is counted once.
#[test]
fn own_keys_deleted_or_changed_by_someone_else_are_restored_at_once() {
    let m = mesh();
    let key = "/hostmesh/v1/hosts/b/instances/orders/orders-1";
    let good = m.etcd.get(key).expect("b's instance key");
    let restored = |what: &str| {
        let started = Instant::now();
        wait_until(
            Duration::from_secs(3),
            &format!("b restores its key after {what}"),
            || m.etcd.get(key).as_deref() == Some(good.as_str()),
        );
        started.elapsed()
    };
    m.etcd.ctl(&["del", key]);
    let after_delete = restored("a delete");
    m.etcd
        .put(key, r#"{"port":9,"protocol":"http","health":"critical"}"#);
    let after_overwrite = restored("an overwrite");
    // A whole host's keys at once: one repair.
    assert_eq!(m.etcd.delete_prefix("/hostmesh/v1/hosts/b/"), 2);
    restored("a delete of the host's prefix");
    wait_until(Duration::from_secs(3), "b's info back", || {
        m.etcd.get("/hostmesh/v1/hosts/b/info").is_some()
    });
    wait_until(Duration::from_secs(3), "three repairs counted", || {
        m.b.metrics().contains("hostmesh_own_keys_restored_total 3")
    });
    assert_eq!(
        agent_view(&m.a),
        BTreeSet::from([instance("orders", "b", "orders-1", "passing")])
    );
    eprintln!("restored after {after_delete:?} (delete) and {after_overwrite:?} (overwrite)");
}

#[test]
fn a_host_cut_off_longer_than_its_ttl_reregisters_under_a_new_lease() {
    let net = Net::new();
    let etcd = Etcd::start(&net);
    let a = agent(&net.host("a"), &etcd, AgentOpts::new());
    let b_host = net.host("b");
    let b = agent(&b_host, &etcd, AgentOpts::new().service("orders-1", ORDERS));
    let before = wait_for(Duration::from_secs(5), "b's info on a lease", || {
        lease_of(&etcd)
    });
    b_host.cut_from(etcd.addr());
    wait_until(
        TTL + ELECTION + Duration::from_secs(3),
        "b expired from A's catalog",
        || agent_view(&a).is_empty(),
    );
    // B, cut off, still serves what it knew.
    wait_until(Duration::from_secs(5), "B notices it is cut off", || {
        b.status()["etcd"]["connected"] == false
    });
    assert!(!agent_view(&b).is_empty());
    b_host.heal();
    wait_until(Duration::from_secs(15), "b registered again", || {
        agent_view(&a) == BTreeSet::from([instance("orders", "b", "orders-1", "passing")])
    });
    let after = lease_of(&etcd).expect("b's info on a lease");
    assert_ne!(before, after, "a new lease after the old one expired");
    assert_eq!(
        b.sample("hostmesh_lease_losses_total"),
        1.0,
        "the lost lease is counted once"
    );
    let keys: Vec<String> = etcd
        .get_prefix("/hostmesh/v1/hosts/b/")
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(
        keys,
        [
            "/hostmesh/v1/hosts/b/info",
            "/hostmesh/v1/hosts/b/instances/orders/orders-1"
        ],
        "no duplicates"
    );
}

#[test]
fn a_registration_slower_than_the_lease_ttl_keeps_its_lease() {
    let net = Net::new();
    let etcd = Etcd::start(&net);
    // b reaches etcd only through a proxy that delays every answer by 800 ms (a member far
    // away, or a whole fleet registering at once). After the grant, the VIP allocation and the
    // registration take four answers, 3.2 s, longer than the 2 s TTL: the lease must be kept
    // alive from its grant on, or it expires under the registration and every new one does too.
    let proxy = FaultProxy::start(
        etcd.host(),
        std::net::SocketAddr::from((etcd.addr(), CLIENT_PORT + 100)),
        std::net::SocketAddr::from((etcd.addr(), CLIENT_PORT)),
    );
    proxy.set_delay(Duration::from_millis(800));
    let endpoint = format!("[{}]", toml_str(&proxy.url("")));
    let b = Agent::start(
        &net.host("b"),
        &etcd,
        AgentOpts::new()
            .set("etcd", "endpoints", &endpoint)
            .lease_ttl("2s")
            .service("orders-1", ORDERS),
    );
    wait_until(
        Duration::from_secs(30),
        "b registered through the slow proxy",
        || etcd_view(&etcd).contains(&instance("orders", "b", "orders-1", "passing")),
    );
    let lease = lease_of(&etcd).expect("b's info on a lease");
    // Three TTLs more: the same lease, none lost, no registration failed.
    let until = Instant::now() + 3 * Duration::from_secs(2);
    while Instant::now() < until {
        assert_eq!(
            lease_of(&etcd),
            Some(lease),
            "b's lease changed:\n{}",
            b.log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let log = b.log();
    assert!(
        !log.contains("lease lost") && !log.contains("lease not found"),
        "{log}"
    );
    assert_eq!(b.sample("hostmesh_lease_losses_total"), 0.0);
}

#[test]
fn a_garbage_value_is_skipped_and_the_service_stays() {
    let m = mesh();
    m.etcd
        .put("/hostmesh/v1/hosts/b/instances/orders/garbage", "{not json");
    m.etcd.put(
        "/hostmesh/v1/hosts/b/instances/orders/orders-1-twin",
        r#"{"port":"eighty"}"#,
    );
    m.etcd.put("/hostmesh/v1/vips/broken", "not-an-ip");
    // A marker written after the garbage: once A has it, A has processed the garbage too.
    m.etcd.put(
        "/hostmesh/v1/hosts/z/instances/marker/m1",
        r#"{"port":1,"protocol":"tcp","health":"passing","a_future_field":true}"#,
    );
    wait_until(Duration::from_secs(5), "the marker in A", || {
        agent_view(&m.a).contains(&instance("marker", "z", "m1", "passing"))
    });
    assert_eq!(
        agent_view(&m.a),
        BTreeSet::from([
            instance("marker", "z", "m1", "passing"),
            instance("orders", "b", "orders-1", "passing"),
        ])
    );
    assert!(
        m.a.log().contains("skipping a bad value"),
        "a warning for the bad values"
    );
    assert_eq!(m.a.admin_get("/ready").0, 200);
}

#[test]
fn an_agent_restarted_while_etcd_is_down_serves_its_saved_catalog() {
    let mut m = mesh();
    let saved = m.a.data_dir().join("catalog.json");
    wait_until(
        Duration::from_secs(2),
        "the catalog saved within a second",
        || std::fs::read_to_string(&saved).is_ok_and(|s| s.contains("orders-1")),
    );
    m.etcd.kill();
    m.a.signal(Signal::Term);
    let term = Instant::now();
    let status =
        m.a.wait_exit(Duration::from_secs(10))
            .expect("A stops with etcd down");
    assert_eq!(status.code(), Some(0));
    // Deregistration waits at most 1 s for an unreachable etcd, then the 100 ms drain.
    assert!(
        term.elapsed() < Duration::from_secs(3),
        "took {:?}",
        term.elapsed()
    );
    m.a.restart();
    m.a.wait_ready(Duration::from_secs(15));
    let status = m.a.status();
    assert_eq!(status["catalog"]["stale"], true, "{status}");
    assert_eq!(status["catalog"]["source"], "disk", "{status}");
    assert_eq!(
        agent_view(&m.a),
        BTreeSet::from([instance("orders", "b", "orders-1", "passing")])
    );
    let metrics = m.a.metrics();
    assert!(
        metrics.contains("hostmesh_registry_connected 0"),
        "{metrics}"
    );
}

#[test]
fn compaction_while_an_agent_is_frozen_still_converges() {
    let m = mesh();
    m.a.signal(Signal::Stop);
    // Changes A misses: a new service on B, and another host's records written and deleted.
    m.b.write_service("billing-1", "name = \"billing\"\nport = 9000\n");
    m.b.signal(Signal::Hup);
    wait_until(Duration::from_secs(5), "billing in etcd", || {
        m.etcd
            .get("/hostmesh/v1/hosts/b/instances/billing/billing-1")
            .is_some()
    });
    for i in 0..50 {
        let key = format!("/hostmesh/v1/hosts/y/instances/tmp/t{i}");
        m.etcd
            .put(&key, r#"{"port":1,"protocol":"tcp","health":"passing"}"#);
        m.etcd.ctl(&["del", &key]);
    }
    m.etcd.compact_to_latest();
    m.a.signal(Signal::Cont);
    wait_until(Duration::from_secs(15), "A's catalog equals etcd", || {
        let in_etcd = etcd_view(&m.etcd);
        in_etcd.len() == 2 && agent_view(&m.a) == in_etcd
    });
}

#[test]
fn a_failing_check_turns_critical_in_time_and_recovers() {
    let net = Net::new();
    let etcd = Etcd::start(&net);
    let b_host = net.host("b");
    let app = Backend::http(&b_host, 18080, "orders\n");
    let def = "name = \"orders\"\nport = 8080\ntarget = \"127.0.0.1:18080\"\n\n[check]\n\
               http = \"/healthz\"\ninterval = \"1s\"\ntimeout = \"500ms\"\nunhealthy_after = 2\nhealthy_after = 1\n";
    let _b = agent(&b_host, &etcd, AgentOpts::new().service("orders-1", def));
    let key = "/hostmesh/v1/hosts/b/instances/orders/orders-1";
    let health = |etcd: &Etcd| {
        etcd.get(key)
            .and_then(|v| serde_json::from_str::<serde_json::Value>(&v).ok())
            .and_then(|v| v["health"].as_str().map(str::to_owned))
    };
    wait_until(Duration::from_secs(5), "passing", || {
        health(&etcd).as_deref() == Some("passing")
    });
    app.set_healthy(false);
    let failed = Instant::now();
    // interval × (unhealthy_after + 1) + timeout + 2 s
    wait_until(
        Duration::from_millis(1000 * 3 + 500 + 2000),
        "critical",
        || health(&etcd).as_deref() == Some("critical"),
    );
    assert!(
        failed.elapsed() >= Duration::from_millis(900),
        "needs two failures in a row"
    );
    app.set_healthy(true);
    wait_until(Duration::from_secs(4), "passing again", || {
        health(&etcd).as_deref() == Some("passing")
    });
}

#[test]
fn services_racing_for_vips_never_share_one() {
    let net = Net::new();
    let etcd = Etcd::start(&net);
    // A small range makes collisions certain: 62 usable addresses for 40 names.
    let range = "127.77.0.0/26";
    let mut agents = Vec::new();
    let hosts: Vec<_> = ["a", "b", "c"].iter().map(|h| net.host(h)).collect();
    for (n, host) in hosts.iter().enumerate() {
        let mut opts = AgentOpts::new().set_str("dns", "vip_range", range);
        for s in 0..20 {
            // Overlapping names: each host shares half its names with the next one.
            let name = format!("svc-{}", n * 10 + s);
            opts = opts.service(&name, &format!("name = \"{name}\"\nport = 80\n"));
        }
        agents.push(Agent::start(host, &etcd, opts));
    }
    for a in &mut agents {
        a.wait_ready(Duration::from_secs(15));
    }
    let vips = wait_for(Duration::from_secs(15), "40 VIPs allocated", || {
        let vips = etcd.get_prefix("/hostmesh/v1/vips/");
        (vips.len() == 40).then_some(vips)
    });
    let mut seen = BTreeSet::new();
    for (key, value) in &vips {
        let name = key.trim_start_matches("/hostmesh/v1/vips/");
        let ip: String = serde_json::from_str(value).expect("a JSON string");
        assert!(seen.insert(ip.clone()), "{ip} given twice: {vips:?}");
        assert_eq!(
            etcd.get(&format!("/hostmesh/v1/vip-owners/{ip}"))
                .as_deref(),
            Some(name),
            "vip-owners/{ip} names its owner"
        );
    }
    assert_eq!(etcd.get_prefix("/hostmesh/v1/vip-owners/").len(), 40);
    // Every agent sees the same VIP for a name.
    let view = |a: &Agent| a.status()["services"]["svc-15"]["vip"].clone();
    wait_until(Duration::from_secs(5), "same VIP everywhere", || {
        let v = view(&agents[0]);
        !v.is_null() && agents.iter().all(|a| view(a) == v)
    });
}

#[test]
fn a_second_agent_with_the_same_host_name_refuses_to_start() {
    let net = Net::new();
    let etcd = Etcd::start(&net);
    let b_host = net.host("b");
    let mut b = agent(&b_host, &etcd, AgentOpts::new().service("orders-1", ORDERS));
    wait_until(Duration::from_secs(5), "b registered", || {
        etcd.get("/hostmesh/v1/hosts/b/info").is_some()
    });
    // A clone: another machine, the same host name.
    let mut clone = Agent::start(
        &net.host("clone"),
        &etcd,
        AgentOpts::new().set_str("agent", "host", "b"),
    );
    let status = clone
        .wait_exit(Duration::from_secs(10))
        .expect("the clone exits");
    assert_eq!(status.code(), Some(1));
    let log = clone.log();
    assert!(
        log.contains("held by another live agent") && log.contains(&b_host.addr().to_string()),
        "{log}"
    );
    // A crashed agent restarted at once is not a clone: it recognises its own lease.
    b.signal(Signal::Kill);
    b.wait_exit(Duration::from_secs(5)).expect("killed");
    b.restart();
    b.wait_ready(Duration::from_secs(15));
    wait_until(Duration::from_secs(5), "registered again", || {
        b.status()["registration"]["registered"] == true
    });
}

#[test]
fn an_etcd_rebuilt_empty_never_blanks_the_catalog() {
    let mut m = mesh();
    // B frozen, so nothing registers again: etcd stays empty.
    m.b.signal(Signal::Stop);
    m.etcd.wipe_and_restart();
    wait_until(
        Duration::from_secs(15),
        "A refuses the empty listing",
        || {
            let status = m.a.status();
            status["catalog"]["refused_empty_listing"] == true
                && status["etcd"]["connected"] == true
        },
    );
    assert_eq!(
        agent_view(&m.a),
        BTreeSet::from([instance("orders", "b", "orders-1", "passing")])
    );
    assert_eq!(m.a.admin_get("/ready").0, 200);
    // Once etcd holds data again, A follows it (from the new, lower revisions).
    m.etcd.put(
        "/hostmesh/v1/hosts/z/instances/marker/m1",
        r#"{"port":1,"protocol":"tcp","health":"passing"}"#,
    );
    wait_until(Duration::from_secs(5), "the marker in A", || {
        agent_view(&m.a).contains(&instance("marker", "z", "m1", "passing"))
    });
    m.b.signal(Signal::Cont);
}

/// Puts three valid instance records of `big` padded with a field agents ignore, 1.4 MiB each
/// (etcd's own request limit is 1.5 MiB): one list page of the three is over tonic's default
/// decode limit of 4 MiB.
fn put_large_values(etcd: &Etcd) {
    let dir = tempfile::tempdir().expect("tempdir");
    let pad = "x".repeat(1_400_000);
    for i in 0..3 {
        let file = dir.path().join(format!("value-{i}"));
        let value =
            format!(r#"{{"port":80{i},"protocol":"http","health":"passing","pad":"{pad}"}}"#);
        std::fs::write(&file, value).expect("value file");
        // Through stdin: one argument cannot be this long.
        let put = format!(
            "etcdctl --endpoints={} put /hostmesh/v1/hosts/z/instances/big/big-{i} < {}",
            etcd.endpoint(),
            file.display()
        );
        let out = etcd.host().run("sh", &["-c", &put]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Issue 14, finding 5: values near etcd's own request limit no longer make a list page too
/// large to decode: a fresh agent lists them and becomes ready, and after an etcd restart a
/// running agent lists again and follows etcd.
#[test]
fn large_values_list_in_a_fresh_agent_and_after_an_etcd_restart() {
    let net = Net::new();
    let mut etcd = Etcd::start(&net);
    put_large_values(&etcd);
    let a = agent(&net.host("a"), &etcd, AgentOpts::new());
    wait_until(
        Duration::from_secs(10),
        "the big instances in A's catalog",
        || agent_view(&a).len() == 3,
    );
    let restarts = |a: &Agent| {
        a.metrics()
            .lines()
            .find(|l| l.starts_with("hostmesh_etcd_watch_restarts_total"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let before = restarts(&a);
    etcd.kill();
    etcd.restart();
    wait_until(Duration::from_secs(20), "A lists etcd again", || {
        restarts(&a) > before && a.status()["catalog"]["connected"] == true
    });
    etcd.put(
        "/hostmesh/v1/hosts/z/instances/marker/m1",
        r#"{"port":1,"protocol":"tcp","health":"passing"}"#,
    );
    wait_until(Duration::from_secs(10), "A follows etcd after it", || {
        agent_view(&a).contains(&instance("marker", "z", "m1", "passing"))
    });
    assert_eq!(agent_view(&a).len(), 4);
}

/// A single value over the decode limit (possible only with etcd's `--max-request-bytes` raised
/// past the agent's 64 MiB) is skipped with one warning; the rest of the catalog lists.
#[test]
fn a_value_too_large_to_decode_is_skipped_not_fatal() {
    let net = Net::new();
    let etcd = Etcd::start(&net);
    put_large_values(&etcd);
    etcd.put(
        "/hostmesh/v1/hosts/z/instances/small/s1",
        r#"{"port":1,"protocol":"tcp","health":"passing"}"#,
    );
    let endpoint = etcd.endpoint();
    let snapshot = etcd.host().in_ns(|| {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        rt.block_on(async {
            let options = hostmesh_registrar::etcd::EtcdOptions::with_endpoints(vec![endpoint]);
            let client = options.connect().await.expect("connect to etcd");
            let layout = hostmesh_registrar::keys::Layout::new("/hostmesh");
            // 1 MiB: each 1.4 MiB value is too large even alone.
            hostmesh_registrar::catalog::fetch_decoding_at_most(
                &client,
                &layout,
                hostmesh_config::default_vip_range(),
                1 << 20,
            )
            .await
            .expect("the list succeeds")
        })
    });
    let services: Vec<&String> = snapshot.services.keys().collect();
    assert_eq!(services, ["small"]);
}
