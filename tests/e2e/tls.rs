//! Mutual TLS between agents, end to end: the `hostmesh ca` commands, two hosts talking over
//! mTLS (HTTP and TCP), certificates that must be refused (checked against the real inbound port
//! with `openssl s_client` and, for a server with another host's identity, through an agent),
//! plain TCP reaching no app, and certificate rotation under load without a failed request.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hostmesh_tests::{
    Agent, AgentOpts, Backend, Etcd, Host, MeshCa, Net, Signal, hostmesh_cmd, require_tools,
    wait_for, wait_until,
};

const INBOUND_PORT: u16 = 4143;

/// Writes one (bad) host certificate's files into a directory.
type MakeCert<'a> = Box<dyn Fn(&Path) + 'a>;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn ca_commands_write_the_promised_files_and_refuse_overwrites() {
    require_tools();
    let tmp = tempfile::tempdir().expect("tmp");
    let ca = tmp.path().join("ca");
    let out = tmp.path().join("web-01");
    let (ca_s, out_s) = (ca.to_str().expect("utf-8"), out.to_str().expect("utf-8"));

    let r = hostmesh_cmd(&["ca", "init", "--dir", ca_s, "--trust-domain", "example.org"]);
    assert_eq!(r.status.code(), Some(0), "{}", text(&r.stderr));
    assert_eq!(mode(&ca.join("ca.key")), 0o600);
    assert!(ca.join("ca.pem").exists());
    let r = hostmesh_cmd(&["ca", "init", "--dir", ca_s]);
    assert_eq!(r.status.code(), Some(2));
    assert!(
        text(&r.stderr).contains("already exists"),
        "{}",
        text(&r.stderr)
    );

    let issue = |extra: &[&str]| {
        let mut args = vec![
            "ca", "issue", "--dir", ca_s, "--host", "web-01", "--out", out_s,
        ];
        args.extend_from_slice(extra);
        hostmesh_cmd(&args)
    };
    let r = issue(&[]);
    assert_eq!(r.status.code(), Some(0), "{}", text(&r.stderr));
    assert_eq!(mode(&out.join("host.key")), 0o640);
    assert_eq!(
        std::fs::read(out.join("ca.pem")).expect("ca copy"),
        std::fs::read(ca.join("ca.pem")).expect("ca")
    );
    let r = issue(&[]);
    assert_eq!(r.status.code(), Some(2), "no overwrite without --force");
    assert!(text(&r.stderr).contains("--force"), "{}", text(&r.stderr));
    let r = issue(&["--force", "--days", "30"]);
    assert_eq!(r.status.code(), Some(0), "{}", text(&r.stderr));
    for bad in [
        &["--days", "0", "--force"][..],
        &["--host", "Web_01", "--force"],
    ] {
        let r = issue(bad);
        assert_eq!(r.status.code(), Some(2), "{bad:?}");
    }
    let r = hostmesh_cmd(&["ca", "init", "--dir", out_s, "--trust-domain", "Bad Domain"]);
    assert_eq!(r.status.code(), Some(2));

    // What openssl sees: the identity, the DNS name, a leaf for both ends, chained to the CA.
    let host_pem = out.join("host.pem");
    let host_pem = host_pem.to_str().expect("utf-8");
    let x509 = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in", host_pem])
        .output()
        .expect("openssl");
    let x509 = text(&x509.stdout);
    assert!(
        x509.contains("URI:spiffe://example.org/host/web-01, DNS:web-01"),
        "{x509}"
    );
    assert!(x509.contains("CA:FALSE"), "{x509}");
    assert!(
        x509.contains("TLS Web Server Authentication, TLS Web Client Authentication"),
        "{x509}"
    );
    let verify = std::process::Command::new("openssl")
        .args([
            "verify",
            "-CAfile",
            ca.join("ca.pem").to_str().expect("utf-8"),
            host_pem,
        ])
        .output()
        .expect("openssl");
    assert!(verify.status.success(), "{}", text(&verify.stdout));
}

fn agent(host: &Host, etcd: &Etcd, opts: AgentOpts) -> Agent {
    let mut a = Agent::start(host, etcd, opts);
    a.wait_ready(Duration::from_secs(15));
    a
}

/// A host's TLS files, issued by `ca` with the real command.
pub(crate) fn issued(ca: &MeshCa, host: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tmp");
    ca.issue(host, dir.path());
    dir
}

const WEB: &str = "name = \"web\"\nport = 8080\ntarget = \"127.0.0.1:18080\"\n";
const RAW: &str = "name = \"raw\"\nport = 8081\ntarget = \"127.0.0.1:18081\"\nprotocol = \"tcp\"\n";

/// `curl` from `host`: the status, 0 when no HTTP answer came.
fn status(host: &Host, url: &str) -> u16 {
    host.curl_args(&["--max-time", "3", url])
        .map(|(code, _)| code)
        .unwrap_or(0)
}

/// `openssl s_client` from `from` to `to`'s inbound port presenting the files in `dir`; returns
/// its whole output. With `wait`, it keeps reading until the server closes (a TLS 1.3 server
/// refuses a client certificate after the client thinks the handshake is done).
fn s_client(from: &Host, to: &Host, dir: &Path, wait: bool) -> String {
    s_client_with(from, to, dir, "h2", wait)
}

/// [`s_client`] asking for ALPN `alpn`.
fn s_client_with(from: &Host, to: &Host, dir: &Path, alpn: &str, wait: bool) -> String {
    let f = |n: &str| dir.join(n).to_str().expect("utf-8").to_owned();
    let connect = format!("{}:{INBOUND_PORT}", to.addr());
    let (ca, cert, key) = (f("ca.pem"), f("host.pem"), f("host.key"));
    let mut args = vec![
        "10",
        "openssl",
        "s_client",
        "-connect",
        &connect,
        "-servername",
        to.name(),
        "-CAfile",
        &ca,
        "-cert",
        &cert,
        "-key",
        &key,
        "-alpn",
        alpn,
        "-tls1_3",
    ];
    if wait {
        args.push("-ign_eof");
    }
    let out = from.run("timeout", &args);
    format!("{}\n{}", text(&out.stdout), text(&out.stderr))
}

#[test]
fn two_hosts_talk_over_mtls_and_bad_peers_are_refused() {
    require_tools();
    let net = Net::new();
    let etcd = Etcd::start(&net);
    let (a, b, c) = (net.host("a"), net.host("b"), net.host("c"));
    let ca = MeshCa::new();
    let (files_a, files_b, files_c) = (issued(&ca, "a"), issued(&ca, "b"), issued(&ca, "c"));
    let web = Backend::http(&b, 18080, "hello from b\n");
    let _raw = Backend::http(&b, 18081, "raw from b\n");
    let agent_a = agent(&a, &etcd, AgentOpts::new().mtls(files_a.path()));
    let _agent_b = agent(
        &b,
        &etcd,
        AgentOpts::new()
            .mtls(files_b.path())
            .service("web-1", WEB)
            .service("raw-1", RAW),
    );
    let _agent_c = agent(&c, &etcd, AgentOpts::new().mtls(files_c.path()));

    // A server presenting another host's identity: a's connections to b are redirected to c's
    // agent, whose certificate is valid but says c. a must refuse it, not talk to c.
    let redirect = format!(
        "table ip mitm {{\n chain out {{\n  type nat hook output priority -100\n  \
         ip daddr {} tcp dport {INBOUND_PORT} dnat to {}:{INBOUND_PORT}\n }}\n}}\n",
        b.addr(),
        c.addr()
    );
    let rules = tempfile::NamedTempFile::new().expect("tmp");
    std::fs::write(rules.path(), &redirect).expect("rules");
    a.run_ok("nft", &["-f", rules.path().to_str().expect("utf-8")]);
    wait_until(Duration::from_secs(10), "a sees web.mesh", || {
        a.run("getent", &["hosts", "web.mesh"]).status.success()
    });
    wait_until(Duration::from_secs(10), "a refuses c posing as b", || {
        status(&a, "http://web.mesh:8080/") == 502
            && agent_a.log().contains("spiffe://hostmesh.local/host/c")
    });
    assert_eq!(
        web.request_count(),
        0,
        "nothing reached the app through the impostor"
    );
    a.run_ok("nft", &["delete", "table", "ip", "mitm"]);

    // The real b: HTTP over h2 and opaque TCP, both through mTLS.
    wait_until(Duration::from_secs(15), "HTTP through mTLS", || {
        status(&a, "http://web.mesh:8080/") == 200
    });
    let (code, body) = a.curl("http://raw.mesh:8081/").expect("curl over tcp");
    assert_eq!((code, body.as_str()), (200, "raw from b\n"));
    // The app is told the caller the certificate proved.
    let last = web.requests().pop().expect("a request reached b's app");
    assert_eq!(last["headers"]["x-hostmesh-caller"], "a", "{last}");

    // The expiry metric counts down from about a year.
    let metrics = agent_a.metrics();
    let expiry = metrics
        .lines()
        .find_map(|l| l.strip_prefix("hostmesh_cert_expiry_seconds "))
        .unwrap_or_else(|| panic!("no hostmesh_cert_expiry_seconds in:\n{metrics}"));
    let expiry: f64 = expiry.trim().parse().expect("a number");
    assert!(
        expiry > 364.0 * 86_400.0 && expiry <= 365.0 * 86_400.0,
        "{expiry}"
    );

    // openssl against b's inbound port: a good certificate gets h2; bad ones are refused.
    let good = s_client(&a, &b, files_a.path(), false);
    assert!(good.contains("ALPN protocol: h2"), "{good}");
    assert!(good.contains("Verify return code: 0"), "{good}");
    assert!(!good.contains("alert"), "{good}");
    let other_ca = MeshCa::new();
    let bad = tempfile::tempdir().expect("tmp");
    let cases: Vec<(&str, MakeCert)> = vec![
        ("another CA", Box::new(|d: &Path| other_ca.issue("a", d))),
        (
            "expired",
            Box::new(|d: &Path| {
                ca.issue_custom("a", d, |p| {
                    let now = time::OffsetDateTime::now_utc();
                    p.not_before = now - time::Duration::days(30);
                    p.not_after = now - time::Duration::days(1);
                })
            }),
        ),
        (
            "two URI SANs",
            Box::new(|d: &Path| {
                ca.issue_custom("a", d, |p| {
                    p.subject_alt_names.push(rcgen::SanType::URI(
                        "spiffe://hostmesh.local/host/b".try_into().expect("uri"),
                    ))
                })
            }),
        ),
        (
            "CA=true leaf",
            Box::new(|d: &Path| {
                ca.issue_custom("a", d, |p| {
                    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained)
                })
            }),
        ),
        (
            "no clientAuth",
            Box::new(|d: &Path| {
                ca.issue_custom("a", d, |p| {
                    p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth]
                })
            }),
        ),
    ];
    for (what, make) in &cases {
        make(bad.path());
        // The CA file s_client uses to check b is always the real one.
        std::fs::copy(ca.dir().join("ca.pem"), bad.path().join("ca.pem")).expect("ca");
        let out = s_client(&a, &b, bad.path(), true);
        assert!(out.contains("alert"), "{what}: not refused:\n{out}");
    }

    // Plain TCP (our own TCP preface, or HTTP/2 in the clear) reaches no app.
    let before = web.request_count();
    let probe = format!(
        "import socket\ns=socket.create_connection(('{}',{INBOUND_PORT}),timeout=5)\n\
         s.sendall(b'HOSTMESH-TCP/1 raw raw-1 1000\\n')\ntry:\n  print(repr(s.recv(100)))\n\
         except Exception as e:\n  print('error', e)\n",
        b.addr()
    );
    let got = a.run_ok("python3", &["-c", &probe]);
    assert!(!got.contains("OK"), "plain TCP got an answer: {got}");
    let h2c = a.curl_args(&[
        "--max-time",
        "3",
        "--http2-prior-knowledge",
        "-H",
        "x-hostmesh-dst: web/web-1",
        "-H",
        "x-hostmesh-v: 1",
        &format!("http://{}:{INBOUND_PORT}/", b.addr()),
    ]);
    assert!(
        h2c.is_err() || h2c.as_ref().is_ok_and(|(c, _)| *c == 0),
        "{h2c:?}"
    );
    assert_eq!(web.request_count(), before, "plaintext reached the app");
}

#[test]
fn agents_refuse_to_start_with_bad_tls_files() {
    require_tools();
    let net = Net::new();
    let etcd = Etcd::start(&net);
    let a = net.host("a");
    let ca = MeshCa::new();
    // Another host's certificate: exit 2, naming the file and both identities.
    let files = issued(&ca, "b");
    let mut agent = Agent::start(&a, &etcd, AgentOpts::new().mtls(files.path()));
    let exit = agent.wait_exit(Duration::from_secs(10)).expect("exits");
    assert_eq!(exit.code(), Some(2));
    let log = agent.log();
    assert!(
        log.contains("tls.cert_file") && log.contains("host/b"),
        "{log}"
    );
    // And check-config says the same.
    let out = agent.run_cli(&[
        "check-config",
        "--config",
        agent.config_path().to_str().expect("utf-8"),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("tls.cert_file"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn certificate_rotation_under_load_fails_no_request() {
    require_tools();
    let net = Net::new();
    let etcd = Etcd::start(&net);
    let (a, b) = (net.host("a"), net.host("b"));
    let ca = MeshCa::new();
    let (files_a, files_b) = (issued(&ca, "a"), issued(&ca, "b"));
    let _web = Backend::http(&b, 18080, "hello from b\n");
    let agent_a = agent(&a, &etcd, AgentOpts::new().mtls(files_a.path()));
    let agent_b = agent(
        &b,
        &etcd,
        AgentOpts::new().mtls(files_b.path()).service("web-1", WEB),
    );
    wait_until(Duration::from_secs(15), "HTTP through mTLS", || {
        status(&a, "http://web.mesh:8080/") == 200
    });

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let load = {
        let (a, stop, ok, failed) = (a.clone(), stop.clone(), ok.clone(), failed.clone());
        std::thread::spawn(move || {
            // Bounded: at most 2000 requests, and it stops when told.
            for _ in 0..2000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                if status(&a, "http://web.mesh:8080/") == 200 {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    wait_until(Duration::from_secs(10), "load is flowing", || {
        ok.load(Ordering::Relaxed) >= 10
    });
    // Re-issue both hosts' certificates (30 days, so the change shows in the metric) and tell
    // the agents with SIGHUP.
    for (files, host) in [(&files_a, "a"), (&files_b, "b")] {
        let out = hostmesh_cmd(&[
            "ca",
            "issue",
            "--dir",
            ca.dir().to_str().expect("utf-8"),
            "--host",
            host,
            "--out",
            files.path().to_str().expect("utf-8"),
            "--days",
            "30",
            "--force",
        ]);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    agent_a.signal(Signal::Hup);
    agent_b.signal(Signal::Hup);
    for agent in [&agent_a, &agent_b] {
        wait_for(
            Duration::from_secs(10),
            "the new certificate in use",
            || {
                let m = agent.metrics();
                let v: f64 = m
                    .lines()
                    .find_map(|l| l.strip_prefix("hostmesh_cert_expiry_seconds "))?
                    .trim()
                    .parse()
                    .ok()?;
                (v < 31.0 * 86_400.0).then_some(())
            },
        );
    }
    let after = ok.load(Ordering::Relaxed);
    wait_until(
        Duration::from_secs(10),
        "load goes on after the rotation",
        || ok.load(Ordering::Relaxed) >= after + 20,
    );
    stop.store(true, Ordering::Relaxed);
    load.join().expect("load thread");
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "requests failed during rotation"
    );
    assert!(agent_a.log().contains("TLS material reloaded"));
}

/// Issue 14, finding 8: a peer with a valid certificate that completes the handshake and then
/// sends nothing is closed within the sniff timeout (5 s), for either ALPN, instead of holding
/// a connection slot for as long as it likes.
#[test]
fn a_peer_that_says_nothing_after_the_handshake_is_closed() {
    require_tools();
    let net = Net::new();
    let etcd = Etcd::start(&net);
    let (a, b) = (net.host("a"), net.host("b"));
    let ca = MeshCa::new();
    let (files_a, files_b) = (issued(&ca, "a"), issued(&ca, "b"));
    let _agent_b = agent(&b, &etcd, AgentOpts::new().mtls(files_b.path()));
    for alpn in ["h2", "hostmesh-tcp/1"] {
        let started = Instant::now();
        // `timeout 10` would end a connection the agent never closes.
        let out = s_client_with(&a, &b, files_a.path(), alpn, true);
        let took = started.elapsed();
        assert!(
            out.contains(&format!("ALPN protocol: {alpn}")),
            "{alpn}: the handshake did not complete:\n{out}"
        );
        assert!(
            took < Duration::from_secs(9),
            "{alpn}: an idle peer stayed connected {took:?}:\n{out}"
        );
    }
}
