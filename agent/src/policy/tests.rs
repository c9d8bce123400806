#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;

use serde_json::json;

use hostmesh_config::spec::Protocol;
use hostmesh_registrar::catalog::{Instance, Service, Snapshot};
use hostmesh_registrar::record::Health;

use super::*;
use hostmesh_config::PolicyDefault;

fn parse(text: &str) -> Result<AccessPolicy, hostmesh_config::Problems> {
    AccessPolicy::parse_toml(text, Path::new("p.toml"))
}

/// Every problem's `key: message`.
fn problems(text: &str) -> Vec<String> {
    parse(text)
        .unwrap_err()
        .0
        .iter()
        .map(|p| format!("{}: {}", p.key, p.message))
        .collect()
}

#[test]
fn the_documented_example_parses() {
    let p = parse("allow = [\"web\", \"billing\"]   # services\nallow_hosts = [\"batch-7\"]\n")
        .unwrap();
    assert_eq!(p.allow, ["web", "billing"]);
    assert_eq!(p.allow_hosts, [HostPattern::Exact("batch-7".into())]);
    let p = parse("allow_hosts = [\"batch-*\", \"*\"]").unwrap();
    assert_eq!(
        p.allow_hosts,
        [
            HostPattern::Prefix("batch-".into()),
            HostPattern::Prefix(String::new())
        ]
    );
    // Deny everyone, explicitly.
    assert_eq!(parse("allow = []").unwrap(), AccessPolicy::default());
}

#[test]
fn every_problem_is_reported_with_its_key() {
    let found = problems(
        "allow = [\"Web\", \"ok\", 5, \"-x\", \"\"]\n\
         allow_hosts = [\"a*b\", \"b**\", \"\", \"h_1\", \"fine.example\", \"x*\"]\n\
         deny = [\"web\"]\n",
    );
    let expected = [
        "deny: unknown key; known keys: allow, allow_hosts",
        "allow[0]: \"Web\" has the character 'W'",
        "allow[2]: expected a string, found integer 5",
        "allow[3]: \"-x\" must not start or end with '-'",
        "allow[4]: \"\" must not be empty",
        "allow_hosts[0]: \"a*b\" '*' may only end a pattern, once",
        "allow_hosts[1]: \"b**\" '*' may only end a pattern, once",
        "allow_hosts[2]: \"\" must not be empty",
        "allow_hosts[3]: \"h_1\" has the character '_'",
    ];
    assert_eq!(found.len(), expected.len(), "{found:#?}");
    for (got, want) in found.iter().zip(expected) {
        assert!(
            got.starts_with(want),
            "{got:?} does not start with {want:?}"
        );
    }
}

#[test]
fn wrong_shapes_and_empty_files_are_problems() {
    assert_eq!(
        problems("allow = \"web\"\nallow_hosts = {}\n"),
        [
            "allow: expected a list of service names such as [\"web\"], found string \"web\"",
            "allow_hosts: expected a list of host names or prefixes such as [\"batch-7\", \
             \"batch-*\"], found a table"
        ]
    );
    let empty = problems("");
    assert_eq!(empty.len(), 1);
    assert!(
        empty[0].contains("needs `allow`, `allow_hosts` or both"),
        "{empty:?}"
    );
    let syntax = problems("allow = [");
    assert!(
        syntax[0].contains("TOML syntax error at line 1"),
        "{syntax:?}"
    );
    // Too long: a service name is a DNS label.
    assert!(problems(&format!("allow = [\"{}\"]", "a".repeat(64)))[0].starts_with("allow[0]:"));
}

#[test]
fn json_round_trips_and_toml_output_is_accepted_by_set() {
    let policies = [
        AccessPolicy::default(),
        parse("allow = [\"web\", \"billing\"]\nallow_hosts = [\"batch-7\", \"batch-*\", \"*\"]")
            .unwrap(),
    ];
    for p in policies {
        let v = p.to_json();
        let bytes = serde_json::to_vec(&v).unwrap();
        let back: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(AccessPolicy::from_json(&back).unwrap(), p, "{v}");
        assert_eq!(parse(&p.to_toml()).unwrap(), p, "{}", p.to_toml());
    }
    let p = parse("allow = [\"web\"]\nallow_hosts = [\"batch-*\"]").unwrap();
    assert_eq!(
        p.to_json(),
        json!({"allow": ["web"], "allow_hosts": ["batch-*"]})
    );
    assert_eq!(
        p.to_toml(),
        "allow = [\"web\"]\nallow_hosts = [\"batch-*\"]\n"
    );
}

#[test]
fn json_readers_ignore_unknown_fields_and_reject_bad_values() {
    let p = AccessPolicy::from_json(&json!({"allow": ["web"], "future": 1, "allow_hosts": null}))
        .unwrap();
    assert_eq!(p.allow, ["web"]);
    assert!(p.allow_hosts.is_empty());
    for (v, want) in [
        (json!([]), "expected a JSON object"),
        // The catalog's form of a stored text that is not JSON.
        (json!("{\"allow\":[\"web\"]"), "not JSON"),
        (json!({}), "needs `allow`"),
        (json!({"allow": ["Web"]}), "allow[0]:"),
        (
            json!({"allow": ["web"], "allow_hosts": [1]}),
            "allow_hosts[0]: expected a string",
        ),
    ] {
        let err = AccessPolicy::from_json(&v).unwrap_err();
        assert!(err.contains(want), "{v}: {err}");
    }
}

fn instance(host: &str, health: Health) -> Instance {
    Instance {
        host: host.into(),
        id: format!("{host}-1"),
        address: None,
        inbound_port: None,
        zone: None,
        port: 80,
        protocol: Protocol::Http,
        tags: Vec::new(),
        weight: 100,
        health,
    }
}

/// `web` on hosts w1 (passing) and w2 (critical), `batch` on b1, `orders` on o1; `policies` as
/// stored.
fn snapshot(policies: &[(&str, serde_json::Value)]) -> Snapshot {
    let mut s = Snapshot::default();
    for (name, instances) in [
        (
            "web",
            vec![
                instance("w1", Health::Passing),
                instance("w2", Health::Critical),
            ],
        ),
        ("batch", vec![instance("b1", Health::Passing)]),
        ("orders", vec![instance("o1", Health::Maintenance)]),
    ] {
        s.services.insert(
            name.into(),
            Arc::new(Service {
                name: name.into(),
                vip: None,
                protocol: Protocol::Http,
                instances,
            }),
        );
    }
    for (service, json) in policies {
        s.policies.insert((*service).into(), json.clone());
    }
    s
}

#[test]
fn hosts_running_an_allowed_service_are_allowed_whatever_its_health() {
    let s = snapshot(&[(
        "orders",
        json!({"allow": ["web", "nosuch"], "allow_hosts": []}),
    )]);
    let t = PolicyTable::build(&s, PolicyDefault::Allow, None);
    assert!(t.allows("orders", "w1"));
    assert!(
        t.allows("orders", "w2"),
        "a critical instance still makes its host a member"
    );
    assert!(!t.allows("orders", "b1"));
    assert!(
        !t.allows("orders", "o1"),
        "running the service itself is no permission"
    );
    assert!(!t.allows("orders", ""), "an unknown caller");
    // Other services follow the default.
    assert!(t.allows("web", "b1"));
}

#[test]
fn allow_hosts_match_exactly_or_by_prefix() {
    let s = snapshot(&[
        ("orders", json!({"allow_hosts": ["batch-7", "cron-*"]})),
        ("web", json!({"allow_hosts": ["*"]})),
    ]);
    let t = PolicyTable::build(&s, PolicyDefault::Deny, None);
    assert!(t.allows("orders", "batch-7"));
    assert!(!t.allows("orders", "batch-70"));
    assert!(!t.allows("orders", "batch-"));
    assert!(t.allows("orders", "cron-"));
    assert!(t.allows("orders", "cron-eu-1"));
    assert!(!t.allows("orders", "xcron-1"));
    assert!(t.allows("web", "anyone"));
    assert!(!t.allows("web", ""));
}

#[test]
fn services_without_a_policy_follow_the_default() {
    let s = snapshot(&[]);
    let allow = PolicyTable::build(&s, PolicyDefault::Allow, None);
    let deny = PolicyTable::build(&s, PolicyDefault::Deny, None);
    for (service, caller) in [("orders", "w1"), ("nosuch", "b1"), ("web", "")] {
        assert!(allow.allows(service, caller));
        assert!(!deny.allows(service, caller));
    }
}

#[test]
fn a_policy_that_does_not_parse_denies_every_caller() {
    let s = snapshot(&[
        ("orders", json!({"allow": "web"})),
        ("web", json!("garbage")),
    ]);
    let t = PolicyTable::build(&s, PolicyDefault::Allow, None);
    for caller in ["w1", "b1", "o1", ""] {
        assert!(!t.allows("orders", caller));
        assert!(!t.allows("web", caller));
    }
    assert!(t.allows("batch", "w1"));
}

#[test]
fn the_table_follows_snapshots_and_denies_before_the_first() {
    let p = Policies::new(PolicyDefault::Allow);
    assert!(!p.allows("orders", "w1"), "nothing is known yet");
    p.apply(&snapshot(&[]));
    assert!(p.allows("orders", "b1"));
    p.apply(&snapshot(&[("orders", json!({"allow": ["web"]}))]));
    assert!(!p.allows("orders", "b1"));
    assert!(p.allows("orders", "w1"));
    // Membership follows the catalog: b1 starts running web.
    let mut s = snapshot(&[("orders", json!({"allow": ["web"]}))]);
    let mut web = (*s.services["web"]).clone();
    web.instances.push(instance("b1", Health::Passing));
    s.services.insert("web".into(), Arc::new(web));
    p.apply(&s);
    assert!(p.allows("orders", "b1"));
}
