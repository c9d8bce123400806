//! A small catalog with every kind of entry the DNS table holds, shared by the unit tests and the
//! fuzz target (`fuzzing::dns`), so both answer from the same names.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use hostmesh_config::spec::Protocol;
use hostmesh_registrar::catalog::{Instance, Service, Snapshot};
use hostmesh_registrar::record::{Health, HostInfo};

use crate::Zone;

/// A passing HTTP instance on web-01 with id `i<port>`.
pub(crate) fn instance(port: u16, tags: &[&str]) -> Instance {
    Instance {
        host: "web-01".into(),
        id: format!("i{port}"),
        address: None,
        inbound_port: Some(4143),
        zone: None,
        port,
        protocol: Protocol::Http,
        tags: tags.iter().map(|t| (*t).to_owned()).collect(),
        weight: 100,
        health: Health::Passing,
        locked: false,
    }
}

/// orders (VIP .1, ports 8080 and 9090, tag v2 with its own VIP .2), payments (VIP .3),
/// pending (instances but no VIP yet), and a VIP reserved for "gone" (no instances); hosts
/// web-01 (10.0.0.1), db.east (10.0.0.2, a name with a dot) and v6 (fd00::6).
pub(crate) fn snapshot() -> Snapshot {
    let mut services = BTreeMap::new();
    let mut vips = BTreeMap::new();
    let ip = |n| Ipv4Addr::new(127, 77, 0, n);
    services.insert(
        "orders".to_owned(),
        Arc::new(Service {
            name: "orders".into(),
            vip: Some(ip(1)),
            protocol: Protocol::Http,
            instances: vec![
                instance(8080, &["v2"]),
                instance(8080, &["v1"]),
                instance(9090, &[]),
            ],
        }),
    );
    services.insert(
        "payments".to_owned(),
        Arc::new(Service {
            name: "payments".into(),
            vip: Some(ip(3)),
            protocol: Protocol::Tcp,
            instances: vec![instance(7000, &[])],
        }),
    );
    services.insert(
        "pending".to_owned(),
        Arc::new(Service {
            name: "pending".into(),
            vip: None,
            protocol: Protocol::Tcp,
            instances: vec![instance(7001, &[])],
        }),
    );
    vips.insert("orders".to_owned(), ip(1));
    vips.insert("v2.orders".to_owned(), ip(2));
    vips.insert("payments".to_owned(), ip(3));
    vips.insert("gone".to_owned(), ip(4));
    let host = |address: &str| HostInfo {
        address: address.parse().unwrap(),
        inbound_port: 4143,
        zone: None,
        version: String::new(),
    };
    let mut hosts = BTreeMap::new();
    hosts.insert("web-01".to_owned(), host("10.0.0.1"));
    hosts.insert("db.east".to_owned(), host("10.0.0.2"));
    hosts.insert("v6".to_owned(), host("fd00::6"));
    Snapshot {
        revision: 42,
        hosts: hosts.into(),
        services: services.into(),
        vips: vips.into(),
        ..Snapshot::default()
    }
}

/// The `mesh` zone with a 5 s TTL.
pub(crate) fn zone() -> Arc<Zone> {
    Arc::new(Zone::new("mesh", Duration::from_secs(5), true).unwrap())
}

/// The `mesh` zone with a 5 s TTL, answering Consul's names too.
pub(crate) fn consul_zone() -> Arc<Zone> {
    Arc::new(
        Zone::new("mesh", Duration::from_secs(5), true)
            .unwrap()
            .with_consul(),
    )
}
