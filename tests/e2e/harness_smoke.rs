//! Proves the harness itself: hosts reach each other and etcd, partitions cut and heal, etcd
//! survives kill and restart, signals reach the program, and everything is torn down.

use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use std::time::Duration;

use hostmesh_tests::{Agent, AgentOpts, Backend, Etcd, Net, Proc, Signal, wait_until};

/// Namespaces whose names start with `prefix`.
fn namespaces_with(prefix: &str) -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("running ip netns list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

#[test]
fn hosts_reach_each_other_and_etcd() {
    let net = Net::new();
    let etcd = Etcd::start(&net);
    let a = net.host("a");
    let b = net.host("b");
    assert_ne!(a.addr(), b.addr());

    let app = Backend::http(&b, 18080, "hello from b\n");
    assert_eq!(
        a.curl(&app.url("/")).expect("a reaches b's app"),
        (200, "hello from b\n".to_string())
    );
    // Each host has its own loopback: b's app is on b's 127.0.0.1, not on a's.
    assert_eq!(
        b.curl("http://127.0.0.1:18080/")
            .expect("b reaches its own app"),
        (200, "hello from b\n".to_string())
    );
    let err = a
        .curl("http://127.0.0.1:18080/")
        .expect_err("a's loopback has no app");
    assert!(err.is_refused(), "{err}");

    // The backend's controls and request log.
    assert_eq!(a.curl(&app.url("/healthz")).expect("healthz").0, 200);
    app.set_healthy(false);
    assert_eq!(a.curl(&app.url("/healthz")).expect("healthz").0, 500);
    app.set_status(503);
    assert_eq!(a.curl(&app.url("/x")).expect("status").0, 503);
    let reqs = app.requests();
    assert_eq!(reqs.len(), 3, "{reqs:?}");
    assert_eq!(reqs[2]["path"], "/x");
    assert!(reqs[2]["headers"]["user-agent"].is_string(), "{reqs:?}");

    // etcd from another host, through the bridge, with the stock client.
    let endpoint = etcd.endpoint();
    a.run_ok(
        "etcdctl",
        &["--endpoints", &endpoint, "put", "/smoke/from-a", "value a"],
    );
    let got = a.run_ok(
        "etcdctl",
        &[
            "--endpoints",
            &endpoint,
            "get",
            "--print-value-only",
            "/smoke/from-a",
        ],
    );
    assert_eq!(got.trim(), "value a");
    etcd.put("/smoke/multi", "line 1\nline 2");
    assert_eq!(
        etcd.get_prefix("/smoke/"),
        vec![
            ("/smoke/from-a".to_string(), "value a".to_string()),
            ("/smoke/multi".to_string(), "line 1\nline 2".to_string()),
        ]
    );
    assert_eq!(etcd.get("/smoke/absent"), None);

    // Programs in a host resolve through its (future) agent.
    let resolv = a.run_ok("cat", &["/etc/resolv.conf"]);
    assert_eq!(resolv.trim(), "nameserver 127.0.0.1");
}

#[test]
fn cut_from_partitions_silently_and_heal_restores() {
    let net = Net::new();
    let etcd = Etcd::start(&net);
    let a = net.host("a");
    let b = net.host("b");
    let health = format!("{}/health", etcd.endpoint());
    let app = Backend::http(&a, 18080, "a\n");
    // A healthy connect on the bridge takes microseconds: a short timeout keeps polling quick.
    let reaches_etcd = |h: &hostmesh_tests::Host| {
        matches!(
            h.curl_args(&["--connect-timeout", "0.3", &health]),
            Ok((200, _))
        )
    };
    assert!(reaches_etcd(&a));

    a.cut_from(etcd.addr());
    // The rules apply to the next packet, so this holds at once (2 s: slack for a busy machine).
    wait_until(Duration::from_secs(2), "a to lose etcd", || {
        !reaches_etcd(&a)
    });
    // Packets vanish, like a real partition: a connect times out rather than being refused.
    let err = a
        .curl_args(&["--connect-timeout", "0.5", &health])
        .expect_err("etcd is cut off");
    assert!(err.is_timeout(), "{err}");
    // Both ways: etcd's host can't reach a's app either.
    let err = etcd
        .host()
        .curl_args(&["--connect-timeout", "0.5", &app.url("/")])
        .expect_err("a is cut off");
    assert!(err.is_timeout(), "{err}");
    // Other hosts and a's loopback are untouched.
    assert!(reaches_etcd(&b));
    assert_eq!(b.curl(&app.url("/")).expect("b reaches a").0, 200);
    assert_eq!(a.curl("http://127.0.0.1:18080/").expect("loopback").0, 200);

    a.heal();
    wait_until(Duration::from_secs(5), "a to reach etcd again", || {
        reaches_etcd(&a)
    });
    a.heal(); // healing twice is harmless

    b.isolate();
    wait_until(Duration::from_secs(2), "b to lose everything", || {
        !reaches_etcd(&b)
    });
    assert!(
        b.curl_args(&["--connect-timeout", "0.5", &app.url("/")])
            .is_err()
    );
    b.heal();
    wait_until(Duration::from_secs(5), "b to reach etcd again", || {
        reaches_etcd(&b)
    });
}

#[test]
fn etcd_kill_restart_keeps_data_and_compaction_works() {
    let net = Net::new();
    let mut etcd = Etcd::start(&net);
    etcd.put("/k", "v1");
    etcd.put("/k", "v2");
    let rev = etcd.revision();
    assert!(rev >= 3, "revision {rev}");

    etcd.kill();
    assert!(!etcd.is_healthy());

    etcd.restart();
    assert_eq!(etcd.get("/k").as_deref(), Some("v2"));
    assert_eq!(etcd.revision(), rev);

    // History survives until compacted.
    let old = etcd.ctl(&["get", "--print-value-only", "--rev", "2", "/k"]);
    assert_eq!(old.trim(), "v1");
    assert_eq!(etcd.compact_to_latest(), rev);
    let err = etcd
        .try_ctl(&["get", "--rev", "2", "/k"])
        .expect_err("revision 2 is compacted");
    assert!(
        err.contains("required revision has been compacted"),
        "{err}"
    );
    etcd.compact_to_latest(); // again at the same revision: fine
}

#[test]
fn signals_reach_the_program_not_ip() {
    let net = Net::new();
    let a = net.host("a");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = a.cmd("sleep");
    cmd.arg("600");
    let mut p = Proc::spawn(cmd, "sleep", &dir.path().join("sleep.log"));
    let pid = p.pid();
    // `ip netns exec` execs in place: the same pid becomes `sleep`.
    wait_until(Duration::from_secs(5), "ip to exec sleep", || {
        std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "sleep")
    });
    p.signal(Signal::Stop);
    wait_until(Duration::from_secs(5), "sleep to stop", || {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            s.rsplit(')')
                .next()
                .is_some_and(|r| r.trim_start().starts_with('T'))
        })
    });
    p.signal(Signal::Cont);
    p.signal(Signal::Term);
    let st = p
        .wait_exit(Duration::from_secs(5))
        .expect("sleep exits on SIGTERM");
    assert_eq!(st.signal(), Some(15));
}

#[test]
fn teardown_kills_processes_and_deletes_namespaces() {
    let net = Net::new();
    let id = net.id().to_string();
    let a = net.host("a");
    // A process the test "forgot" about: teardown must kill it anyway.
    let mut leaked = a.cmd("sleep").arg("600").spawn().expect("spawn sleep");
    // `ip netns exec` enters the namespace and then execs sleep: until then the process is not
    // in the namespace for teardown to find (a busy machine showed that window).
    let comm = format!("/proc/{}/comm", leaked.id());
    wait_until(
        Duration::from_secs(10),
        "the leaked process runs sleep",
        || std::fs::read_to_string(&comm).is_ok_and(|c| c.trim() == "sleep"),
    );
    assert_eq!(namespaces_with(&id).len(), 2);
    drop(net);
    assert_eq!(namespaces_with(&id), Vec::<String>::new());
    assert!(!std::path::Path::new("/etc/netns").join(a.ns()).exists());
    let st = leaked.wait().expect("reap sleep");
    assert_eq!(st.signal(), Some(9));

    // And when the test panics.
    let mut id = String::new();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let net = Net::new();
        id = net.id().to_string();
        let _etcd = Etcd::start(&net);
        let _a = net.host("a");
        panic!("deliberate panic to test teardown");
    }));
    assert!(result.is_err());
    assert!(!id.is_empty());
    assert_eq!(namespaces_with(&id), Vec::<String>::new());
}

#[test]
fn agent_opts_render_defaults_and_overrides() {
    let opts = AgentOpts::new()
        .lease_ttl("2s")
        .set("proxy", "max_connections", "10")
        .unset("log", "level")
        .extra_toml("[tracing]\nsample_ratio = 1.0");
    let text = opts.render();
    assert!(
        text.contains("[etcd]\nlease_ttl = \"2s\"\nprefix = \"/hostmesh\"\n"),
        "{text}"
    );
    assert!(text.contains("max_connections = 10\n"), "{text}");
    assert!(!text.contains("[log]"), "{text}");
    assert!(text.ends_with("[tracing]\nsample_ratio = 1.0\n"), "{text}");
    assert_eq!(hostmesh_tests::toml_str("a\"b\\c"), r#""a\"b\\c""#);
}

#[test]
fn hostmesh_binary_is_built() {
    // Runs `cargo build -p hostmesh` from inside the test: proves the nested build works.
    let bin = hostmesh_tests::hostmesh_bin();
    assert!(bin.is_file(), "{}", bin.display());
    assert!(bin.ends_with("hostmesh"), "{}", bin.display());
}

/// The Agent wrapper, driven against a python stand-in (so this tests the harness, not the agent).
#[test]
fn agent_wrapper_drives_a_stand_in_agent() {
    use std::os::unix::fs::PermissionsExt;

    let net = Net::new();
    let etcd = Etcd::start(&net);
    let a = net.host("a");
    let dir = tempfile::tempdir().expect("tempdir");
    let bin = dir.path().join("stand-in-agent");
    std::fs::write(&bin, include_str!("stand_in_agent.py")).expect("write stand-in");
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).expect("chmod");

    let opts = AgentOpts::new()
        .bin(&bin)
        .service("web-1", "name = \"web\"\nport = 8080\n");
    let mut agent = Agent::start(&a, &etcd, opts);
    agent.wait_ready(Duration::from_secs(10));
    let config = std::fs::read_to_string(agent.config_path()).expect("config");
    assert!(config.contains("host = \"a\"\n"), "{config}");
    assert!(
        config.contains(&format!("endpoints = [\"{}\"]", etcd.endpoint())),
        "{config}"
    );
    assert!(
        config.contains(&format!("advertise_address = \"{}\"", a.addr())),
        "{config}"
    );

    let status = agent.status();
    assert_eq!(status["host"], "a");
    assert_eq!(status["services"], serde_json::json!(["web-1.toml"]));
    // The pid we signal is the program's, not `ip`'s.
    assert_eq!(status["pid"], agent.pid().expect("running"));
    assert!(agent.metrics().contains("hostmesh_registry_connected 1"));
    assert_eq!(agent.admin_get("/nope").0, 404);

    agent.write_service("api-1", "name = \"api\"\nport = 9090\n");
    agent.remove_service("web-1");
    agent.signal(Signal::Hup);
    wait_until(Duration::from_secs(5), "the reload to be logged", || {
        agent.log().contains("reloaded")
    });
    assert_eq!(
        agent.status()["services"],
        serde_json::json!(["api-1.toml"])
    );

    agent.signal(Signal::Term);
    let st = agent
        .wait_exit(Duration::from_secs(5))
        .expect("exits on SIGTERM");
    assert!(st.success(), "{st}");
    assert!(!agent.is_ready());

    agent.restart();
    agent.wait_ready(Duration::from_secs(10));
    assert!(agent.log().contains("restarting the agent"));
    let out = agent.run_cli(&["--version"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("stand-in"));
}
