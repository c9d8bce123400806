//! etcd security as an operator sets it up: TLS with client certificates, users with password
//! files, auth surviving an etcd restart, per-host users from `scripts/etcd-rbac` confined to
//! their own keys, a running agent refusing a VIP changed in etcd, and records a rogue host or
//! a hand edit could write, checked like local files.

use std::path::Path;
use std::time::Duration;

use hostmesh_tests::{Agent, AgentOpts, Etcd, Host, Net, Signal, run, wait_until};

const ORDERS: &str = "name = \"orders\"\nport = 8080\n";
const BILLING: &str = "name = \"billing\"\nport = 8081\n";
const READY: Duration = Duration::from_secs(20);

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Services in an agent's `/status` catalog.
fn services(agent: &Agent) -> Vec<String> {
    agent.status()["services"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

fn registered(agent: &Agent) -> bool {
    agent.status()["registration"]["registered"] == true
}

fn start(host: &Host, etcd: &Etcd, opts: AgentOpts) -> Agent {
    let mut a = Agent::start(host, etcd, opts);
    a.wait_ready(READY);
    a
}

fn path(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Runs `scripts/etcd-rbac` inside the etcd host against its loopback endpoint, with password
/// files in `out`; tells the harness root's password. Panics with the script's output on failure.
fn rbac(etcd: &mut Etcd, out: &Path, args: &[&str]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/etcd-rbac");
    let mut cmd = etcd.host().cmd("bash");
    cmd.arg(&script)
        .args(["--endpoints", "http://127.0.0.1:2379", "--out", &path(out)])
        .args(args);
    let o = run(cmd, Duration::from_secs(120));
    assert!(
        o.status.success(),
        "etcd-rbac {args:?} failed:\n{}{}",
        text(&o.stdout),
        text(&o.stderr)
    );
    let root = std::fs::read_to_string(out.join("root.password")).expect("root.password");
    etcd.set_root_password(root.trim());
}

/// Agent options that log in as `hostmesh-host-<host>` with the script's password file.
fn as_host_user(opts: AgentOpts, host: &str, out: &Path) -> AgentOpts {
    let user = format!("hostmesh-host-{host}");
    opts.set_str("etcd", "username", &user).set_str(
        "etcd",
        "password_file",
        &path(&out.join(format!("{user}.password"))),
    )
}

fn password_file(out: &Path, user: &str) -> String {
    path(&out.join(format!("{user}.password")))
}

#[test]
fn agents_and_client_commands_work_over_etcd_tls_with_client_certificates() {
    let net = Net::new();
    let etcd = Etcd::start_tls(&net);
    let ca = etcd.tls().ca.cert();
    let tls_opts = |name: &str| {
        let c = etcd.tls().ca.client(name);
        AgentOpts::new()
            .set_str("etcd", "ca_file", &path(&ca))
            .set_str("etcd", "cert_file", &path(&c.cert))
            .set_str("etcd", "key_file", &path(&c.key))
    };
    let b = start(
        &net.host("b"),
        &etcd,
        tls_opts("b").service("orders-1", ORDERS),
    );
    let a = start(&net.host("a"), &etcd, tls_opts("a"));
    wait_until(Duration::from_secs(10), "A sees orders over TLS", || {
        services(&a) == ["orders"]
    });
    assert!(registered(&b));

    // A client command with the same settings as flags.
    let cert = etcd.tls().ca.client("operator");
    let endpoint = etcd.endpoint();
    let (ca, crt, key) = (path(&ca), path(&cert.cert), path(&cert.key));
    let flags = [
        "--etcd",
        &endpoint,
        "--etcd-ca",
        &ca,
        "--etcd-cert",
        &crt,
        "--etcd-key",
        &key,
    ];
    let out = a.run_cli(&[&["services", "--json"][..], &flags].concat());
    assert!(out.status.success(), "services: {}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("\"orders\""),
        "{}",
        text(&out.stdout)
    );

    // And with them as defaults from --config (the agent's own file).
    let config = path(a.config_path());
    let out = a.run_cli(&["services", "--config", &config]);
    assert!(
        out.status.success(),
        "services --config: {}",
        text(&out.stderr)
    );

    // etcd requires a client certificate: without one the command fails at runtime.
    let out = a.run_cli(&["services", "--etcd", &endpoint, "--etcd-ca", &ca]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));

    // A missing file is bad input, named by its flag.
    let out = a.run_cli(&[
        "services",
        "--etcd",
        &endpoint,
        "--etcd-ca",
        &ca,
        "--etcd-cert",
        "/nonexistent.pem",
        "--etcd-key",
        &key,
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("--etcd-cert /nonexistent.pem"), "{err}");

    // TLS files with an http:// endpoint: refused with the reason, not a handshake error.
    let http = endpoint.replace("https://", "http://");
    let out = a.run_cli(&["services", "--etcd", &http, "--etcd-ca", &ca]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("must be https://"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn password_auth_works_and_survives_an_etcd_restart() {
    let net = Net::new();
    let mut etcd = Etcd::start(&net);
    let out = tempfile::tempdir().expect("tempdir");
    rbac(&mut etcd, out.path(), &["a", "b"]);
    let mut b = start(
        &net.host("b"),
        &etcd,
        as_host_user(AgentOpts::new(), "b", out.path()).service("orders-1", ORDERS),
    );
    let a = start(
        &net.host("a"),
        &etcd,
        as_host_user(AgentOpts::new(), "a", out.path()),
    );
    wait_until(Duration::from_secs(10), "A sees orders with auth", || {
        services(&a) == ["orders"]
    });
    assert!(
        b.log().contains("authenticated to etcd"),
        "{}",
        b.log_tail(30)
    );

    // The operator's client command.
    let endpoint = etcd.endpoint();
    let op_pw = password_file(out.path(), "hostmesh-operator");
    let op = [
        "--etcd",
        &endpoint,
        "--etcd-user",
        "hostmesh-operator",
        "--etcd-password-file",
        &op_pw,
    ];
    let out_ok = a.run_cli(&[&["services"][..], &op].concat());
    assert!(out_ok.status.success(), "{}", text(&out_ok.stderr));
    assert!(text(&out_ok.stdout).contains("orders"));

    // A wrong password: exit 1, saying which user and file etcd refused.
    let wrong = out.path().join("wrong.password");
    std::fs::write(&wrong, "not-the-password\n").expect("write");
    let out_bad = a.run_cli(&[
        "services",
        "--etcd",
        &endpoint,
        "--etcd-user",
        "hostmesh-operator",
        "--etcd-password-file",
        &path(&wrong),
    ]);
    assert_eq!(out_bad.status.code(), Some(1), "{}", text(&out_bad.stderr));
    let err = text(&out_bad.stderr);
    assert!(
        err.contains("refused the credentials of user \"hostmesh-operator\"")
            && err.contains("--etcd-password-file")
            && err.contains("authentication failed"),
        "{err}"
    );

    // etcd restarts: every simple token it gave out is gone.
    etcd.restart();
    // B registers a new service (writes need a valid token) and A's catalog follows (its
    // re-list and watch need one too): both logged in again without help.
    b.write_service("billing-1", BILLING);
    b.signal(Signal::Hup);
    wait_until(
        Duration::from_secs(20),
        "A sees billing after the restart",
        || services(&a) == ["billing", "orders"],
    );
    wait_until(
        Duration::from_secs(10),
        "both registered and watching",
        || {
            registered(&a)
                && registered(&b)
                && a.status()["catalog"]["connected"] == true
                && b.status()["catalog"]["connected"] == true
        },
    );
    let keys = etcd.get_prefix("/hostmesh/v1/hosts/b/instances/");
    assert_eq!(keys.len(), 2, "{keys:?}");
    let again = a.run_cli(&[&["services"][..], &op].concat());
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert!(b.is_running());
}

#[test]
fn an_agent_whose_password_etcd_refuses_does_not_start() {
    let net = Net::new();
    let mut etcd = Etcd::start(&net);
    let out = tempfile::tempdir().expect("tempdir");
    rbac(&mut etcd, out.path(), &["a"]);
    let wrong = out.path().join("wrong.password");
    std::fs::write(&wrong, "nope\n").expect("write");
    let mut a = Agent::start(
        &net.host("a"),
        &etcd,
        AgentOpts::new()
            .set_str("etcd", "username", "hostmesh-host-a")
            .set_str("etcd", "password_file", &path(&wrong)),
    );
    let status = a
        .wait_exit(Duration::from_secs(20))
        .expect("the agent exits");
    assert_eq!(status.code(), Some(1));
    let log = a.log();
    assert!(
        log.contains("refused the credentials of user \"hostmesh-host-a\"")
            && log.contains("etcd.password_file"),
        "{log}"
    );
}

/// `etcdctl` as `hostmesh-host-b`.
fn as_b(etcd: &Etcd, out: &Path, args: &[&str]) -> Result<String, String> {
    let pw = std::fs::read_to_string(out.join("hostmesh-host-b.password")).expect("password");
    etcd.try_ctl_as("hostmesh-host-b", pw.trim(), args)
}

#[track_caller]
fn assert_denied(result: Result<String, String>, what: &str) {
    match result {
        Err(e) => assert!(e.contains("permission denied"), "{what}: {e}"),
        Ok(o) => panic!("{what} succeeded: {o}"),
    }
}

#[test]
fn per_host_users_from_etcd_rbac_touch_only_their_own_keys() {
    let net = Net::new();
    let mut etcd = Etcd::start(&net);
    let out = tempfile::tempdir().expect("tempdir");
    let dir = out.path();
    rbac(&mut etcd, dir, &["a", "b"]);
    // Running it again changes nothing and keeps the password files.
    let before = std::fs::read_to_string(dir.join("hostmesh-host-a.password")).expect("pw");
    rbac(&mut etcd, dir, &["--hosts", "a,b"]);
    let after = std::fs::read_to_string(dir.join("hostmesh-host-a.password")).expect("pw");
    assert_eq!(before, after);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.join("hostmesh-host-a.password"))
        .expect("metadata")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    let a = start(
        &net.host("a"),
        &etcd,
        as_host_user(AgentOpts::new(), "a", dir).service("orders-1", ORDERS),
    );
    // B registers its own instance and allocates a VIP for a new service with its own user.
    let b = start(
        &net.host("b"),
        &etcd,
        as_host_user(AgentOpts::new(), "b", dir).service("billing-1", BILLING),
    );
    wait_until(Duration::from_secs(10), "both services seen", || {
        services(&a) == ["billing", "orders"]
    });
    assert!(registered(&b));
    assert!(etcd.get("/hostmesh/v1/vips/billing").is_some());

    let a_instance = "/hostmesh/v1/hosts/a/instances/orders/orders-1";
    assert!(etcd.get(a_instance).is_some());
    let info = etcd.ctl_json(&["get", "/hostmesh/v1/hosts/a/info"]);
    let lease = info["kvs"][0]["lease"]
        .as_i64()
        .expect("A's info is on a lease");
    let lease_hex = format!("{lease:x}");

    assert_denied(
        as_b(
            &etcd,
            dir,
            &["put", "/hostmesh/v1/hosts/a/instances/orders/fake", "{}"],
        ),
        "B writing under hosts/a/",
    );
    assert_denied(
        as_b(&etcd, dir, &["del", a_instance]),
        "B deleting A's instance",
    );
    assert_denied(
        as_b(&etcd, dir, &["lease", "revoke", &lease_hex]),
        "B revoking A's lease",
    );
    assert_denied(
        as_b(&etcd, dir, &["put", "/hostmesh/v1/routes/orders", "{}"]),
        "B writing a route",
    );
    // B may write its own keys and the VIP keys.
    as_b(&etcd, dir, &["put", "/hostmesh/v1/hosts/b/probe", "x"]).expect("B writes its own key");
    as_b(
        &etcd,
        dir,
        &["put", "/hostmesh/v1/vips/probe", "\"127.77.9.9\""],
    )
    .expect("B writes a VIP");
    // Known limit (etcd 3.4): LeaseKeepAlive is not permission-checked, so B can keep A's lease
    // (and with it A's keys) alive; docs/etcd-security.md says so.
    let kept = as_b(&etcd, dir, &["lease", "keep-alive", "--once", &lease_hex])
        .expect("etcd 3.4 lets any user keep any lease alive");
    assert!(kept.contains("keepalived with TTL"), "{kept}");
    // A is untouched by all of it.
    assert!(etcd.get(a_instance).is_some());

    // The operator may write routes; hosts may not (above).
    let op_pw = password_file(dir, "hostmesh-operator");
    let route = dir.join("orders-route.toml");
    std::fs::write(&route, "timeout = \"2s\"\n").expect("write");
    let endpoint = etcd.endpoint();
    let set = a.run_cli(&[
        "route",
        "set",
        "orders",
        &path(&route),
        "--etcd",
        &endpoint,
        "--etcd-user",
        "hostmesh-operator",
        "--etcd-password-file",
        &op_pw,
    ]);
    assert!(set.status.success(), "{}", text(&set.stderr));
    let b_pw = password_file(dir, "hostmesh-host-b");
    let denied = a.run_cli(&[
        "route",
        "set",
        "orders",
        &path(&route),
        "--etcd",
        &endpoint,
        "--etcd-user",
        "hostmesh-host-b",
        "--etcd-password-file",
        &b_pw,
    ]);
    assert_eq!(denied.status.code(), Some(1), "{}", text(&denied.stderr));
    assert!(
        text(&denied.stderr).contains("permission denied"),
        "{}",
        text(&denied.stderr)
    );
}

fn dig_a(host: &Host, name: &str) -> Vec<String> {
    host.dig(&[name]).data("A")
}

/// `orders` on host `b` behind its agent, and host `a`'s agent answering `orders.mesh` with the
/// VIP returned. Fields drop in order: agents, then etcd, then the network.
struct OrdersMesh {
    a_host: Host,
    a: Agent,
    vip: String,
    _b: Agent,
    etcd: Etcd,
    _net: Net,
}

fn orders_mesh() -> OrdersMesh {
    let net = Net::new();
    let etcd = Etcd::start(&net);
    let a_host = net.host("a");
    let b = start(
        &net.host("b"),
        &etcd,
        AgentOpts::new().service("orders-1", ORDERS),
    );
    let a = start(&a_host, &etcd, AgentOpts::new());
    wait_until(Duration::from_secs(10), "A answers orders.mesh", || {
        dig_a(&a_host, "orders.mesh").len() == 1
    });
    let vip = dig_a(&a_host, "orders.mesh").remove(0);
    OrdersMesh {
        a_host,
        a,
        vip,
        _b: b,
        etcd,
        _net: net,
    }
}

/// What any host can write below `vips/` and `hosts/` is checked like a local service file:
/// a VIP outside `vip_range`, a second name on a VIP, bad names, port 0 and weight 0 are never
/// served, each skipped with one warning naming its key.
#[test]
fn records_a_rogue_host_writes_are_checked_like_local_files() {
    let m = orders_mesh();
    let (a_host, a, etcd, orders_vip) = (&m.a_host, &m.a, &m.etcd, m.vip.clone());

    let v1 = "/hostmesh/v1";
    let instance = r#"{"port":8080,"protocol":"http","health":"passing"}"#;
    let rogue = format!("{v1}/hosts/rogue/instances");
    // Valid instances, so that only the VIP decides whether a name is answered.
    for name in ["evil", "twin", "sentinel"] {
        etcd.put(&format!("{rogue}/{name}/1"), instance);
    }
    etcd.put(&format!("{v1}/vips/evil"), "\"198.18.25.15\"");
    etcd.put(&format!("{v1}/vips/twin"), &format!("\"{orders_vip}\""));
    etcd.put(&format!("{rogue}/Evil Name!/1"), instance);
    etcd.put(&format!("{rogue}/v9.orders/1"), instance);
    etcd.put(
        &format!("{rogue}/zero/1"),
        r#"{"port":0,"protocol":"http","health":"passing"}"#,
    );
    etcd.put(
        &format!("{rogue}/light/1"),
        r#"{"port":80,"protocol":"http","weight":0,"health":"passing"}"#,
    );
    // A good record written last: once A serves it, A has seen every write above.
    etcd.put(&format!("{v1}/vips/sentinel"), "\"127.77.201.1\"");
    wait_until(Duration::from_secs(10), "A serves the sentinel", || {
        dig_a(a_host, "sentinel.mesh") == ["127.77.201.1"]
    });

    assert_eq!(dig_a(a_host, "evil.mesh"), Vec::<String>::new());
    assert_eq!(dig_a(a_host, "twin.mesh"), Vec::<String>::new());
    assert_eq!(
        dig_a(a_host, "orders.mesh"),
        std::slice::from_ref(&orders_vip)
    );
    assert_eq!(
        services(a),
        ["evil", "orders", "sentinel", "twin"],
        "no instance breaking a rule is served"
    );
    let status = a.status();
    assert_eq!(
        status["catalog"]["refused_duplicate_vips"]["twin"],
        serde_json::json!({"vip": orders_vip, "held_by": "orders"}),
        "{status}"
    );
    assert!(
        a.metrics().contains("hostmesh_vip_conflicts 1"),
        "{}",
        a.metrics()
    );
    let log = a.log();
    for (key, why) in [
        ("vips/evil", "outside vip_range"),
        ("instances/Evil Name!/1", "service name"),
        ("instances/v9.orders/1", "service name"),
        ("instances/zero/1", "port 0"),
        ("instances/light/1", "weight 0"),
    ] {
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("skipping a bad value") && l.contains(key))
            .collect();
        assert_eq!(lines.len(), 1, "one warning for {key}:\n{}", a.log_tail(40));
        assert!(lines[0].contains(why), "{key}: {}", lines[0]);
    }
    assert!(
        log.contains("refusing a VIP that belongs to another name"),
        "{}",
        a.log_tail(40)
    );

    // The rogue key removed: nothing left to report.
    etcd.delete_prefix(&format!("{v1}/vips/twin"));
    wait_until(
        Duration::from_secs(10),
        "the duplicate report clears",
        || {
            a.status()["catalog"]["refused_duplicate_vips"]
                .as_object()
                .is_some_and(|m| m.is_empty())
        },
    );
}

/// `catalog.json` edited by hand is checked like etcd when an agent starts from it during an
/// etcd outage: a VIP off the range is not served.
#[test]
fn an_edited_saved_catalog_is_checked_at_start() {
    let mut m = orders_mesh();
    let (a_host, a, vip) = (&m.a_host, &mut m.a, m.vip.clone());
    let saved = a.data_dir().join("catalog.json");
    wait_until(Duration::from_secs(10), "A saved orders", || {
        std::fs::read_to_string(&saved).is_ok_and(|s| s.contains("orders-1"))
    });
    m.etcd.kill();
    a.signal(Signal::Term);
    a.wait_exit(Duration::from_secs(10)).expect("A stops");
    let text = std::fs::read_to_string(&saved).expect("catalog.json");
    let edited = text.replace(&format!("\"{vip}\""), "\"8.8.8.8\"");
    assert_ne!(edited, text);
    std::fs::write(&saved, edited).expect("write catalog.json");

    a.restart();
    a.wait_ready(READY);
    assert_eq!(a.status()["catalog"]["source"], "disk");
    assert_eq!(services(a), ["orders"]);
    assert_eq!(dig_a(a_host, "orders.mesh"), Vec::<String>::new());
    assert!(a.log().contains("outside vip_range"), "{}", a.log_tail(30));
}

#[test]
fn a_running_agent_refuses_a_vip_changed_in_etcd() {
    let m = orders_mesh();
    let (a_host, a, etcd, vip) = (&m.a_host, &m.a, &m.etcd, m.vip.clone());
    let other = if vip == "127.77.200.200" {
        "127.77.200.201"
    } else {
        "127.77.200.200"
    };
    etcd.put("/hostmesh/v1/vips/orders", &format!("\"{other}\""));

    wait_until(Duration::from_secs(10), "A reports the refused VIP", || {
        a.status()["catalog"]["refused_vip_changes"]["orders"]["etcd"] == other
    });
    let status = a.status();
    assert_eq!(
        status["catalog"]["refused_vip_changes"]["orders"]["kept"],
        vip.as_str()
    );
    assert!(
        status["problems"].as_array().is_some_and(|p| p
            .iter()
            .any(|p| p.as_str().is_some_and(|p| p.contains("VIP of orders")))),
        "{status}"
    );
    assert_eq!(status["services"]["orders"]["vip"], vip.as_str());
    assert_eq!(dig_a(a_host, "orders.mesh"), std::slice::from_ref(&vip));
    assert!(
        a.metrics().contains("hostmesh_vip_conflicts 1"),
        "{}",
        a.metrics()
    );
    assert!(
        a.log().contains("refusing a changed VIP in etcd"),
        "{}",
        a.log_tail(30)
    );

    // Put back: the conflict clears, the VIP never moved.
    etcd.put("/hostmesh/v1/vips/orders", &format!("\"{vip}\""));
    wait_until(Duration::from_secs(10), "the conflict clears", || {
        a.status()["catalog"]["refused_vip_changes"]
            .as_object()
            .is_some_and(|m| m.is_empty())
    });
    assert_eq!(dig_a(a_host, "orders.mesh"), [vip]);
}

#[test]
fn an_agent_started_while_etcd_is_down_logs_in_when_it_returns() {
    let net = Net::new();
    let mut etcd = Etcd::start(&net);
    let out = tempfile::tempdir().expect("tempdir");
    rbac(&mut etcd, out.path(), &["b"]);
    etcd.kill();
    let mut b = Agent::start(
        &net.host("b"),
        &etcd,
        as_host_user(AgentOpts::new(), "b", out.path()).service("orders-1", ORDERS),
    );
    // Logging in needs etcd; starting must not.
    wait_until(Duration::from_secs(20), "the login is retried", || {
        b.log().contains("retrying in the background")
    });
    assert!(b.is_running(), "{}", b.log_tail(30));
    etcd.restart();
    b.wait_ready(READY);
    wait_until(Duration::from_secs(20), "B registered", || registered(&b));
    assert!(
        etcd.get("/hostmesh/v1/hosts/b/instances/orders/orders-1")
            .is_some()
    );
}
