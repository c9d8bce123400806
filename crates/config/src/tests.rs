//! Tests across the module: malformed configs and service files (every problem with its file
//! and key), defaults, the hostname default, and loading directories.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::spec::{CheckKind, CheckSpec, InstanceSpec, Protocol};

use super::agent::parse_inner;
use super::*;

const CONFIG: &str = "/etc/hostmesh/agent.toml";
const ENV: &str = ENVIRONMENT;
/// What most cases pass, since a config without it is refused (mTLS is not implemented yet).
const TLS_OFF: Vars = &[("HOSTMESH_TLS__MODE", "disabled")];

/// (file, key) pairs: where problems are expected.
type Places = &'static [(&'static str, &'static str)];
/// Environment variables a case passes.
type Vars = &'static [(&'static str, &'static str)];

fn env(vars: &[(&str, &str)]) -> Vec<(String, String)> {
    vars.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn fixed_host() -> Result<String, String> {
    Ok("web-01".to_owned())
}

fn parse_config(text: &str, vars: &[(&str, &str)]) -> Result<AgentConfig, Problems> {
    parse_inner(text, Path::new(CONFIG), env(vars), &fixed_host).into_result()
}

fn places(problems: &Problems) -> Vec<(String, String)> {
    problems
        .0
        .iter()
        .map(|p| (p.file.display().to_string(), p.key.clone()))
        .collect()
}

fn owned(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected
        .iter()
        .map(|(f, k)| (f.to_string(), k.to_string()))
        .collect()
}

#[test]
fn malformed_configs() {
    #[rustfmt::skip]
    let cases: &[(&str, &str, Vars, Places)] = &[
        ("syntax error", "[etcd\nprefix = 1\n", TLS_OFF, &[(CONFIG, "")]),
        ("unknown section", "[etcdd]\nprefix = \"/x\"\n", TLS_OFF, &[(CONFIG, "etcdd")]),
        ("unknown key", "[etcd]\nlease_tll = \"5s\"\n", TLS_OFF, &[(CONFIG, "etcd.lease_tll")]),
        ("top-level key", "host = \"web-01\"\n", TLS_OFF, &[(CONFIG, "host")]),
        ("section not a table", "etcd = 5\n", TLS_OFF, &[(CONFIG, "etcd")]),
        ("integer as string", "[proxy]\nmax_connections = \"many\"\n", TLS_OFF, &[(CONFIG, "proxy.max_connections")]),
        ("zero integer", "[proxy]\nmax_headers = 0\n", TLS_OFF, &[(CONFIG, "proxy.max_headers")]),
        ("duration as integer", "[etcd]\nlease_ttl = 10\n", TLS_OFF, &[(CONFIG, "etcd.lease_ttl")]),
        ("bad duration", "[agent]\ndrain = \"5 parsecs\"\n", TLS_OFF, &[(CONFIG, "agent.drain")]),
        ("zero duration", "[proxy]\nconnect_timeout = \"0s\"\n", TLS_OFF, &[(CONFIG, "proxy.connect_timeout")]),
        ("lease under 2s", "[etcd]\nlease_ttl = \"1s\"\n", TLS_OFF, &[(CONFIG, "etcd.lease_ttl")]),
        ("lease not whole seconds", "[etcd]\nlease_ttl = \"2500ms\"\n", TLS_OFF, &[(CONFIG, "etcd.lease_ttl")]),
        ("vip range off loopback", "[dns]\nvip_range = \"10.0.0.0/16\"\n", TLS_OFF, &[(CONFIG, "dns.vip_range")]),
        ("vip range too small", "[dns]\nvip_range = \"127.77.0.0/31\"\n", TLS_OFF, &[(CONFIG, "dns.vip_range")]),
        ("vip range host bits", "[dns]\nvip_range = \"127.77.1.0/16\"\n", TLS_OFF, &[(CONFIG, "dns.vip_range")]),
        ("vip range not a network", "[dns]\nvip_range = \"loopback\"\n", TLS_OFF, &[(CONFIG, "dns.vip_range")]),
        ("two bad endpoints", "[etcd]\nendpoints = [\"127.0.0.1:2379\", \"http://a\", \"http://b:2379\"]\n", TLS_OFF,
            &[(CONFIG, "etcd.endpoints"), (CONFIG, "etcd.endpoints")]),
        ("no endpoints", "[etcd]\nendpoints = []\n", TLS_OFF, &[(CONFIG, "etcd.endpoints")]),
        ("endpoint twice", "[etcd]\nendpoints = [\"http://a:1\", \"http://a:1\"]\n", TLS_OFF, &[(CONFIG, "etcd.endpoints")]),
        ("endpoints not a list", "[etcd]\nendpoints = \"http://a:2379\"\n", TLS_OFF, &[(CONFIG, "etcd.endpoints")]),
        ("prefix trailing slash", "[etcd]\nprefix = \"/hostmesh/\"\n", TLS_OFF, &[(CONFIG, "etcd.prefix")]),
        ("prefix relative", "[etcd]\nprefix = \"hostmesh\"\n", TLS_OFF, &[(CONFIG, "etcd.prefix")]),
        ("prefix double slash", "[etcd]\nprefix = \"/a//b\"\n", TLS_OFF, &[(CONFIG, "etcd.prefix")]),
        ("cert without key", "[etcd]\ncert_file = \"/c.pem\"\n", TLS_OFF, &[(CONFIG, "etcd.cert_file")]),
        ("password without user", "[etcd]\npassword_file = \"/pw\"\n", TLS_OFF, &[(CONFIG, "etcd.password_file")]),
        ("bad domain", "[dns]\ndomain = \"Mesh.\"\n", TLS_OFF, &[(CONFIG, "dns.domain")]),
        ("consul over the mesh domain", "[dns]\ndomain = \"consul\"\nconsul = true\n", TLS_OFF, &[(CONFIG, "dns.domain")]),
        ("consul over a domain under it", "[dns]\ndomain = \"mesh.consul\"\nconsul = true\n", TLS_OFF, &[(CONFIG, "dns.domain")]),
        ("consul domain with consul names off", "[dns]\ndomain = \"consul\"\n", TLS_OFF, &[]),
        ("consul not a bool", "[dns]\nconsul = \"yes\"\n", TLS_OFF, &[(CONFIG, "dns.consul")]),
        ("dns ttl sub-second", "[dns]\nttl = \"1500ms\"\n", TLS_OFF, &[(CONFIG, "dns.ttl")]),
        ("bad upstream", "[dns]\nupstream = [\"system\", \"dns.google\", 53]\n", TLS_OFF,
            &[(CONFIG, "dns.upstream"), (CONFIG, "dns.upstream")]),
        ("upstream not a list", "[dns]\nupstream = \"system\"\n", TLS_OFF, &[(CONFIG, "dns.upstream")]),
        ("bad listen", "[dns]\nlisten = \"localhost:53\"\n", TLS_OFF, &[(CONFIG, "dns.listen")]),
        ("listeners clash", "[admin]\nlisten = \"127.0.0.1:4140\"\n", TLS_OFF, &[(CONFIG, "admin.listen")]),
        ("wildcard clash", "[proxy]\ninbound_listen = \"0.0.0.0:9190\"\n", TLS_OFF, &[(CONFIG, "admin.listen")]),
        ("listen inside vip range", "[dns]\nlisten = \"127.77.0.1:53\"\n", TLS_OFF, &[(CONFIG, "dns.listen")]),
        ("bad capture", "[proxy]\ncapture = \"iptables\"\n", TLS_OFF, &[(CONFIG, "proxy.capture")]),
        ("unknown tls mode", "[tls]\nmode = \"tls13\"\n", &[], &[(CONFIG, "tls.mode")]),
        ("empty tls path", "[tls]\nmode = \"disabled\"\nca_file = \"\"\n", &[], &[(CONFIG, "tls.ca_file")]),
        ("bad trust domain", "[tls]\nmode = \"disabled\"\ntrust_domain = \"Mesh Local\"\n", &[], &[(CONFIG, "tls.trust_domain")]),
        ("bad policy", "[policy]\ndefault = \"block\"\n", TLS_OFF, &[(CONFIG, "policy.default")]),
        ("bad log format", "[log]\nformat = \"xml\"\n", TLS_OFF, &[(CONFIG, "log.format")]),
        ("bad log level", "[log]\nlevel = \"verbose\"\n", TLS_OFF, &[(CONFIG, "log.level")]),
        ("bad log directive", "[log]\nlevel = \"hostmesh=loud\"\n", TLS_OFF, &[(CONFIG, "log.level")]),
        ("sample ratio above 1", "[tracing]\nsample_ratio = 1.5\n", TLS_OFF, &[(CONFIG, "tracing.sample_ratio")]),
        ("otlp not a url", "[tracing]\notlp_endpoint = \"collector:4317\"\n", TLS_OFF, &[(CONFIG, "tracing.otlp_endpoint")]),
        ("bad host", "[agent]\nhost = \"Web_01\"\n", TLS_OFF, &[(CONFIG, "agent.host")]),
        ("unspecified advertise", "[agent]\nadvertise_address = \"0.0.0.0\"\n", TLS_OFF, &[(CONFIG, "agent.advertise_address")]),
        ("bad zone", "[agent]\nzone = \"eu 1\"\n", TLS_OFF, &[(CONFIG, "agent.zone")]),
        ("empty services dir", "[agent]\nservices_dir = \"\"\n", TLS_OFF, &[(CONFIG, "agent.services_dir")]),
        ("env bad value", "", &[("HOSTMESH_TLS__MODE", "disabled"), ("HOSTMESH_PROXY__MAX_CONNECTIONS", "0")],
            &[(ENV, "HOSTMESH_PROXY__MAX_CONNECTIONS")]),
        ("env not a number", "", &[("HOSTMESH_TLS__MODE", "disabled"), ("HOSTMESH_PROXY__MAX_HEADERS", "lots")],
            &[(ENV, "HOSTMESH_PROXY__MAX_HEADERS")]),
        ("env unknown key", "", &[("HOSTMESH_TLS__MODE", "disabled"), ("HOSTMESH_ETCD__ENDPOINT", "http://a:1")],
            &[(ENV, "HOSTMESH_ETCD__ENDPOINT")]),
        ("env unknown section", "", &[("HOSTMESH_TLS__MODE", "disabled"), ("HOSTMESH_CACHE__SIZE", "1")],
            &[(ENV, "HOSTMESH_CACHE__SIZE")]),
        ("env lowercase", "", &[("HOSTMESH_TLS__MODE", "disabled"), ("HOSTMESH_etcd__prefix", "/x")],
            &[(ENV, "HOSTMESH_etcd__prefix")]),
        ("env value overrides a bad file value", "[etcd]\nprefix = \"bad\"\n",
            &[("HOSTMESH_TLS__MODE", "disabled"), ("HOSTMESH_ETCD__PREFIX", "/good")], &[]),
        ("syntax error keeps env problems only", "[tls\n", &[("HOSTMESH_ETCD__LEASE_TTL", "1s")],
            &[(CONFIG, ""), (ENV, "HOSTMESH_ETCD__LEASE_TTL")]),
    ];
    for (name, text, vars, expected) in cases {
        let got = match parse_config(text, vars) {
            Ok(_) => Vec::new(),
            Err(problems) => places(&problems),
        };
        assert_eq!(
            got,
            owned(expected),
            "case {name:?}: {:?}",
            parse_config(text, vars)
        );
    }
}

#[test]
fn config_problems_are_all_reported_at_once() {
    let text = r#"
[agent]
host = "Web 01"
drain = "forever"
colour = "blue"

[etcd]
endpoints = ["127.0.0.1:2379"]
lease_ttl = "1s"

[dns]
vip_range = "10.0.0.0/8"
upstream = ["dns.google"]

[proxy]
max_connections = -1

[tls]
mode = "mtls"

[tracing]
sample_ratio = "high"

[extra]
"#;
    let problems = parse_config(text, &[("HOSTMESH_LOG__LEVEL", "chatty")]).unwrap_err();
    let expected = [
        (CONFIG, "agent.colour"),
        (CONFIG, "extra"),
        (CONFIG, "agent.host"),
        (CONFIG, "agent.drain"),
        (CONFIG, "etcd.endpoints"),
        (CONFIG, "etcd.lease_ttl"),
        (CONFIG, "dns.vip_range"),
        (CONFIG, "dns.upstream"),
        (CONFIG, "proxy.max_connections"),
        (ENV, "HOSTMESH_LOG__LEVEL"),
        (CONFIG, "tracing.sample_ratio"),
    ];
    assert_eq!(places(&problems), owned(&expected), "{problems}");
    let text = problems.to_string();
    assert_eq!(text.lines().count(), expected.len());
}

/// mTLS is the default and parses without reading any file: the files are checked by the TLS
/// code at start and by check-config.
#[test]
fn mtls_is_the_default() {
    let config = parse_config("[agent]\nhost = \"web-01\"\n", &[]).unwrap();
    assert_eq!(config.tls.mode, TlsMode::Mtls);
    let config = parse_config(
        "[tls]\nmode = \"disabled\"\n",
        &[("HOSTMESH_TLS__MODE", "mtls")],
    )
    .unwrap();
    assert_eq!(config.tls.mode, TlsMode::Mtls);
}

#[test]
fn messages_say_what_was_expected() {
    let problems = parse_config(
        "[etcd]\nlease_ttl = 10\nendpoints = [\"http://a\"]\n",
        TLS_OFF,
    )
    .unwrap_err();
    let text = problems.to_string();
    assert!(
        text.contains("etcd.lease_ttl: expected a duration such as \"10s\""),
        "{text}"
    );
    assert!(text.contains("found integer 10"), "{text}");
    assert!(
        text.contains("item 1 (\"http://a\"): needs a port"),
        "{text}"
    );
    let problems = parse_config("[etcd]\nlease_tll = \"5s\"\n", TLS_OFF).unwrap_err();
    assert!(problems.0[0].message.contains("lease_ttl"), "{problems}");
}

#[test]
fn defaults_are_the_documented_values() {
    let config = parse_config("[tls]\nmode = \"disabled\"\n", &[]).unwrap();
    let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
    let expected = AgentConfig {
        agent: AgentSection {
            host: "web-01".into(),
            advertise_address: None,
            zone: None,
            services_dir: "/etc/hostmesh/services.d".into(),
            data_dir: "/var/lib/hostmesh".into(),
            drain: Duration::from_secs(5),
        },
        etcd: EtcdSection {
            endpoints: vec!["http://127.0.0.1:2379".into()],
            prefix: "/hostmesh".into(),
            lease_ttl: Duration::from_secs(10),
            ca_file: None,
            cert_file: None,
            key_file: None,
            username: None,
            password_file: None,
        },
        dns: DnsSection {
            listen: addr("127.0.0.1:53"),
            domain: "mesh".into(),
            vip_range: "127.77.0.0/16".parse().unwrap(),
            ttl: Duration::from_secs(5),
            upstream: vec![Upstream::System],
            consul: false,
        },
        proxy: ProxySection {
            capture: Capture::Nft,
            outbound_listen: addr("127.0.0.1:4140"),
            inbound_listen: addr("0.0.0.0:4143"),
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            header_read_timeout: Duration::from_secs(10),
            max_connections: 10_000,
            max_headers: 100,
            max_header_bytes: 65_536,
            workers: 0,
            pin_workers: false,
            lockdown: false,
        },
        tls: TlsSection {
            mode: TlsMode::Disabled,
            ca_file: "/etc/hostmesh/tls/ca.pem".into(),
            cert_file: "/etc/hostmesh/tls/host.pem".into(),
            key_file: "/etc/hostmesh/tls/host.key".into(),
            trust_domain: "hostmesh.local".into(),
        },
        policy: PolicySection {
            default: PolicyDefault::Allow,
        },
        admin: AdminSection {
            listen: addr("127.0.0.1:9190"),
        },
        log: LogSection {
            format: LogFormat::Text,
            level: "info".into(),
        },
        tracing: TracingSection {
            otlp_endpoint: None,
            sample_ratio: 0.01,
        },
        access_log: AccessLogSection {
            enabled: false,
            format: AccessLogFormat::Json,
            path: None,
        },
        // Every key's rendered value: compared by `changed_keys_compare_values_not_text`.
        values: config.values.clone(),
    };
    assert_eq!(config, expected);
}

/// A config that sets every section, the contract's original example, parses as written.
#[test]
fn a_config_setting_every_section_parses() {
    let text = r#"
[agent]
host = "web-01"
advertise_address = "10.0.0.5"
zone = "eu-1a"
services_dir = "/etc/hostmesh/services.d"
data_dir = "/var/lib/hostmesh"
drain = "5s"
[etcd]
endpoints = ["http://127.0.0.1:2379"]
prefix = "/hostmesh"
lease_ttl = "10s"
[dns]
listen = "127.0.0.1:53"
domain = "mesh"
vip_range = "127.77.0.0/16"
ttl = "5s"
upstream = ["system"]
[proxy]
capture = "nft"
outbound_listen = "127.0.0.1:4140"
inbound_listen = "0.0.0.0:4143"
connect_timeout = "1s"
request_timeout = "10s"
idle_timeout = "60s"
max_connections = 10000
max_headers = 100
max_header_bytes = 65536
[tls]
mode = "mtls"
ca_file = "/etc/hostmesh/tls/ca.pem"
cert_file = "/etc/hostmesh/tls/host.pem"
key_file = "/etc/hostmesh/tls/host.key"
trust_domain = "hostmesh.local"
[policy]
default = "allow"
[admin]
listen = "127.0.0.1:9190"
[log]
format = "text"
level = "info"
[tracing]
otlp_endpoint = ""
sample_ratio = 0.01
"#;
    let config = AgentConfig::parse(text, Path::new(CONFIG), Vec::new()).unwrap();
    assert_eq!(
        config.agent.advertise_address,
        Some("10.0.0.5".parse().unwrap())
    );
    assert_eq!(config.agent.zone.as_deref(), Some("eu-1a"));
    assert_eq!(
        config,
        parse_config(
            "[agent]\nadvertise_address = \"10.0.0.5\"\nzone = \"eu-1a\"\n",
            &[]
        )
        .unwrap()
    );
}

#[test]
fn hostname_default() {
    let file = Path::new(CONFIG);
    let parse = |hostname: &dyn Fn() -> Result<String, String>| {
        parse_inner("[tls]\nmode = \"disabled\"\n", file, Vec::new(), hostname).into_result()
    };
    assert_eq!(
        parse(&|| Ok("Web-01.Example\n".to_owned()))
            .unwrap()
            .agent
            .host,
        "web-01.example"
    );
    for bad in [
        Ok("web_01".to_owned()),
        Ok(String::new()),
        Err("no such file".to_owned()),
    ] {
        let problems = parse(&|| bad.clone()).unwrap_err();
        assert_eq!(places(&problems), owned(&[(CONFIG, "agent.host")]));
        assert!(
            problems.0[0].message.ends_with("set agent.host"),
            "{problems}"
        );
    }
    // An explicit host never looks at the machine's.
    let config = parse_inner(
        "[agent]\nhost = \"db-1\"\n[tls]\nmode = \"disabled\"\n",
        file,
        Vec::new(),
        &|| panic!("hostname read although agent.host is set"),
    )
    .into_result()
    .unwrap();
    assert_eq!(config.agent.host, "db-1");
}

#[test]
fn load_reports_an_unreadable_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("agent.toml");
    let problems = AgentConfig::load(&missing, Vec::new()).unwrap_err();
    assert_eq!(
        places(&problems),
        vec![(missing.display().to_string(), String::new())]
    );
    assert!(problems.0[0].message.starts_with("cannot read"));
}

// ---- service definitions ----

fn parse_svc(id: &str, text: &str) -> Result<InstanceSpec, Problems> {
    parse_service(text, &PathBuf::from(format!("/s/{id}.toml")))
}

#[test]
fn malformed_services() {
    const F: &str = "/s/orders-1.toml";
    #[rustfmt::skip]
    let cases: &[(&str, &str, Places)] = &[
        ("syntax error", "name = \"orders\"\nport = \n", &[(F, "")]),
        ("missing name and port", "protocol = \"http\"\n", &[(F, "name"), (F, "port")]),
        ("bad name", "name = \"Orders_1\"\nport = 80\n", &[(F, "name")]),
        ("name ends with dash", "name = \"orders-\"\nport = 80\n", &[(F, "name")]),
        ("name too long", &format!("name = \"{}\"\nport = 80\n", "a".repeat(64)), &[(F, "name")]),
        ("name not a string", "name = 5\nport = 80\n", &[(F, "name")]),
        ("port zero", "name = \"orders\"\nport = 0\n", &[(F, "port")]),
        ("port too big", "name = \"orders\"\nport = 70000\n", &[(F, "port")]),
        ("port as string", "name = \"orders\"\nport = \"8080\"\n", &[(F, "port")]),
        ("target hostname", "name = \"orders\"\nport = 80\ntarget = \"localhost:8080\"\n", &[(F, "target")]),
        ("target port zero", "name = \"orders\"\nport = 80\ntarget = \"127.0.0.1:0\"\n", &[(F, "target")]),
        ("bad protocol", "name = \"orders\"\nport = 80\nprotocol = \"udp\"\n", &[(F, "protocol")]),
        ("bad and duplicate tags", "name = \"orders\"\nport = 80\ntags = [\"V2\", \"a\", \"a\", \"\"]\n",
            &[(F, "tags"), (F, "tags")]),
        ("duplicate tags", "name = \"orders\"\nport = 80\ntags = [\"a\", \"a\"]\n", &[(F, "tags")]),
        ("weight zero", "name = \"orders\"\nport = 80\nweight = 0\n", &[(F, "weight")]),
        ("weight too big", "name = \"orders\"\nport = 80\nweight = 10001\n", &[(F, "weight")]),
        ("unknown keys", "name = \"orders\"\nport = 80\nprot = \"http\"\n[check]\ntcp = true\npath = \"/\"\n",
            &[(F, "check.path"), (F, "prot")]),
        ("check not a table", "name = \"orders\"\nport = 80\ncheck = \"/healthz\"\n", &[(F, "check")]),
        ("check with two kinds", "name = \"orders\"\nport = 80\n[check]\nhttp = \"/h\"\ntcp = true\n", &[(F, "check")]),
        ("check with no kind", "name = \"orders\"\nport = 80\n[check]\n", &[(F, "check")]),
        ("check with no kind but interval", "name = \"orders\"\nport = 80\n[check]\ninterval = \"1s\"\n", &[(F, "check")]),
        ("timeout over interval", "name = \"orders\"\nport = 80\n[check]\ntcp = true\ninterval = \"1s\"\ntimeout = \"2s\"\n",
            &[(F, "check.timeout")]),
        ("http path relative", "name = \"orders\"\nport = 80\n[check]\nhttp = \"healthz\"\n", &[(F, "check.http")]),
        ("tcp false", "name = \"orders\"\nport = 80\n[check]\ntcp = false\n", &[(F, "check.tcp")]),
        ("tcp not a bool", "name = \"orders\"\nport = 80\n[check]\ntcp = \"yes\"\n", &[(F, "check.tcp")]),
        ("exec empty", "name = \"orders\"\nport = 80\n[check]\nexec = []\n", &[(F, "check.exec")]),
        ("exec not strings", "name = \"orders\"\nport = 80\n[check]\nexec = [\"/bin/check\", 1]\n", &[(F, "check.exec")]),
        ("bad interval", "name = \"orders\"\nport = 80\n[check]\ntcp = true\ninterval = \"often\"\n", &[(F, "check.interval")]),
        ("allow_direct not networks", "name = \"orders\"\nport = 80\nallow_direct = [\"lb\", \"10.0.0.1/8\", 5]\n",
            &[(F, "allow_direct"), (F, "allow_direct"), (F, "allow_direct")]),
        ("allow_direct twice", "name = \"orders\"\nport = 80\nallow_direct = [\"10.20.0.0/16\", \"10.20.0.0/16\"]\n",
            &[(F, "allow_direct")]),
        ("allow_direct not a list", "name = \"orders\"\nport = 80\nallow_direct = \"10.0.0.0/8\"\n", &[(F, "allow_direct")]),
        ("thresholds out of range", "name = \"orders\"\nport = 80\n[check]\ntcp = true\nunhealthy_after = 0\nhealthy_after = 101\n",
            &[(F, "check.unhealthy_after"), (F, "check.healthy_after")]),
    ];
    for (name, text, expected) in cases {
        let got = match parse_svc("orders-1", text) {
            Ok(_) => Vec::new(),
            Err(problems) => places(&problems),
        };
        assert_eq!(
            got,
            owned(expected),
            "case {name:?}: {:?}",
            parse_svc("orders-1", text)
        );
    }
}

#[test]
fn bad_instance_id_is_a_whole_file_problem() {
    for id in ["bad id", "a:b", "é", &"x".repeat(129)] {
        let file = PathBuf::from(format!("/s/{id}.toml"));
        let problems = parse_service("name = \"orders\"\nport = 80\n", &file).unwrap_err();
        assert_eq!(
            places(&problems),
            vec![(file.display().to_string(), String::new())],
            "{id}"
        );
    }
}

#[test]
fn service_problems_are_all_reported_at_once() {
    let text = r#"
name = "Orders"
port = 0
protocol = "udp"
tags = ["ok", "Not ok"]
weight = -5
colour = "red"
[check]
http = "healthz"
exec = ["/bin/true"]
timeout = "0s"
healthy_after = 0
"#;
    let problems = parse_svc("bad id", text).unwrap_err();
    let f = "/s/bad id.toml";
    let expected = [
        (f, ""),
        (f, "colour"),
        (f, "name"),
        (f, "port"),
        (f, "protocol"),
        (f, "tags"),
        (f, "weight"),
        (f, "check.http"),
        (f, "check"),
        (f, "check.timeout"),
        (f, "check.healthy_after"),
    ];
    assert_eq!(places(&problems), owned(&expected), "{problems}");
}

#[test]
fn service_full_and_defaults() {
    let spec = parse_svc(
        "orders-1",
        r#"
name = "orders"
port = 8080
target = "127.0.0.1:18080"
protocol = "grpc"
tags = ["v2", "canary"]
weight = 50
[check]
http = "/healthz"
interval = "2s"
timeout = "1s"
unhealthy_after = 3
healthy_after = 2
"#,
    )
    .unwrap();
    assert_eq!(
        spec,
        InstanceSpec {
            service: "orders".into(),
            id: "orders-1".into(),
            port: 8080,
            target: "127.0.0.1:18080".parse().unwrap(),
            protocol: Protocol::Grpc,
            tags: vec!["v2".into(), "canary".into()],
            weight: 50,
            allow_direct: Vec::new(),
            lockdown: false,
            check: Some(CheckSpec {
                kind: CheckKind::Http {
                    path: "/healthz".into()
                },
                interval: Duration::from_secs(2),
                timeout: Duration::from_secs(1),
                unhealthy_after: 3,
                healthy_after: 2,
            }),
        }
    );

    let spec = parse_svc("web.a_1", "name = \"web\"\nport = 80\n").unwrap();
    assert_eq!(spec.id, "web.a_1");
    assert_eq!(spec.target, "127.0.0.1:80".parse::<SocketAddr>().unwrap());
    assert_eq!(
        (spec.protocol, spec.weight, spec.check),
        (Protocol::Http, 100, None)
    );
    assert!(spec.tags.is_empty());

    let check = parse_svc(
        "db",
        "name = \"db\"\nport = 5432\nprotocol = \"tcp\"\n[check]\ntcp = true\n",
    )
    .unwrap()
    .check
    .unwrap();
    assert_eq!(
        check,
        CheckSpec {
            kind: CheckKind::Tcp,
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(2),
            unhealthy_after: 2,
            healthy_after: 1,
        }
    );

    // A short interval alone is valid: the default timeout shrinks to it.
    let check = parse_svc(
        "x",
        "name = \"x\"\nport = 1\n[check]\nexec = [\"/bin/check\", \"-q\"]\ninterval = \"1s\"\n",
    )
    .unwrap()
    .check
    .unwrap();
    assert_eq!(
        check.kind,
        CheckKind::Exec {
            argv: vec!["/bin/check".into(), "-q".into()]
        }
    );
    assert_eq!(
        (check.interval, check.timeout),
        (Duration::from_secs(1), Duration::from_secs(1))
    );
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn load_services_sorted_and_filtered() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "b.toml", "name = \"orders\"\nport = 80\n");
    write(dir.path(), "a.toml", "name = \"orders\"\nport = 80\n");
    write(dir.path(), "c.toml", "name = \"users\"\nport = 81\n");
    write(dir.path(), ".hidden.toml", "not toml at all [");
    write(dir.path(), "notes.txt", "ignored");
    write(dir.path(), "a.toml.bak", "ignored");
    let specs = load_services(dir.path()).unwrap();
    let ids: Vec<&str> = specs.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["a", "b", "c"]);
    let empty = tempfile::tempdir().unwrap();
    assert_eq!(load_services(empty.path()).unwrap(), Vec::new());
}

#[test]
fn load_services_reports_every_file_and_across_files() {
    let dir = tempfile::tempdir().unwrap();
    let a = write(dir.path(), "a.toml", "name = \"orders\"\nport = 80\n");
    let b = write(
        dir.path(),
        "b.toml",
        "name = \"orders\"\nport = 80\nprotocol = \"grpc\"\n",
    );
    let c = write(dir.path(), "c.toml", "name = \"users\"\nport = 0\n");
    let d = write(dir.path(), "d.toml", "name = \"x\"\nport = 1\nweight = 0\n");
    let problems = load_services(dir.path()).unwrap_err();
    let s = |p: &Path| p.display().to_string();
    assert_eq!(
        places(&problems),
        vec![
            (s(&c), "port".to_owned()),
            (s(&d), "weight".to_owned()),
            (s(&b), "protocol".to_owned()),
        ]
    );
    let cross = &problems.0[2].message;
    assert!(
        cross.contains(&s(&a)) && cross.contains("grpc") && cross.contains("http"),
        "{cross}"
    );
}

#[test]
fn load_services_missing_dir() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("services.d");
    let problems = load_services(&missing).unwrap_err();
    assert_eq!(
        places(&problems),
        vec![(missing.display().to_string(), String::new())]
    );
}

#[test]
fn load_all_reports_config_and_services_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let services = dir.path().join("services.d");
    std::fs::create_dir(&services).unwrap();
    let svc = write(&services, "orders.toml", "name = \"orders\"\nport = 0\n");
    let config_text = format!(
        "[agent]\nhost = \"web-01\"\nservices_dir = \"{}\"\n[tls]\nmode = \"disabled\"\n[etcd]\nprefix = \"x\"\n",
        services.display()
    );
    let config = write(dir.path(), "agent.toml", &config_text);
    let problems = load_all(&config, Vec::new()).unwrap_err();
    let s = |p: &Path| p.display().to_string();
    assert_eq!(
        places(&problems),
        vec![
            (s(&config), "etcd.prefix".to_owned()),
            (s(&svc), "port".to_owned())
        ]
    );

    // Fixed, both load.
    write(&services, "orders.toml", "name = \"orders\"\nport = 80\n");
    write(
        dir.path(),
        "agent.toml",
        &config_text.replace("\"x\"", "\"/x\""),
    );
    let (loaded, specs) = load_all(&config, Vec::new()).unwrap();
    assert_eq!(loaded.etcd.prefix, "/x");
    assert_eq!(specs.len(), 1);

    // The services dir can come from the environment too.
    let other = dir.path().join("other.d");
    std::fs::create_dir(&other).unwrap();
    let vars = env(&[("HOSTMESH_AGENT__SERVICES_DIR", other.to_str().unwrap())]);
    let (_, specs) = load_all(&config, vars).unwrap();
    assert!(specs.is_empty());
}

/// `allow_direct` takes IPv4 and IPv6 networks and single addresses; lockdown marks every spec
/// and refuses a target on the agent's own inbound or admin port.
#[test]
fn lockdown_marks_specs_and_guards_the_agents_ports() {
    let spec = parse_svc(
        "orders-1",
        "name = \"orders\"\nport = 80\nallow_direct = [\"10.20.0.0/16\", \"fd00:20::/32\", \"10.9.0.7\"]\n",
    )
    .unwrap();
    let shown: Vec<String> = spec.allow_direct.iter().map(|n| n.to_string()).collect();
    assert_eq!(shown, ["10.20.0.0/16", "fd00:20::/32", "10.9.0.7/32"]);
    assert!(!spec.lockdown);

    let dir = tempfile::tempdir().unwrap();
    let services = dir.path().join("services.d");
    std::fs::create_dir(&services).unwrap();
    write(&services, "orders.toml", "name = \"orders\"\nport = 80\n");
    let svc = write(
        &services,
        "peer.toml",
        "name = \"peer\"\nport = 81\ntarget = \"10.0.0.5:4143\"\n",
    );
    let config_text = |lockdown: bool| {
        format!(
            "[agent]\nservices_dir = \"{}\"\n[tls]\nmode = \"disabled\"\n[proxy]\nlockdown = {lockdown}\n",
            services.display()
        )
    };
    let config = dir.path().join("agent.toml");
    let load = |text: &str| super::load_all_inner(text, &config, Vec::new(), &fixed_host);
    let (_, specs) = load(&config_text(false)).unwrap();
    assert!(specs.iter().all(|s| !s.lockdown));
    let problems = load(&config_text(true)).unwrap_err();
    assert_eq!(
        places(&problems),
        vec![(svc.display().to_string(), "target".to_owned())]
    );
    assert!(
        problems.0[0].message.contains("proxy.inbound_listen"),
        "{}",
        problems.0[0].message
    );
    std::fs::remove_file(&svc).unwrap();
    let (loaded, specs) = load(&config_text(true)).unwrap();
    assert!(loaded.proxy.lockdown);
    assert!(specs.iter().all(|s| s.lockdown));
}

#[test]
fn load_all_skips_services_when_the_dir_is_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "agent.toml", "[agent]\nservices_dir = 5\n");
    let problems = super::load_all_inner(
        "[agent]\nservices_dir = 5\n[tls]\nmode = \"disabled\"\n",
        &config,
        Vec::new(),
        &fixed_host,
    )
    .unwrap_err();
    assert_eq!(
        places(&problems),
        vec![(
            config.display().to_string(),
            "agent.services_dir".to_owned()
        )]
    );
    let problems = super::load_all_inner("[agent\n", &config, Vec::new(), &fixed_host).unwrap_err();
    assert_eq!(
        places(&problems),
        vec![(config.display().to_string(), String::new())]
    );
}

/// Every config and service definition the project ships parses as it stands.
#[test]
fn shipped_examples_parse() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let host = [("HOSTMESH_AGENT__HOST", "example-host")];
    let config = AgentConfig::load(&root.join("examples/agent.toml"), env(&host));
    assert!(
        config.is_ok(),
        "examples/agent.toml: {}",
        config.unwrap_err()
    );
    let services = load_services(&root.join("examples/services.d"));
    assert!(
        services.is_ok(),
        "examples/services.d: {}",
        services.unwrap_err()
    );
    assert_eq!(services.unwrap().len(), 2);
}

/// The key tables of docs/config.md, generated from the declarations
/// (`agent/keys.rs`, `service/keys.rs`) between `<!-- keys: agent [SECTION] -->` or
/// `<!-- keys: service [SECTION] -->` and `<!-- end keys -->`. Returns the text with every table
/// regenerated and the sections that have one.
fn regenerate_key_tables(text: &str) -> (String, BTreeSet<String>) {
    let mut out = String::new();
    let mut marked = BTreeSet::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        out.push_str(line);
        out.push('\n');
        let Some(label) = line
            .strip_prefix("<!-- keys: ")
            .and_then(|l| l.strip_suffix(" -->"))
        else {
            continue;
        };
        let (file, section) = match label.split_once(' ') {
            Some((file, section)) => (file, section.trim_matches(['[', ']'])),
            None => (label, ""),
        };
        let (schema, with_reload) = match file {
            "agent" => (super::agent::SCHEMA, true),
            "service" => (super::service::SCHEMA, false),
            other => panic!("docs/config.md: unknown key table {other:?}"),
        };
        marked.insert(format!("{file} [{section}]"));
        out.push_str(&key::markdown_table(schema, section, with_reload));
        for skipped in lines.by_ref() {
            if skipped == "<!-- end keys -->" {
                out.push_str(skipped);
                out.push('\n');
                break;
            }
        }
    }
    (out, marked)
}

/// docs/config.md's key tables are the declarations: a key added, changed or removed in the code
/// changes its row. `HOSTMESH_WRITE_DOCS=1 cargo test -p hostmesh-config docs_key_tables`
/// rewrites them.
#[test]
fn docs_key_tables_are_generated_from_the_declarations() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/config.md");
    let text = std::fs::read_to_string(&path).expect("docs/config.md");
    let (generated, marked) = regenerate_key_tables(&text);
    let sections = |file: &str, schema: &[&key::Key]| -> BTreeSet<String> {
        schema
            .iter()
            .map(|k| format!("{file} [{}]", k.section()))
            .collect()
    };
    let mut expected = sections("agent", super::agent::SCHEMA);
    expected.extend(sections("service", super::service::SCHEMA));
    assert_eq!(
        marked, expected,
        "docs/config.md needs one key table per section"
    );
    if std::env::var_os("HOSTMESH_WRITE_DOCS").is_some() {
        std::fs::write(&path, &generated).expect("write docs/config.md");
        return;
    }
    assert!(
        text == generated,
        "docs/config.md's key tables differ from the declarations in crates/config/src/*/keys.rs; \
         run HOSTMESH_WRITE_DOCS=1 cargo test -p hostmesh-config docs_key_tables"
    );
}

/// Every written default passes its key's own rule: a config that sets every key with a written
/// default to that default reads the same as an empty one, with no problem.
#[test]
fn every_written_default_passes_its_rule() {
    let mut text = String::new();
    let mut section = "";
    for key in super::agent::SCHEMA {
        if let key::DefaultValue::Written(literal) = key.default {
            if key.section() != section {
                section = key.section();
                text.push_str(&format!("[{section}]\n"));
            }
            text.push_str(&format!("{} = {literal}\n", key.short_name()));
        }
    }
    // mtls would read the default TLS files, which this machine has no reason to hold.
    text = text.replace("mode = \"mtls\"", "mode = \"disabled\"");
    let explicit = parse_config(&text, &[]).unwrap_or_else(|p| panic!("{p}\n{text}"));
    let empty = parse_config("[tls]\nmode = \"disabled\"\n", &[]).unwrap();
    assert_eq!(explicit, empty);
    assert!(empty.changed_keys(&explicit).is_empty());
    // Every key is kept, so a reload can see any of them change.
    let mut all: Vec<&str> = super::agent::SCHEMA.iter().map(|k| k.name).collect();
    all.sort_unstable();
    assert_eq!(empty.values.keys(), all);
}

/// A reload names the keys whose meaning changed: the same value written differently is no
/// change, and an environment variable counts like the file.
#[test]
fn changed_keys_compare_values_not_text() {
    let base = parse_config(
        "[tls]\nmode = \"disabled\"\n[proxy]\nconnect_timeout = \"1s\"\n",
        &[],
    )
    .unwrap();
    let same = parse_config(
        "[tls]\nmode = \"disabled\"\n[proxy]\nconnect_timeout = \"1000ms\"\n",
        &[],
    )
    .unwrap();
    assert!(base.changed_keys(&same).is_empty());
    let other = parse_config(
        "[tls]\nmode = \"disabled\"\ncert_file = \"/x.pem\"\n[agent]\nservices_dir = \"/srv\"\n",
        &[("HOSTMESH_PROXY__IDLE_TIMEOUT", "2m")],
    )
    .unwrap();
    let names: Vec<&str> = base.changed_keys(&other).iter().map(|k| k.name).collect();
    assert_eq!(
        names,
        ["agent.services_dir", "proxy.idle_timeout", "tls.cert_file"]
    );
}
