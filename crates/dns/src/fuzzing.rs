//! The fuzz entry point for DNS packets (`fuzz/fuzz_targets/dns.rs`, through the agent's
//! `hostmesh::fuzzing`), here so that it reaches the table and wire parser without making them
//! part of this crate's API. Not an API.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use hickory_proto::op::Message;
use hostmesh_config::spec::Protocol;
use hostmesh_registrar::catalog::{Instance, Service, Snapshot};
use hostmesh_registrar::record::Health;

use crate::table::Found;
use crate::{Handled, Table, Transport, Zone};

/// A DNS query packet through the shim: wire decoding and the answer from a small fixed
/// catalog, over UDP and TCP, with a catalog and before any catalog was loaded.
///
/// Asserts: every reply decodes as a DNS response echoing the query's id and fits the size the
/// query was allowed (512, its EDNS size up to 1232, or 65535 over TCP); a packet the shim
/// ignores is one it could not answer (short, or a response).
pub fn dns(data: &[u8]) {
    static TABLES: OnceLock<[Table; 2]> = OnceLock::new();
    let tables = TABLES.get_or_init(|| {
        let zone = Arc::new(Zone::new("mesh", Duration::from_secs(5), true).unwrap());
        [
            Table::build(zone.clone(), Some(&dns_snapshot())),
            Table::build(zone, None),
        ]
    });
    for table in tables {
        for transport in [Transport::Udp, Transport::Tcp] {
            match crate::answer_local(data, table, transport) {
                Handled::Ignore => {
                    assert!(data.len() < 12 || data[2] & 0x80 != 0, "ignored a query");
                }
                Handled::Forward(request) => {
                    assert!(table.find(request.query.name()) == Found::OutOfZone);
                }
                Handled::Reply(reply) => {
                    // A packet that is not a query gets a 12-byte header, which fits anything.
                    let limit = crate::wire::parse(data).map_or(512, |r| r.limit(transport));
                    assert!(
                        reply.bytes.len() <= limit,
                        "answer of {} bytes over the {limit} allowed",
                        reply.bytes.len()
                    );
                    let message = Message::from_vec(&reply.bytes)
                        .unwrap_or_else(|e| panic!("our answer does not decode: {e}"));
                    assert_eq!(&reply.bytes[..2], &data[..2], "answer must echo the id");
                    assert!(reply.bytes[2] & 0x80 != 0, "answer must be a response");
                    assert!(message.queries.len() <= 1);
                }
            }
        }
    }
}

/// orders (VIP .1, two ports, tag v2 with its own VIP), payments, and a VIP reserved for a
/// name with no instances: every kind of entry the table holds.
fn dns_snapshot() -> Snapshot {
    let ip = |n| Ipv4Addr::new(127, 77, 0, n);
    let instance = |port, tags: &[&str]| Instance {
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
    };
    let service = |name: &str, vip, instances| {
        (
            name.to_owned(),
            Arc::new(Service {
                name: name.into(),
                vip: Some(vip),
                protocol: Protocol::Http,
                instances,
            }),
        )
    };
    Snapshot {
        revision: 42,
        services: BTreeMap::from([
            service(
                "orders",
                ip(1),
                vec![instance(8080, &["v2"]), instance(9090, &[])],
            ),
            service("payments", ip(3), vec![instance(7000, &[])]),
        ]),
        vips: BTreeMap::from([
            ("orders".to_owned(), ip(1)),
            ("v2.orders".to_owned(), ip(2)),
            ("payments".to_owned(), ip(3)),
            ("gone".to_owned(), ip(4)),
        ]),
        ..Snapshot::default()
    }
}
