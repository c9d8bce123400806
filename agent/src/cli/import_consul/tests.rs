//! The mapping on definitions modelled on Consul's documented examples (`examples/consul/`) and
//! on one field at a time: JSON and HCL, `service` and `services`, any key spelling, each check
//! kind, each field left behind, names, durations, and the files written.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use super::check::{Check, Kind, go_duration};
use super::map::{self, Protocol, Refusal, Service};
use super::model::Definition;
use super::note::Note;
use super::write::{Out, WriteError};
use super::{render, source};

const WEB_JSON: &str = include_str!("../../../../examples/consul/web.json");
const BILLING_HCL: &str = include_str!("../../../../examples/consul/billing.hcl");
const REDIS_JSON: &str = include_str!("../../../../examples/consul/redis.json");
const FIXTURES: &[(&str, &str)] = &[
    ("web.json", WEB_JSON),
    ("billing.hcl", BILLING_HCL),
    ("redis.json", REDIS_JSON),
];

/// Every definition of a file, mapped.
fn import(text: &str, extension: &str) -> Vec<Result<(Service, Vec<Note>), Refusal>> {
    let source = source::parse(text, Some(extension)).expect("a Consul file");
    source
        .definitions
        .iter()
        .map(|(_, value)| map::map(&Definition::read(value)?))
        .collect()
}

fn one(text: &str) -> (Service, Vec<Note>) {
    let mut all = import(text, "json");
    assert_eq!(all.len(), 1);
    all.remove(0).expect("imported")
}

fn refused(text: &str) -> Refusal {
    import(text, "json").remove(0).expect_err("refused")
}

/// The fields named, each with the start of its message.
fn named(notes: &[Note]) -> Vec<String> {
    notes.iter().map(|n| n.field.clone()).collect()
}

fn message<'a>(notes: &'a [Note], field: &str) -> &'a str {
    notes
        .iter()
        .find(|n| n.field == field)
        .map(|n| n.message.as_str())
        .unwrap_or_else(|| panic!("no note for {field} in {notes:?}"))
}

#[test]
fn json_and_hcl_definitions_with_checks_and_tags_become_services() {
    let (web, notes) = one(WEB_JSON);
    assert_eq!(
        web,
        Service {
            id: "web-1".to_owned(),
            name: "web".to_owned(),
            port: 8080,
            target: None,
            protocol: Protocol::Given("http", "meta.protocol".to_owned()),
            tags: vec!["v2".to_owned(), "primary".to_owned()],
            weight: Some(300),
            check: Some(Check {
                kind: Kind::Http("/healthz".to_owned()),
                interval: Some(Duration::from_secs(10)),
                timeout: Some(Duration::from_secs(1)),
                healthy_after: None,
                unhealthy_after: Some(3),
            }),
        }
    );
    assert_eq!(
        named(&notes),
        [
            "weights.warning",
            "meta.team",
            "enable_tag_override",
            "checks[0].header",
            "checks[0].id",
            "checks[0].name",
            "checks[1].name",
            "checks[1]",
        ]
    );

    let billing = import(BILLING_HCL, "hcl");
    let (billing_1, notes) = billing[0].clone().expect("billing");
    assert_eq!(billing_1.id, "billing-1");
    assert_eq!(
        billing_1.protocol,
        Protocol::Given(
            "grpc",
            "Connect.SidecarService.Proxy.Config.protocol".to_owned()
        )
    );
    assert_eq!(billing_1.tags, ["eu", "v1"]);
    assert_eq!(
        billing_1.check.as_ref().map(|c| (&c.kind, c.interval)),
        Some((
            &Kind::Exec(vec![
                "/usr/local/bin/check-billing".to_owned(),
                "--quick".to_owned()
            ]),
            Some(Duration::from_secs(90))
        ))
    );
    assert_eq!(
        named(&notes),
        ["connect", "check.deregister_critical_service_after"]
    );
    let (ledger, notes) = billing[1].clone().expect("ledger");
    assert_eq!((ledger.id.as_str(), ledger.port), ("ledger", 7070));
    assert_eq!(ledger.target, None, "127.0.0.1 is the default target");
    assert_eq!(
        ledger.check.map(|c| (c.kind, c.timeout)),
        Some((Kind::Tcp, Some(Duration::from_millis(500))))
    );
    assert!(notes.is_empty(), "{notes:?}");

    let (redis, notes) = one(REDIS_JSON);
    assert_eq!(redis.id, "redis-6379");
    assert_eq!(
        redis.protocol,
        Protocol::Given("tcp", "Meta.protocol".to_owned())
    );
    assert_eq!(redis.check.and_then(|c| c.healthy_after), Some(2));
    assert_eq!(
        named(&notes),
        [
            "Meta.redis_version",
            "TaggedAddresses",
            "Token",
            "Check.CheckID"
        ]
    );
}

/// What `check-config` checks, on every file the fixtures give, alone and as one directory.
#[test]
fn every_file_written_for_the_fixtures_passes_check_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut out = Out::open(dir.path(), false);
    let mut written = 0;
    for (file, text) in FIXTURES {
        let extension = Path::new(file).extension().and_then(|e| e.to_str());
        for (at, value) in source::parse(text, extension).expect("parses").definitions {
            let (service, _) = map::map(&Definition::read(&value).expect("reads")).expect("maps");
            let text = render::render(&service, &format!("{file}, {at}"));
            let path = out.path(&service.id);
            let spec = hostmesh_config::parse_service(&text, &path)
                .unwrap_or_else(|p| panic!("{file} {at}:\n{text}\n{p}"));
            let path = out.claim(&spec, file).expect("no collision");
            super::write::write(&path, &text, false).expect("written");
            written += 1;
        }
    }
    assert_eq!(written, 4);
    let specs = hostmesh_config::load_services(dir.path()).expect("check-config accepts the dir");
    assert_eq!(specs.len(), 4);
}

#[test]
fn keys_are_read_in_any_case_with_or_without_underscores() {
    let spellings = [
        r#"{"service": {"name": "web", "port": 80, "enable_tag_override": true,
            "check": {"http": "http://127.0.0.1:80/", "interval": "5s", "success_before_passing": 2}}}"#,
        r#"{"Service": {"Name": "web", "Port": 80, "EnableTagOverride": true,
            "Check": {"HTTP": "http://127.0.0.1:80/", "Interval": "5s", "SuccessBeforePassing": 2}}}"#,
        r#"{"SERVICE": {"NAME": "web", "PORT": 80, "enabletagoverride": true,
            "CHECK": {"Http": "http://127.0.0.1:80/", "INTERVAL": "5s", "successbeforepassing": 2}}}"#,
    ];
    let mapped: Vec<(Service, Vec<String>)> = spellings
        .iter()
        .map(|text| {
            let (service, notes) = one(text);
            (service, notes.iter().map(|n| n.message.clone()).collect())
        })
        .collect();
    assert_eq!(
        mapped[0].0.check.as_ref().and_then(|c| c.healthy_after),
        Some(2)
    );
    assert_eq!(mapped[0], mapped[1]);
    assert_eq!(mapped[0], mapped[2]);
}

#[test]
fn service_services_and_the_bare_api_object() {
    let list = r#"{"services": [{"name": "a", "port": 1}, {"name": "b", "port": 2}]}"#;
    let names: Vec<String> = import(list, "json")
        .into_iter()
        .map(|r| r.expect("imported").0.name)
        .collect();
    assert_eq!(names, ["a", "b"]);
    // The body of the agent API's register call, and a file told by its content.
    assert_eq!(
        source::parse(r#"{"Name": "a", "Port": 1}"#, None)
            .expect("parses")
            .definitions
            .len(),
        1
    );
    let hcl = "service {\n  name = \"a\"\n  port = 1\n}\n";
    assert_eq!(
        source::parse(hcl, Some("conf"))
            .expect("HCL")
            .definitions
            .len(),
        1
    );
    // Agent settings beside a service are named, not imported.
    let mixed =
        source::parse(r#"{"datacenter": "dc1", "service": {"name": "a"}}"#, None).expect("parses");
    assert_eq!(mixed.other, ["datacenter"]);
    assert!(matches!(
        source::parse(r#"{"datacenter": "dc1"}"#, None),
        Err(source::SourceError::NoService)
    ));
    assert!(matches!(
        source::parse("{", Some("json")),
        Err(source::SourceError::Json(_))
    ));
}

#[test]
fn each_check_kind() {
    let check = |check: &str| {
        let text = format!(r#"{{"service": {{"name": "a", "port": 8080, "check": {check}}}}}"#);
        one(&text)
    };
    let (s, _) = check(r#"{"http": "http://localhost:8080/health?full=1", "interval": "2s"}"#);
    let c = s.check.expect("http");
    assert_eq!(c.kind, Kind::Http("/health?full=1".to_owned()));
    assert_eq!(c.interval, Some(Duration::from_secs(2)));
    let (s, _) = check(r#"{"http": "http://127.0.0.1:8080"}"#);
    assert_eq!(s.check.expect("http").kind, Kind::Http("/".to_owned()));
    let (s, _) = check(r#"{"tcp": "[::1]:8080"}"#);
    assert_eq!(s.check.expect("tcp").kind, Kind::Tcp);
    let (s, _) = check(r#"{"args": ["/bin/check", "-v"], "timeout": "3s", "interval": "30s"}"#);
    let c = s.check.expect("exec");
    assert_eq!(
        c.kind,
        Kind::Exec(vec!["/bin/check".to_owned(), "-v".to_owned()])
    );
    assert_eq!(c.timeout, Some(Duration::from_secs(3)));

    // HTTP, but not as hostmesh's http check can probe it.
    let (s, notes) = check(r#"{"http": "https://localhost:8080/health", "tls_skip_verify": true}"#);
    assert!(s.check.is_none());
    assert!(
        message(&notes, "check.http").contains("plain HTTP"),
        "{notes:?}"
    );
    assert!(message(&notes, "check.tls_skip_verify").contains("plain HTTP"));
    let (s, notes) = check(r#"{"http": "http://localhost:9090/metrics"}"#);
    assert!(s.check.is_none());
    assert!(
        message(&notes, "check.http").contains("127.0.0.1:8080"),
        "{notes:?}"
    );
    let (s, notes) = check(r#"{"http": "http://localhost:8080/", "method": "HEAD", "body": "x"}"#);
    assert!(s.check.is_some(), "still a GET check");
    assert!(message(&notes, "check.method").contains("always sends GET"));
    assert!(message(&notes, "check.body").starts_with("not mapped"));

    // Kinds hostmesh does not have: named with what to use instead.
    for (field, value, says) in [
        ("ttl", r#""30s""#, "TTL"),
        ("grpc", r#""127.0.0.1:8080""#, "gRPC"),
        ("h2ping", r#""localhost:8080""#, "HTTP/2 ping"),
        ("docker_container_id", r#""f972c95ebf0e""#, "container"),
        ("alias_service", r#""web""#, "alias"),
        ("script", r#""/bin/check""#, "shell"),
        ("udp", r#""localhost:8080""#, "UDP"),
        ("os_service", r#""nginx""#, "systemctl"),
    ] {
        let (s, notes) = check(&format!(r#"{{"{field}": {value}, "interval": "10s"}}"#));
        assert!(s.check.is_none(), "{field}");
        assert!(
            message(&notes, &format!("check.{field}")).contains(says),
            "{field}: {notes:?}"
        );
    }

    // One check per instance: the first that maps.
    let text = r#"{"service": {"name": "a", "port": 8080, "checks": [
        {"ttl": "30s"}, {"tcp": "localhost:8080"}, {"http": "http://localhost:8080/"}]}}"#;
    let (s, notes) = one(text);
    assert_eq!(s.check.expect("tcp").kind, Kind::Tcp);
    assert!(message(&notes, "checks[0].ttl").starts_with("not mapped"));
    assert!(message(&notes, "checks[2]").contains("one check per instance; checks[1] is kept"));
}

#[test]
fn each_unmappable_field_is_named_with_its_reason() {
    let text = r#"{"service": {
        "name": "a", "port": 1,
        "meta": {"version": "1"},
        "tagged_addresses": {"lan": {"address": "10.0.0.1", "port": 1}},
        "enable_tag_override": true,
        "connect": {"native": true},
        "proxy": {},
        "token": "t",
        "weights": {"passing": 1, "warning": 1},
        "namespace": "ns", "partition": "p",
        "locality": {"region": "r"},
        "socket_path": "/run/a.sock",
        "ports": [],
        "frobnicate": 1,
        "check": {"tcp": "localhost:1", "status": "passing", "notes": "n",
                  "deregister_critical_service_after": "1m", "output_max_size": 1,
                  "failures_before_warning": 1, "service_id": "a", "tcp_use_tls": true,
                  "zap": 1}
    }}"#;
    let (_, notes) = one(text);
    for (field, says) in [
        ("meta.version", "no metadata"),
        ("tagged_addresses", "one address"),
        ("enable_tag_override", "tags"),
        ("connect", "sidecar"),
        ("proxy", "the proxy"),
        ("token", "etcd"),
        ("weights.warning", "no warning state"),
        ("namespace", "Enterprise"),
        ("partition", "Enterprise"),
        ("locality", "agent.zone"),
        ("socket_path", "TCP only"),
        ("ports", "one port"),
        ("frobnicate", "not a Consul service field"),
        ("check.status", "critical"),
        ("check.notes", "label"),
        (
            "check.deregister_critical_service_after",
            "never deregisters",
        ),
        ("check.output_max_size", "no check output"),
        ("check.failures_before_warning", "no warning state"),
        ("check.service_id", "belongs"),
        ("check.tcp_use_tls", "TCP connection"),
        ("check.zap", "not a Consul check field"),
    ] {
        let m = message(&notes, field);
        assert!(
            m.starts_with("not mapped: ") && m.contains(says),
            "{field}: {m}"
        );
    }
}

#[test]
fn names_hostmesh_cannot_serve_are_refused_with_the_nearest_valid_one() {
    let r = refused(r#"{"service": {"name": "Web_API", "port": 80}}"#);
    assert_eq!(
        r.to_string(),
        "Name \"Web_API\" has the character 'W'; a service name is a DNS label: lowercase \
         letters, digits and '-'; the nearest valid name is \"web-api\""
    );
    assert!(matches!(
        refused(r#"{"service": {"name": "---", "port": 80}}"#),
        Refusal::Name {
            suggestion: None,
            ..
        }
    ));
    assert_eq!(refused(r#"{"service": {"port": 80}}"#), Refusal::NoName);
    assert_eq!(refused(r#"{"service": {"name": "a"}}"#), Refusal::NoPort);
    assert_eq!(
        refused(r#"{"service": {"name": "a", "port": 70000}}"#),
        Refusal::Port(70000)
    );
    assert!(matches!(
        refused(r#"{"service": {"name": "a", "port": "80"}}"#),
        Refusal::Shape(_)
    ));
    assert_eq!(
        refused(r#"{"service": {"name": "a-proxy", "port": 21000, "kind": "connect-proxy"}}"#),
        Refusal::Kind("connect-proxy".to_owned())
    );
    // Tags and ids are changed, not refused: each change named.
    let (s, notes) = one(
        r#"{"service": {"name": "a", "id": "a:1", "port": 1, "tags": ["V2", "ok", "ok", "."]}}"#,
    );
    assert_eq!(
        (s.id.as_str(), s.tags.as_slice()),
        ("a-1", &["ok".to_owned()][..])
    );
    let tags: Vec<&str> = notes
        .iter()
        .filter(|n| n.field == "tags")
        .map(|n| n.message.as_str())
        .collect();
    assert!(tags[0].contains("nearest valid tag is \"v2\""), "{tags:?}");
    assert!(tags[1].contains("listed twice"), "{tags:?}");
    assert!(tags[2].starts_with("\".\" not mapped"), "{tags:?}");
    assert!(message(&notes, "id").contains("written as \"a-1\""));
}

#[test]
fn address_port_and_weight() {
    let with = |extra: &str| {
        one(&format!(
            r#"{{"service": {{"name": "a", "port": 8080{extra}}}}}"#
        ))
    };
    assert_eq!(with(r#", "address": "localhost""#).0.target, None);
    assert_eq!(with(r#", "address": "127.0.0.1""#).0.target, None);
    let (s, notes) = with(r#", "address": "0.0.0.0""#);
    assert_eq!(s.target, None);
    assert!(message(&notes, "address").contains("127.0.0.1:8080"));
    let (s, notes) = with(r#", "address": "10.0.0.5""#);
    assert_eq!(
        s.target,
        Some("10.0.0.5:8080".parse::<SocketAddr>().expect("addr"))
    );
    assert!(message(&notes, "address").contains("must listen there"));
    assert_eq!(
        with(r#", "address": "::1""#).0.target,
        Some("[::1]:8080".parse().expect("addr"))
    );
    assert_eq!(
        refused(r#"{"service": {"name": "a", "port": 1, "address": "db.example.com"}}"#),
        Refusal::AddressName("db.example.com".to_owned())
    );
    // A check on the service address probes the target.
    let (s, _) = with(r#", "address": "10.0.0.5", "check": {"http": "http://10.0.0.5:8080/"}"#);
    assert!(s.check.is_some());

    assert_eq!(with(r#", "weights": {"passing": 1}"#).0.weight, None);
    assert_eq!(with(r#", "weights": {"passing": 7}"#).0.weight, Some(700));
    let (s, notes) = with(r#", "weights": {"passing": 0}"#);
    assert_eq!(s.weight, None);
    assert!(message(&notes, "weights.passing").contains("below 1"));
    let (s, notes) = with(r#", "weights": {"passing": 500}"#);
    assert_eq!(s.weight, Some(10_000));
    assert!(message(&notes, "weights.passing").contains("10000"));
}

#[test]
fn protocol_from_meta_or_the_sidecar_else_the_default() {
    let with = |extra: &str| {
        one(&format!(
            r#"{{"service": {{"name": "a", "port": 1{extra}}}}}"#
        ))
    };
    assert_eq!(with("").0.protocol, Protocol::Default);
    let (s, notes) = with(r#", "meta": {"protocol": "http2"}"#);
    assert_eq!(
        s.protocol,
        Protocol::Given("http", "meta.protocol".to_owned())
    );
    assert!(message(&notes, "meta.protocol").contains("HTTP/1.1"));
    let (s, notes) = with(r#", "meta": {"protocol": "redis"}"#);
    assert_eq!(s.protocol, Protocol::Default);
    assert!(message(&notes, "meta.protocol").starts_with("not mapped"));
    let rendered = render::render(&with("").0, "f, service");
    assert!(rendered.contains("# protocol = \"tcp\" if"), "{rendered}");
    assert!(!rendered.contains("\nprotocol ="), "{rendered}");
}

#[test]
fn consul_durations() {
    assert_eq!(go_duration("10s"), Ok(Duration::from_secs(10)));
    assert_eq!(go_duration("1m30s"), Ok(Duration::from_secs(90)));
    assert_eq!(go_duration("1.5h"), Ok(Duration::from_secs(5400)));
    assert_eq!(go_duration("500ms"), Ok(Duration::from_millis(500)));
    assert_eq!(go_duration("250us"), Ok(Duration::from_micros(250)));
    assert!(go_duration("0s").is_err());
    assert!(go_duration("25h").is_err());
    assert!(go_duration("10").is_err());
    // A timeout longer than the interval ends at the interval; a bad one is named and dropped.
    let text = r#"{"service": {"name": "a", "port": 1,
        "check": {"tcp": "localhost:1", "interval": "5s", "timeout": "30s"}}}"#;
    let (s, notes) = one(text);
    assert_eq!(
        s.check.and_then(|c| c.timeout),
        Some(Duration::from_secs(5))
    );
    assert!(message(&notes, "check.timeout").contains("longer than the interval"));
    let text = r#"{"service": {"name": "a", "port": 1,
        "check": {"tcp": "localhost:1", "interval": "soon"}}}"#;
    let (s, notes) = one(text);
    assert_eq!(s.check.and_then(|c| c.interval), None);
    assert!(message(&notes, "check.interval").contains("default"));
}

#[test]
fn existing_files_and_collisions_are_refused_without_force() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = |id: &str, protocol: &str| {
        let text = format!("name = \"web\"\nport = 80\nprotocol = \"{protocol}\"\n");
        hostmesh_config::parse_service(&text, &dir.path().join(format!("{id}.toml")))
            .expect("valid")
    };
    std::fs::write(dir.path().join("web-1.toml"), "name = \"web\"\nport = 80\n").expect("write");

    let mut out = Out::open(dir.path(), false);
    assert!(matches!(
        out.claim(&spec("web-1", "http"), "a"),
        Err(WriteError::Exists(_))
    ));
    assert!(matches!(
        out.claim(&spec("web-2", "tcp"), "a"),
        Err(WriteError::Protocol { .. })
    ));
    let path = out.claim(&spec("web-2", "http"), "a.json").expect("free");
    let again = out.claim(&spec("web-2", "http"), "b.json");
    assert!(
        matches!(&again, Err(WriteError::Twice { earlier, .. }) if earlier == "a.json"),
        "{again:?}"
    );
    super::write::write(&path, "name = \"web\"\nport = 80\n", false).expect("written");
    assert!(matches!(
        super::write::write(&path, "x", false),
        Err(WriteError::Exists(_))
    ));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
    assert_eq!(mode & 0o777, 0o644);

    // --force replaces the file, and the instance it replaces does not count against it.
    let mut out = Out::open(dir.path(), true);
    out.claim(&spec("web-1", "http"), "a").expect("forced");
    super::write::write(
        &dir.path().join("web-1.toml"),
        "name = \"web\"\nport = 81\n",
        true,
    )
    .expect("replaced");
    assert!(
        std::fs::read_dir(dir.path())
            .expect("dir")
            .flatten()
            .all(|e| !e.file_name().to_string_lossy().starts_with('.')),
        "no temporary file left"
    );
}
