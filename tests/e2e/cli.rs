//! The command line as an operator drives it: client commands against a real etcd and agent,
//! `check-config` and the agent's own refusal of bad input, exit codes, and `hostmesh dev`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use hostmesh_tests::{
    Agent, AgentOpts, Backend, Etcd, Net, Signal, hostmesh_bin, run, wait_for, wait_until,
};

fn hostmesh(args: &[&str]) -> Output {
    let mut cmd = Command::new(hostmesh_bin());
    cmd.args(args);
    run(cmd, Duration::from_secs(30))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn columns(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

#[test]
fn endpoints_shows_each_instance_with_specs_columns() {
    let net = Net::new();
    let etcd = Etcd::start(&net);
    let b_host = net.host("b");
    let mut b = Agent::start(
        &b_host,
        &etcd,
        AgentOpts::new().service(
            "orders-1",
            "name = \"orders\"\nport = 8080\ntags = [\"v2\", \"eu\"]\n",
        ),
    );
    b.wait_ready(Duration::from_secs(15));
    let mut a = Agent::start(&net.host("a"), &etcd, AgentOpts::new());
    a.wait_ready(Duration::from_secs(15));
    let endpoint = etcd.endpoint();
    let out = wait_for(Duration::from_secs(5), "orders listed", || {
        let out = a.run_cli(&["endpoints", "orders", "--etcd", &endpoint]);
        out.status.success().then_some(out)
    });
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        columns(lines[0]),
        [
            "HOST", "ADDRESS", "PORT", "HEALTH", "TAGS", "EWMA", "INFLIGHT", "BREAKER", "LOCKED"
        ]
    );
    let addr = b_host.addr().to_string();
    let row = columns(lines[1]);
    assert_eq!(row[..5], ["b", addr.as_str(), "8080", "passing", "v2,eu"]);
    // A's agent keeps no state for a service its apps have not called; b has no lockdown.
    assert_eq!(row[5..], ["-", "-", "-", "-"], "{}", lines[1]);

    // Once a's app calls orders (no app answers on b: any status does), the last three columns
    // come from A's agent (on the default admin address): its latency estimate, in-flight count
    // and breaker state for b.
    let _ = a.host().curl("http://orders.mesh:8080/");
    let out = a.run_cli(&["endpoints", "orders", "--etcd", &endpoint]);
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    let row = columns(lines[1]);
    assert_eq!(row[..5], ["b", addr.as_str(), "8080", "passing", "v2,eu"]);
    assert!(
        row[5]
            .strip_suffix("ms")
            .is_some_and(|v| v.parse::<f64>().is_ok()),
        "EWMA: {}",
        lines[1]
    );
    assert_eq!(row[6..], ["0", "closed", "-"]);
    // Without an agent to ask, the live columns are "-".
    let out = a.run_cli(&[
        "endpoints",
        "orders",
        "--etcd",
        &endpoint,
        "--admin",
        "127.0.0.1:1",
    ]);
    assert_eq!(
        columns(text(&out.stdout).lines().nth(1).unwrap_or_default())[5..8],
        ["-", "-", "-"]
    );
    let out = a.run_cli(&["endpoints", "orders", "--etcd", &endpoint, "--json"]);
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(rows[0]["host"], "b");
    assert_eq!(rows[0]["address"], addr);
    assert_eq!(rows[0]["tags"], serde_json::json!(["v2", "eu"]));
    assert_eq!(rows[0]["locked"], false);

    let out = a.run_cli(&["endpoints", "nosuch", "--etcd", &endpoint]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("not found"),
        "{}",
        text(&out.stderr)
    );

    // Defaults come from --config: the agent's own file names etcd.
    let config = a.config_path().to_string_lossy().into_owned();
    let out = a.run_cli(&["services", "--config", &config]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("orders"));
}

#[test]
fn client_commands_give_up_when_etcd_does_not_answer() {
    let net = Net::new();
    let etcd = Etcd::start(&net);
    let a = net.host("a");
    a.cut_from(etcd.addr());
    // Located (and possibly built) before the clock starts.
    let bin = hostmesh_bin();
    let started = Instant::now();
    let out = a.run(
        bin.to_str().expect("utf-8 path"),
        &["services", "--etcd", &etcd.endpoint(), "--timeout", "1s"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains(&etcd.endpoint()),
        "{}",
        text(&out.stderr)
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn check_config_reports_every_problem_with_file_and_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let services = dir.path().join("services.d");
    std::fs::create_dir(&services).expect("services dir");
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nhost = \"web-01\"\nservices_dir = \"{}\"\ndrain = \"soon\"\n\
             [etcd]\nlease_ttl = \"1s\"\nbogus = 1\n[tls]\nmode = \"disabled\"\n",
            services.display()
        ),
    )
    .expect("config");
    let bad_service = services.join("orders-1.toml");
    std::fs::write(&bad_service, "name = \"Orders\"\nport = 70000\n").expect("service");

    let out = hostmesh(&["check-config", "--config", config.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    let c = config.display().to_string();
    let s = bad_service.display().to_string();
    for needle in [
        format!("{c}: agent.drain:"),
        format!("{c}: etcd.lease_ttl:"),
        format!("{c}: etcd.bogus:"),
        format!("{s}: name:"),
        format!("{s}: port:"),
    ] {
        assert!(err.contains(&needle), "missing {needle:?} in:\n{err}");
    }
    // The agent refuses the same file at start, listing the same problems.
    let out = hostmesh(&["agent", "--config", config.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains(&format!("{s}: port:")));

    // One service file, as ansible's `validate:` calls it.
    let out = hostmesh(&[
        "check-config",
        "--service",
        bad_service.to_str().expect("utf-8"),
    ]);
    assert_eq!(out.status.code(), Some(2));
    std::fs::write(&bad_service, "name = \"orders\"\nport = 8080\n").expect("service");
    let out = hostmesh(&[
        "check-config",
        "--service",
        bad_service.to_str().expect("utf-8"),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // mTLS (the default) without its files: refused with each file named, never a plaintext
    // fallback.
    std::fs::write(
        &config,
        "[agent]\nhost = \"web-01\"\n[tls]\nmode = \"mtls\"\n",
    )
    .expect("config");
    let out = hostmesh(&["check-config", "--config", config.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    for key in ["tls.ca_file", "tls.cert_file", "tls.key_file"] {
        assert!(stderr.contains(key), "{stderr}");
    }
}

/// Issue 14, finding 6: values `check-config` used to accept that crashed (a semaphore panic,
/// an `Instant` overflow in a data path thread) or bloated the agent are refused, each named,
/// by `check-config` and by the agent at start (exit 2, never a panic's 101).
#[test]
fn out_of_range_settings_are_refused_not_crashed_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let services = dir.path().join("services.d");
    std::fs::create_dir(&services).expect("services dir");
    let not_a_dir = dir.path().join("state-file");
    std::fs::write(&not_a_dir, "").expect("file");
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nhost = \"web-01\"\nservices_dir = \"{}\"\ndata_dir = \"{}\"\n\
             [proxy]\nmax_connections = 9223372036854775807\nmax_headers = 1000000000000\n\
             max_header_bytes = 1000000000000\nrequest_timeout = \"18446744073709551615s\"\n\
             header_read_timeout = \"18446744073709551615s\"\nidle_timeout = \"400days\"\n\
             [tls]\nmode = \"disabled\"\n",
            services.display(),
            not_a_dir.display()
        ),
    )
    .expect("config");
    let keys = [
        "agent.data_dir",
        "proxy.max_connections",
        "proxy.max_headers",
        "proxy.max_header_bytes",
        "proxy.request_timeout",
        "proxy.header_read_timeout",
        "proxy.idle_timeout",
    ];
    for command in ["check-config", "agent"] {
        let out = hostmesh(&[command, "--config", config.to_str().expect("utf-8")]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{command}: {err}");
        for key in keys {
            assert!(
                err.contains(&format!(": {key}:")),
                "{command}: no {key} in:\n{err}"
            );
        }
        assert!(!err.contains("panicked"), "{err}");
    }
}

/// Issue 18: `hostmesh import consul` as a migration runs it on a host. JSON and HCL definitions
/// with checks and tags go into the agent's services_dir (taken from its `--config`), pass
/// `check-config`, and once the agent reloads the imported service answers through the mesh.
/// `--dry-run` writes nothing, an existing file needs `--force`, a name hostmesh cannot serve is
/// refused with the nearest valid one, and the exit codes say so.
#[test]
fn import_consul_definitions_become_working_services() {
    let net = Net::new();
    let etcd = Etcd::start(&net);
    let a_host = net.host("a");
    let b_host = net.host("b");
    let _app = Backend::http(&b_host, 18080, "hello from b\n");
    let mut b = Agent::start(&b_host, &etcd, AgentOpts::new());
    b.wait_ready(Duration::from_secs(15));
    let mut a = Agent::start(&a_host, &etcd, AgentOpts::new());
    a.wait_ready(Duration::from_secs(15));

    let consul = tempfile::tempdir().expect("tempdir");
    let file = |name: &str, text: &str| {
        let path = consul.path().join(name);
        std::fs::write(&path, text).expect("consul file");
        path.to_str().expect("utf-8").to_owned()
    };
    let json = file(
        "web.json",
        r#"{"service": {"name": "web", "id": "web-1", "port": 18080, "tags": ["v1"],
            "meta": {"protocol": "http", "team": "storefront"},
            "check": {"http": "http://localhost:18080/healthz", "interval": "1s",
                      "timeout": "500ms", "header": {"X-Probe": ["1"]}}}}"#,
    );
    let hcl = file(
        "cache.hcl",
        "services {\n  name = \"cache\"\n  port = 6379\n  meta = { protocol = \"tcp\" }\n  \
         check {\n    tcp = \"127.0.0.1:6379\"\n    interval = \"10s\"\n  }\n}\n",
    );
    let config = b.config_path().to_str().expect("utf-8").to_owned();
    let services = b.services_dir().to_owned();
    let import = |extra: &[&str]| {
        let mut args = vec!["import", "consul", json.as_str(), hcl.as_str(), "--config"];
        args.push(&config);
        args.extend_from_slice(extra);
        b.run_cli(&args)
    };

    let out = import(&["--dry-run"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("name = \"web\""),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(
        std::fs::read_dir(&services).expect("services dir").count(),
        0,
        "--dry-run writes nothing"
    );

    let out = import(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let web = services.join("web-1.toml");
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(&format!("{}: written", web.display())),
        "{stdout}"
    );
    assert!(stdout.contains("cache.toml: written"), "{stdout}");
    let stderr = text(&out.stderr);
    for field in ["meta.team: not mapped", "check.header: not mapped"] {
        assert!(
            stderr.contains(&format!("web.json: service \"web\": {field}")),
            "{stderr}"
        );
    }
    let out = b.run_cli(&["check-config", "--config", &config]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("ok (2 service definitions)"));

    // Never over an existing file without --force: exit 1, naming it.
    let out = import(&[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains(&format!(
            "{} already exists; pass --force to replace it",
            web.display()
        )),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(import(&["--force"]).status.code(), Some(0));

    let bad = file(
        "bad.json",
        r#"{"service": {"name": "Web_API", "port": 80}}"#,
    );
    let out = b.run_cli(&["import", "consul", &bad, "--config", &config]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("the nearest valid name is \"web-api\""),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(b.run_cli(&["import", "consul"]).status.code(), Some(2));

    // The agent picks the imported files up on SIGHUP; callers on another host reach the app.
    b.signal(Signal::Hup);
    wait_until(
        Duration::from_secs(20),
        "web answers through the mesh",
        || {
            a.host()
                .curl("http://web.mesh:18080/")
                .is_ok_and(|(code, body)| code == 200 && body.starts_with("hello from b"))
        },
    );
}

#[test]
fn usage_errors_exit_2_and_every_command_has_help() {
    let out = hostmesh(&["--version"]);
    assert!(out.status.success());
    assert!(text(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
    for cmd in [
        "agent",
        "dev",
        "check-config",
        "services",
        "endpoints",
        "import",
    ] {
        let out = hostmesh(&[cmd, "--help"]);
        assert!(out.status.success(), "{cmd} --help");
    }
    assert_eq!(
        hostmesh(&["services", "--no-such-flag"]).status.code(),
        Some(2)
    );
    assert_eq!(hostmesh(&["check-config"]).status.code(), Some(2));
    assert_eq!(hostmesh(&["frobnicate"]).status.code(), Some(2));
}

/// `hostmesh dev` as the README tells a newcomer to run it: it prints commands that work, and
/// Ctrl-C stops everything and removes its temp dir.
#[test]
fn dev_runs_a_private_mesh_and_cleans_up() {
    let net = Net::new();
    let host = net.host("laptop");
    let mut child = host
        .cmd(hostmesh_bin())
        .arg("dev")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("hostmesh dev starts");
    let guard = KillOnDrop(child.id());
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut printed = Vec::new();
    for line in lines.by_ref() {
        let line = line.expect("a line");
        // The last line of the instructions.
        let done = line.contains("/metrics");
        printed.push(line);
        if done {
            break;
        }
    }
    let find = |prefix: &str| {
        printed
            .iter()
            .map(|l| l.trim())
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} line in:\n{}", printed.join("\n")))
            .to_owned()
    };
    let services_cmd = find("hostmesh services");
    let tmp = printed
        .iter()
        .find_map(|l| l.split("removes ").nth(1))
        .map(|s| s.trim_end_matches(')').to_owned())
        .expect("the temp dir is named");
    let args: Vec<&str> = services_cmd.split_whitespace().skip(1).collect();
    let bin = hostmesh_bin();
    let bin = bin.to_str().expect("utf-8");
    wait_until(Duration::from_secs(10), "both demo services ready", || {
        let out = host.run(bin, &args);
        let t = text(&out.stdout);
        t.lines().filter(|l| l.ends_with("1/1")).count() == 2
    });
    // The printed curl line reaches the demo app through the mesh (VIP → agent → app).
    let curl_cmd = find("curl http://127.77.");
    let url = curl_cmd.split_whitespace().nth(1).expect("a URL");
    wait_until(
        Duration::from_secs(10),
        "the demo app answers through its VIP",
        || {
            host.curl(url)
                .is_ok_and(|(code, body)| code == 200 && body.starts_with("hello from web"))
        },
    );
    // The printed dig line answers with that VIP.
    let dig_cmd = find("dig @");
    let dig_args: Vec<&str> = dig_cmd.split_whitespace().skip(1).collect();
    let answer = host.dig(&dig_args);
    let vip = url
        .trim_start_matches("http://")
        .split(':')
        .next()
        .expect("the VIP");
    assert_eq!(answer.data("A"), [vip.to_owned()], "{}", answer.raw);
    let status_cmd = find("curl http://127.0.0.1");
    let url = status_cmd.split_whitespace().nth(1).expect("a URL");
    let (code, body) = host.curl(url).expect("the admin endpoint answers");
    assert_eq!(code, 200, "{body}");
    // Ctrl-C.
    host.run_ok("kill", &["-INT", &child.id().to_string()]);
    let status = wait_for(Duration::from_secs(10), "dev exits", || {
        child.try_wait().ok().flatten()
    });
    assert!(status.success(), "{status}");
    // Exited and reaped: nothing to kill, and the pid may be reused.
    std::mem::forget(guard);
    assert!(!std::path::Path::new(&tmp).exists(), "{tmp} removed");
}

struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", &self.0.to_string()])
            .status();
    }
}
