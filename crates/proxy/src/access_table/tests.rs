#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use serde_json::json;

use hostmesh_config::PolicyDefault;
use hostmesh_config::spec::Protocol;
use hostmesh_registrar::catalog::{Instance, Service, Snapshot};
use hostmesh_registrar::record::Health;

use super::*;

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
        locked: false,
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
