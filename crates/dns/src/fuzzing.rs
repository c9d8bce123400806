//! The fuzz entry point for DNS packets (`fuzz/fuzz_targets/dns.rs`, through the agent's
//! `hostmesh::fuzzing`), here so that it reaches the table and wire parser without making them
//! part of this crate's API. Not an API.

#![allow(clippy::unwrap_used)]

use std::sync::OnceLock;

use hickory_proto::op::Message;

use crate::fixture;
use crate::table::Found;
use crate::{Handled, Table, Transport};

/// A DNS query packet through the shim: wire decoding and the answer from a small fixed
/// catalog, over UDP and TCP, with a catalog and before any catalog was loaded, with Consul's
/// names on and off.
///
/// Asserts: every reply decodes as a DNS response echoing the query's id and fits the size the
/// query was allowed (512, its EDNS size up to 1232, or 65535 over TCP); a packet the shim
/// ignores is one it could not answer (short, or a response).
pub fn dns(data: &[u8]) {
    static TABLES: OnceLock<[Table; 4]> = OnceLock::new();
    let tables = TABLES.get_or_init(|| {
        let (zone, consul) = (fixture::zone(), fixture::consul_zone());
        [
            Table::build(zone.clone(), Some(&fixture::snapshot())),
            Table::build(zone, None),
            Table::build(consul.clone(), Some(&fixture::snapshot())),
            Table::build(consul, None),
        ]
    });
    for table in tables {
        for transport in [Transport::Udp, Transport::Tcp] {
            match crate::answer_local(data, table, transport) {
                Handled::Ignore => {
                    assert!(data.len() < 12 || data[2] & 0x80 != 0, "ignored a query");
                }
                Handled::Forward(request) => {
                    let name = request.query.name();
                    assert!(table.find(name) == Found::OutOfZone);
                    assert!(crate::consul::find(table, name).is_none());
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
