#![allow(clippy::unwrap_used, reason = "tests")]

use std::fs;
use std::net::SocketAddr;
use std::path::Path;

use super::*;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn strings(texts: &[&str]) -> Vec<String> {
    texts.iter().map(|t| (*t).to_owned()).collect()
}

#[test]
fn resolved_drop_in_routes_only_the_mesh_domain() {
    let text = Resolver::Resolved.drop_in_text(addr("127.0.0.1:53"), &["mesh"]);
    assert!(
        text.contains("[Resolve]\nDNS=127.0.0.1\nDomains=~mesh\n"),
        "{text}"
    );
    // Another port is written the way resolved.conf takes it.
    let text = Resolver::Resolved.drop_in_text(addr("127.0.0.2:8600"), &["corp"]);
    assert!(
        text.contains("DNS=127.0.0.2:8600\nDomains=~corp\n"),
        "{text}"
    );
    let text = Resolver::Resolved.drop_in_text(addr("[::1]:5353"), &["mesh"]);
    assert!(text.contains("DNS=[::1]:5353\n"), "{text}");
}

#[test]
fn dnsmasq_drop_in_is_one_server_line_for_the_domain() {
    let text = Resolver::Dnsmasq.drop_in_text(addr("127.0.0.1:53"), &["mesh"]);
    let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(lines, ["server=/mesh/127.0.0.1#53"]);
}

#[test]
fn unbound_drop_in_is_a_forward_zone_for_the_domain() {
    let text = Resolver::Unbound.drop_in_text(addr("127.0.0.1:8600"), &["mesh"]);
    for want in [
        "server:\n",
        "do-not-query-localhost: no\n",
        "domain-insecure: \"mesh.\"\n",
        "forward-zone:\n    name: \"mesh.\"\n    forward-addr: 127.0.0.1@8600\n",
    ] {
        assert!(text.contains(want), "missing {want:?} in {text}");
    }
}

#[test]
fn with_consul_names_every_drop_in_routes_the_consul_domain_too() {
    let shim = addr("127.0.0.1:53");
    let domains = ["mesh", "consul"];
    let text = Resolver::Resolved.drop_in_text(shim, &domains);
    assert!(
        text.contains("DNS=127.0.0.1\nDomains=~mesh ~consul\n"),
        "{text}"
    );
    let text = Resolver::Dnsmasq.drop_in_text(shim, &domains);
    let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(lines, ["server=/mesh/consul/127.0.0.1#53"]);
    let text = Resolver::Unbound.drop_in_text(shim, &domains);
    for domain in domains {
        for want in [
            format!("domain-insecure: \"{domain}.\"\n"),
            format!("forward-zone:\n    name: \"{domain}.\"\n    forward-addr: 127.0.0.1@53\n"),
        ] {
            assert!(text.contains(&want), "missing {want:?} in {text}");
        }
    }
    // Still exactly one `server:` clause.
    assert_eq!(text.matches("server:").count(), 1, "{text}");
}

#[test]
fn every_drop_in_says_who_wrote_it() {
    for r in Resolver::ALL {
        let text = r.drop_in_text(addr("127.0.0.1:53"), &["mesh"]);
        assert!(
            text.starts_with("# Written by `hostmesh dns enable`"),
            "{r}: {text}"
        );
    }
}

/// A tree with the files that make each resolver count as installed.
fn tree_with(resolvers: &[Resolver]) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let touch = |p: &str| {
        let path = root.path().join(p);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, "").unwrap();
    };
    for r in resolvers {
        match r {
            Resolver::Resolved => touch("usr/lib/systemd/systemd-resolved"),
            Resolver::Dnsmasq => {
                touch("usr/sbin/dnsmasq");
                fs::create_dir_all(root.path().join("etc/dnsmasq.d")).unwrap();
            }
            Resolver::Unbound => {
                touch("usr/sbin/unbound");
                fs::create_dir_all(root.path().join("etc/unbound/unbound.conf.d")).unwrap();
            }
        }
    }
    root
}

fn installed(root: &Path) -> Vec<Resolver> {
    Resolver::ALL
        .into_iter()
        .filter(|r| r.installed(root))
        .collect()
}

#[test]
fn detection_finds_what_is_installed() {
    assert_eq!(installed(tree_with(&[]).path()), []);
    for r in Resolver::ALL {
        assert_eq!(installed(tree_with(&[r]).path()), [r]);
    }
    let all = tree_with(&Resolver::ALL);
    assert_eq!(installed(all.path()), Resolver::ALL);
}

#[test]
fn dnsmasq_base_without_its_conf_dir_does_not_count() {
    let root = tree_with(&[]);
    fs::create_dir_all(root.path().join("usr/sbin")).unwrap();
    fs::write(root.path().join("usr/sbin/dnsmasq"), "").unwrap();
    assert_eq!(installed(root.path()), []);
}

#[test]
fn unbound_drop_in_follows_the_distribution_layout() {
    let debian = tree_with(&[Resolver::Unbound]);
    assert!(
        Resolver::Unbound
            .drop_in(debian.path())
            .ends_with("etc/unbound/unbound.conf.d/hostmesh.conf")
    );
    let el = tree_with(&[]);
    fs::create_dir_all(el.path().join("etc/unbound/conf.d")).unwrap();
    assert!(
        Resolver::Unbound
            .drop_in(el.path())
            .ends_with("etc/unbound/conf.d/hostmesh.conf")
    );
}

#[test]
fn choose_takes_the_one_running_or_says_why_not() {
    use Resolver::*;
    assert_eq!(choose(&[Dnsmasq], None), Ok(Dnsmasq));
    assert_eq!(choose(&[Resolved, Unbound], Some(&[Unbound])), Ok(Unbound));
    let none = choose(&[], None).unwrap_err();
    assert!(none.contains("no supported resolver recognised"), "{none}");
    let stopped = choose(&[Unbound], Some(&[])).unwrap_err();
    assert!(
        stopped.contains("installed but not running: unbound"),
        "{stopped}"
    );
    let several = choose(&[Resolved, Dnsmasq], None).unwrap_err();
    assert!(
        several.contains("several resolvers found (systemd-resolved, dnsmasq)"),
        "{several}"
    );
}

#[test]
fn resolv_conf_nameservers_are_read_like_the_shim_reads_them() {
    let text =
        "# generated\nsearch example.org\nnameserver 127.0.0.53\nnameserver ::1\noptions edns0\n";
    assert_eq!(
        resolv_conf_servers(text),
        [addr("127.0.0.53:53"), addr("[::1]:53")]
    );
}

#[test]
fn forwarding_only_the_mesh_domain_is_never_a_loop() {
    let shim = addr("127.0.0.1:53");
    // resolved forwards ~mesh to us and the shim's upstream is resolved's stub: fine (the
    // default on a resolved host, docs/packaging.md).
    let resolved = strings(&["[Resolve]\nDNS=127.0.0.1\nDomains=~mesh\n"]);
    let stub = [addr("127.0.0.53:53")];
    assert_eq!(
        loop_problem(Resolver::Resolved, shim, &stub, &resolved),
        None
    );
    let dnsmasq = strings(&["server=/mesh/127.0.0.1#53\nserver=1.1.1.1\n"]);
    assert_eq!(
        loop_problem(
            Resolver::Dnsmasq,
            addr("127.0.0.2:53"),
            &[addr("127.0.0.1:53")],
            &dnsmasq
        ),
        None
    );
}

#[test]
fn a_resolver_that_sends_everything_to_the_shim_and_back_is_a_loop() {
    let shim = addr("127.0.0.2:53");
    let to_resolver = [addr("127.0.0.1:53")];
    let cases = [
        (Resolver::Dnsmasq, "no-resolv\nserver=127.0.0.2\n"),
        (Resolver::Dnsmasq, "server=127.0.0.2#53\n"),
        (
            Resolver::Unbound,
            "forward-zone:\n  name: \".\"\n  forward-addr: 127.0.0.2@53\n",
        ),
        (Resolver::Resolved, "[Resolve]\nDNS=127.0.0.2\nDomains=~.\n"),
    ];
    for (resolver, text) in cases {
        let upstream: &[SocketAddr] = if resolver == Resolver::Resolved {
            &[addr("127.0.0.53:53")]
        } else {
            &to_resolver
        };
        let problem = loop_problem(resolver, shim, upstream, &strings(&[text]))
            .unwrap_or_else(|| panic!("{resolver}: no loop found in {text:?}"));
        assert!(problem.starts_with("refusing to enable"), "{problem}");
        assert!(problem.contains(&resolver.to_string()), "{problem}");
        // The same catch-all is fine when the shim's upstream is elsewhere.
        let elsewhere = [addr("192.0.2.1:53")];
        assert_eq!(
            loop_problem(resolver, shim, &elsewhere, &strings(&[text])),
            None,
            "{resolver}"
        );
    }
}

#[test]
fn catch_alls_for_other_servers_or_other_zones_are_not_loops() {
    let shim = addr("127.0.0.2:53");
    let back = [addr("127.0.0.1:53")];
    let unbound = "forward-zone:\n  name: \"example.\"\n  forward-addr: 127.0.0.2\nforward-zone:\n  name: \".\"\n  forward-addr: 9.9.9.9\n";
    assert_eq!(
        loop_problem(Resolver::Unbound, shim, &back, &strings(&[unbound])),
        None
    );
    let dnsmasq = "server=/corp/127.0.0.2\nserver=9.9.9.9 # upstream\n#server=127.0.0.2\n";
    assert_eq!(
        loop_problem(Resolver::Dnsmasq, shim, &back, &strings(&[dnsmasq])),
        None
    );
}

/// An agent config for the command, with a valid host and no TLS files.
fn config_in(root: &Path, dns: &str) -> PathBuf {
    let services = root.join("etc/hostmesh/services.d");
    fs::create_dir_all(&services).unwrap();
    let path = root.join("etc/hostmesh/agent.toml");
    fs::write(
        &path,
        format!(
            "[agent]\nhost = \"t1\"\nservices_dir = \"{}\"\n[tls]\nmode = \"disabled\"\n[dns]\n{dns}\n",
            services.display()
        ),
    )
    .unwrap();
    path
}

fn run_in(root: &Path, action: Action) -> Result<(), CliError> {
    run(DnsArgs {
        action,
        root: Some(root.to_owned()),
    })
}

fn enable() -> Action {
    Action::Enable {
        config: None,
        resolver: None,
    }
}

#[test]
fn enable_writes_the_drop_in_once_and_disable_removes_it() {
    let root = tree_with(&[Resolver::Dnsmasq]);
    config_in(
        root.path(),
        "listen = \"127.0.0.1:5353\"\ndomain = \"corp\"",
    );
    let path = root.path().join("etc/dnsmasq.d/hostmesh.conf");

    run_in(root.path(), enable()).unwrap();
    let text = fs::read_to_string(&path).unwrap();
    assert!(text.contains("server=/corp/127.0.0.1#5353\n"), "{text}");
    let mode = fs::metadata(&path).unwrap().permissions();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(mode.mode() & 0o777, 0o644);

    // Idempotent: the second run leaves the file as it is.
    let before = fs::metadata(&path).unwrap().modified().unwrap();
    run_in(root.path(), enable()).unwrap();
    assert_eq!(fs::metadata(&path).unwrap().modified().unwrap(), before);

    run_in(root.path(), Action::Disable).unwrap();
    assert!(!path.exists());
    run_in(root.path(), Action::Disable).unwrap();
    // Nothing else was left behind (no temporary files).
    let left: Vec<_> = fs::read_dir(root.path().join("etc/dnsmasq.d"))
        .unwrap()
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn enable_creates_resolveds_drop_in_directory_and_never_touches_resolv_conf() {
    let root = tree_with(&[Resolver::Resolved]);
    config_in(root.path(), "");
    fs::write(
        root.path().join("etc/resolv.conf"),
        "nameserver 127.0.0.53\n",
    )
    .unwrap();
    run_in(root.path(), enable()).unwrap();
    let text = fs::read_to_string(
        root.path()
            .join("etc/systemd/resolved.conf.d/hostmesh.conf"),
    )
    .unwrap();
    assert!(text.contains("DNS=127.0.0.1\nDomains=~mesh\n"), "{text}");
    assert_eq!(
        fs::read_to_string(root.path().join("etc/resolv.conf")).unwrap(),
        "nameserver 127.0.0.53\n"
    );
}

#[test]
fn enable_adds_the_consul_domain_only_when_consul_names_are_on() {
    let root = tree_with(&[Resolver::Resolved]);
    let path = root
        .path()
        .join("etc/systemd/resolved.conf.d/hostmesh.conf");
    config_in(root.path(), "consul = false");
    run_in(root.path(), enable()).unwrap();
    let text = fs::read_to_string(&path).unwrap();
    assert!(text.contains("\nDomains=~mesh\n"), "{text}");

    // Turning them on and enabling again rewrites the drop-in; off again takes consul out.
    config_in(root.path(), "consul = true");
    run_in(root.path(), enable()).unwrap();
    let text = fs::read_to_string(&path).unwrap();
    assert!(text.contains("\nDomains=~mesh ~consul\n"), "{text}");
    config_in(root.path(), "");
    run_in(root.path(), enable()).unwrap();
    let text = fs::read_to_string(&path).unwrap();
    assert!(text.contains("\nDomains=~mesh\n"), "{text}");
}

#[test]
fn enable_refuses_a_loop_with_exit_2() {
    let root = tree_with(&[Resolver::Dnsmasq]);
    config_in(
        root.path(),
        "listen = \"127.0.0.2:53\"\nupstream = [\"system\"]",
    );
    fs::write(
        root.path().join("etc/resolv.conf"),
        "nameserver 127.0.0.1\n",
    )
    .unwrap();
    fs::write(root.path().join("etc/dnsmasq.conf"), "server=127.0.0.2\n").unwrap();
    let err = run_in(root.path(), enable()).unwrap_err();
    assert!(matches!(err, CliError::Usage(_)), "{err:?}");
    assert!(err.to_string().contains("loop"), "{err}");
    assert!(!root.path().join("etc/dnsmasq.d/hostmesh.conf").exists());
}

#[test]
fn enable_without_a_known_resolver_fails_with_exit_1() {
    let root = tree_with(&[]);
    config_in(root.path(), "");
    let err = run_in(root.path(), enable()).unwrap_err();
    assert!(matches!(err, CliError::Runtime(_)), "{err:?}");
    assert!(
        err.to_string().contains("no supported resolver recognised"),
        "{err}"
    );
}

#[test]
fn enable_with_a_bad_config_names_the_problem() {
    let root = tree_with(&[Resolver::Dnsmasq]);
    config_in(root.path(), "listen = \"nowhere\"");
    let err = run_in(root.path(), enable()).unwrap_err();
    assert!(matches!(err, CliError::Usage(_)), "{err:?}");
    assert!(err.to_string().contains("dns.listen"), "{err}");
    let missing = tree_with(&[Resolver::Dnsmasq]);
    let err = run_in(missing.path(), enable()).unwrap_err();
    assert!(err.to_string().contains("cannot read"), "{err}");
}

#[test]
fn resolver_flag_overrides_detection() {
    let root = tree_with(&[Resolver::Dnsmasq, Resolver::Unbound]);
    config_in(root.path(), "");
    let err = run_in(root.path(), enable()).unwrap_err();
    assert!(err.to_string().contains("several resolvers"), "{err}");
    run_in(
        root.path(),
        Action::Enable {
            config: None,
            resolver: Some(Resolver::Unbound),
        },
    )
    .unwrap();
    assert!(
        root.path()
            .join("etc/unbound/unbound.conf.d/hostmesh.conf")
            .exists()
    );
}

#[test]
fn a_root_that_is_not_a_directory_is_a_usage_error() {
    let err = run_in(Path::new("/nonexistent/hostmesh-root"), Action::Disable).unwrap_err();
    assert!(matches!(err, CliError::Usage(_)), "{err:?}");
}
