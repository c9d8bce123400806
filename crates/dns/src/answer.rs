//! Answering one raw query from a [`Table`]: a pure function, so every mesh-domain rule is
//! tested without sockets and the malformed-packet corpus is replayed against the same code
//! the server runs.

use std::net::Ipv4Addr;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::rdata::{A, PTR, SRV};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

use super::consul;
use super::metrics::{Outcome, QType};
use super::table::{Entry, Found, Table};
use super::wire::{self, Rejected, Request, Transport};

/// SRV fields: every port of a service is equally good, and the VIP balances behind each.
const SRV_PRIORITY: u16 = 0;
const SRV_WEIGHT: u16 = 1;

/// What to do with one packet.
#[derive(Debug)]
pub enum Handled {
    /// Send these bytes back.
    Reply(Reply),
    /// A name outside the domain, and forwarding is configured: ask upstream.
    Forward(Request),
    /// Send nothing (a response, or too short to carry an id).
    Ignore,
}

#[derive(Debug)]
pub struct Reply {
    pub bytes: Vec<u8>,
    pub(crate) qtype: QType,
    pub(crate) outcome: Outcome,
}

/// Answers `packet` from `table`, sized for `transport`. Never panics on any input.
pub fn answer_local(packet: &[u8], table: &Table, transport: Transport) -> Handled {
    let req = match wire::parse(packet) {
        Ok(req) => req,
        Err(Rejected::Ignore) => return Handled::Ignore,
        Err(Rejected::Reply(bytes, outcome)) => {
            return Handled::Reply(Reply {
                bytes,
                qtype: QType::None,
                outcome,
            });
        }
    };
    let qtype = req.query.query_type();
    let forwarding = table.zone().forwarding;
    let refuse = |req: &Request, rcode, outcome| {
        finish(req, respond(req, rcode, forwarding), outcome, transport)
    };

    if req.edns.is_some_and(|e| e.version > 0) {
        return refuse(&req, ResponseCode::BADVERS, Outcome::BadVers);
    }
    // Meta-types are not questions (RFC 6891 §6.1.1, RFC 8945); zone transfers are not served.
    match qtype {
        RecordType::OPT | RecordType::TSIG => {
            return refuse(&req, ResponseCode::FormErr, Outcome::FormErr);
        }
        RecordType::AXFR | RecordType::IXFR => {
            return refuse(&req, ResponseCode::Refused, Outcome::Refused);
        }
        _ => {}
    }
    if req.query.query_class() != DNSClass::IN {
        return refuse(&req, ResponseCode::Refused, Outcome::Refused);
    }

    let name = req.query.name();
    let found = table.find(name);
    if found == Found::OutOfZone
        && let Some(found) = consul::find(table, name)
    {
        let mut m = respond(&req, ResponseCode::NoError, forwarding);
        let outcome = consul::answer(table, &found, name, qtype, &mut m);
        return finish(&req, m, outcome, transport);
    }
    if found == Found::OutOfZone {
        if let Some(owner) = vip_ptr(table, name, qtype) {
            let mut m = respond(&req, ResponseCode::NoError, forwarding);
            m.metadata.authoritative = true;
            m.add_answer(Record::from_rdata(
                name.clone(),
                table.zone().ttl,
                RData::PTR(PTR(owner.clone())),
            ));
            return finish(&req, m, Outcome::Answered, transport);
        }
        if forwarding {
            return Handled::Forward(req);
        }
        return refuse(&req, ResponseCode::Refused, Outcome::Refused);
    }
    // In the domain with no catalog yet: "don't know", not a confident NXDOMAIN.
    let Some(soa) = table.soa() else {
        return refuse(&req, ResponseCode::ServFail, Outcome::ServFail);
    };

    let ttl = table.zone().ttl;
    let mut m = respond(&req, ResponseCode::NoError, forwarding);
    m.metadata.authoritative = true;
    let answer = |rdata| Record::from_rdata(name.clone(), ttl, rdata);
    let wants = |t: RecordType| qtype == t || qtype == RecordType::ANY;
    let outcome = match found {
        Found::Missing => {
            m.metadata.response_code = ResponseCode::NXDomain;
            m.add_authority(soa.clone());
            Outcome::NxDomain
        }
        Found::Apex if wants(RecordType::SOA) => {
            let mut record = soa.clone();
            // Repeat the question's spelling, as for every other answer.
            record.name = name.clone();
            m.add_answer(record);
            Outcome::Answered
        }
        Found::Entry(Entry::Address { vip, .. }) if wants(RecordType::A) => {
            m.add_answer(answer(RData::A(A(*vip))));
            Outcome::Answered
        }
        Found::Entry(Entry::Srv { ports, target, vip }) if wants(RecordType::SRV) => {
            for port in ports.iter() {
                m.add_answer(answer(RData::SRV(SRV::new(
                    SRV_PRIORITY,
                    SRV_WEIGHT,
                    *port,
                    target.clone(),
                ))));
            }
            m.add_additional(Record::from_rdata(target.clone(), ttl, RData::A(A(*vip))));
            Outcome::Answered
        }
        // The name exists, just not with this type (AAAA above all: VIPs are IPv4 only).
        _ => {
            m.add_authority(soa.clone());
            Outcome::NoData
        }
    };
    finish(&req, m, outcome, transport)
}

/// An empty response; RA says whether this shim recurses (forwards) at all.
fn respond(req: &Request, rcode: ResponseCode, forwarding: bool) -> Message {
    let mut m = req.response(rcode);
    m.metadata.recursion_available = forwarding;
    m
}

fn finish(req: &Request, message: Message, outcome: Outcome, transport: Transport) -> Handled {
    let (bytes, truncated) = req.encode(message, transport);
    Handled::Reply(Reply {
        bytes,
        qtype: QType::of(req.query.query_type()),
        outcome: if truncated {
            Outcome::Truncated
        } else {
            outcome
        },
    })
}

/// The owner of a VIP, when `name` is its `in-addr.arpa` name and the question is PTR, so
/// tools that print peer names (`ss -r`, `tcpdump`) show `orders.mesh` for a VIP.
fn vip_ptr<'t>(table: &'t Table, name: &Name, qtype: RecordType) -> Option<&'t Name> {
    if qtype != RecordType::PTR || name.num_labels() != 6 {
        return None;
    }
    let labels: Vec<&[u8]> = name.iter().collect();
    if !labels[4].eq_ignore_ascii_case(b"in-addr") || !labels[5].eq_ignore_ascii_case(b"arpa") {
        return None;
    }
    let mut octets = [0u8; 4];
    for (octet, label) in octets.iter_mut().rev().zip(&labels[..4]) {
        *octet = std::str::from_utf8(label).ok()?.parse().ok()?;
    }
    table.reverse(Ipv4Addr::from(octets))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;
    use crate::table::Zone;
    use crate::table::tests::{instance, snapshot, zone};
    use hickory_proto::op::{Edns, Query};
    use hostmesh_registrar::catalog::Service;
    use std::sync::Arc;
    use std::time::Duration;

    pub(crate) fn query_bytes(name: &str, rtype: RecordType, edns: Option<u16>) -> Vec<u8> {
        let mut m = Message::query();
        m.metadata.id = 0x1234;
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
        if let Some(size) = edns {
            let mut e = Edns::new();
            e.set_max_payload(size);
            m.set_edns(e);
        }
        m.to_vec().unwrap()
    }

    fn ask(table: &Table, name: &str, rtype: RecordType) -> (Message, Outcome) {
        ask_with(table, &query_bytes(name, rtype, None), Transport::Udp)
    }

    fn ask_with(table: &Table, packet: &[u8], transport: Transport) -> (Message, Outcome) {
        match answer_local(packet, table, transport) {
            Handled::Reply(r) => (Message::from_vec(&r.bytes).unwrap(), r.outcome),
            other => panic!("{other:?}"),
        }
    }

    fn table() -> Table {
        let snap = snapshot();
        Table::build(zone(), Some(&snap))
    }

    fn assert_soa_authority(m: &Message) {
        assert_eq!(m.authorities.len(), 1, "{m}");
        let RData::SOA(soa) = &m.authorities[0].data else {
            panic!("{m}")
        };
        assert_eq!(m.authorities[0].name.to_ascii(), "mesh.");
        assert_eq!(soa.minimum, 5);
        assert_eq!(soa.serial, 42);
        assert_eq!(soa.mname.to_ascii(), "ns.mesh.");
        assert_eq!(soa.rname.to_ascii(), "hostmaster.mesh.");
    }

    #[test]
    fn a_record_for_a_service_in_the_question_case() {
        let (m, outcome) = ask(&table(), "oRDers.Mesh.", RecordType::A);
        assert_eq!(outcome, Outcome::Answered);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert_eq!(m.metadata.id, 0x1234);
        assert!(m.metadata.authoritative);
        assert!(m.metadata.recursion_available);
        assert!(m.metadata.recursion_desired);
        assert_eq!(m.queries[0].name().to_ascii(), "oRDers.Mesh.");
        assert_eq!(m.answers.len(), 1);
        assert_eq!(m.answers[0].name.to_ascii(), "oRDers.Mesh.");
        assert_eq!(m.answers[0].ttl, 5);
        assert_eq!(m.answers[0].data, RData::A(A(Ipv4Addr::new(127, 77, 0, 1))));
    }

    #[test]
    fn tag_names_answer_the_tag_vip() {
        let (m, outcome) = ask(&table(), "v2.orders.mesh.", RecordType::A);
        assert_eq!(outcome, Outcome::Answered);
        assert_eq!(m.answers[0].data, RData::A(A(Ipv4Addr::new(127, 77, 0, 2))));
        let (m, outcome) = ask(&table(), "v3.orders.mesh.", RecordType::A);
        assert_eq!(outcome, Outcome::NxDomain);
        assert_soa_authority(&m);
    }

    #[test]
    fn srv_per_port_with_the_a_record_additional() {
        let (m, outcome) = ask(&table(), "_orders._tcp.mesh.", RecordType::SRV);
        assert_eq!(outcome, Outcome::Answered);
        let srvs: Vec<_> = m
            .answers
            .iter()
            .map(|r| match &r.data {
                RData::SRV(s) => (s.priority, s.weight, s.port, s.target.to_ascii()),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            srvs,
            vec![
                (0, 1, 8080, "orders.mesh.".to_owned()),
                (0, 1, 9090, "orders.mesh.".to_owned())
            ]
        );
        assert_eq!(m.additionals.len(), 1);
        assert_eq!(m.additionals[0].name.to_ascii(), "orders.mesh.");
        assert_eq!(
            m.additionals[0].data,
            RData::A(A(Ipv4Addr::new(127, 77, 0, 1)))
        );
        // A for the SRV name, SRV for the plain name: the names exist, the types do not.
        assert_eq!(
            ask(&table(), "_orders._tcp.mesh.", RecordType::A).1,
            Outcome::NoData
        );
        assert_eq!(
            ask(&table(), "orders.mesh.", RecordType::SRV).1,
            Outcome::NoData
        );
        assert_eq!(
            ask(&table(), "_nope._tcp.mesh.", RecordType::SRV).1,
            Outcome::NxDomain
        );
        assert_eq!(
            ask(&table(), "_tcp.mesh.", RecordType::SRV).1,
            Outcome::NoData
        );
    }

    #[test]
    fn aaaa_for_a_mesh_name_is_empty_noerror_with_soa() {
        let (m, outcome) = ask(&table(), "orders.mesh.", RecordType::AAAA);
        assert_eq!(outcome, Outcome::NoData);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.metadata.authoritative);
        assert!(m.answers.is_empty());
        assert_soa_authority(&m);
        let (_, outcome) = ask(&table(), "orders.mesh.", RecordType::TXT);
        assert_eq!(outcome, Outcome::NoData);
    }

    #[test]
    fn unknown_names_are_nxdomain_with_soa() {
        for name in ["nope.mesh.", "pending.mesh.", "gone.mesh.", "a.b.c.mesh."] {
            let (m, outcome) = ask(&table(), name, RecordType::A);
            assert_eq!(outcome, Outcome::NxDomain, "{name}");
            assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
            assert!(m.metadata.authoritative);
            assert!(m.answers.is_empty());
            assert_soa_authority(&m);
        }
    }

    #[test]
    fn a_removed_service_becomes_nxdomain() {
        let mut snap = snapshot();
        assert_eq!(
            ask(
                &Table::build(zone(), Some(&snap)),
                "payments.mesh.",
                RecordType::A
            )
            .1,
            Outcome::Answered
        );
        snap.services.remove("payments");
        snap.revision += 1;
        let table = Table::build(zone(), Some(&snap));
        let (m, outcome) = ask(&table, "payments.mesh.", RecordType::A);
        assert_eq!(outcome, Outcome::NxDomain);
        let RData::SOA(soa) = &m.authorities[0].data else {
            panic!()
        };
        assert_eq!(soa.serial, 43);
    }

    #[test]
    fn servfail_before_any_catalog() {
        let table = Table::build(zone(), None);
        for (name, rtype) in [
            ("orders.mesh.", RecordType::A),
            ("_orders._tcp.mesh.", RecordType::SRV),
            ("mesh.", RecordType::SOA),
        ] {
            let (m, outcome) = ask(&table, name, rtype);
            assert_eq!(outcome, Outcome::ServFail);
            assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
            assert!(!m.metadata.authoritative);
        }
        // Out-of-domain names are still forwarded.
        assert!(matches!(
            answer_local(
                &query_bytes("example.com.", RecordType::A, None),
                &table,
                Transport::Udp
            ),
            Handled::Forward(_)
        ));
    }

    #[test]
    fn the_apex_answers_its_soa_and_nothing_else() {
        let (m, outcome) = ask(&table(), "MESH.", RecordType::SOA);
        assert_eq!(outcome, Outcome::Answered);
        assert_eq!(m.answers.len(), 1);
        assert_eq!(m.answers[0].name.to_ascii(), "MESH.");
        assert!(matches!(m.answers[0].data, RData::SOA(_)));
        let (m, outcome) = ask(&table(), "mesh.", RecordType::NS);
        assert_eq!(outcome, Outcome::NoData);
        assert_soa_authority(&m);
        let (_, outcome) = ask(&table(), "mesh.", RecordType::A);
        assert_eq!(outcome, Outcome::NoData);
    }

    #[test]
    fn any_answers_what_the_name_has() {
        let (m, _) = ask(&table(), "orders.mesh.", RecordType::ANY);
        assert_eq!(m.answers.len(), 1);
        let (m, _) = ask(&table(), "_orders._tcp.mesh.", RecordType::ANY);
        assert_eq!(m.answers.len(), 2);
    }

    #[test]
    fn out_of_domain_is_forwarded_or_refused() {
        let packet = query_bytes("example.com.", RecordType::A, None);
        let Handled::Forward(req) = answer_local(&packet, &table(), Transport::Udp) else {
            panic!()
        };
        assert_eq!(req.query.name().to_ascii(), "example.com.");

        let snap = snapshot();
        let no_upstream = Arc::new(Zone::new("mesh", Duration::from_secs(5), false).unwrap());
        let table = Table::build(no_upstream, Some(&snap));
        let (m, outcome) = ask_with(&table, &packet, Transport::Udp);
        assert_eq!(outcome, Outcome::Refused);
        assert_eq!(m.metadata.response_code, ResponseCode::Refused);
        assert!(!m.metadata.recursion_available);
        // Mesh names still answer without an upstream.
        assert_eq!(
            ask(&table, "orders.mesh.", RecordType::A).1,
            Outcome::Answered
        );
    }

    #[test]
    fn ptr_for_a_vip_names_its_service() {
        let (m, outcome) = ask(&table(), "2.0.77.127.in-addr.arpa.", RecordType::PTR);
        assert_eq!(outcome, Outcome::Answered);
        assert_eq!(
            m.answers[0].data,
            RData::PTR(PTR(Name::from_ascii("v2.orders.mesh.").unwrap()))
        );
        // Other addresses go upstream.
        assert!(matches!(
            answer_local(
                &query_bytes("9.0.77.127.in-addr.arpa.", RecordType::PTR, None),
                &table(),
                Transport::Udp
            ),
            Handled::Forward(_)
        ));
    }

    #[test]
    fn edns_is_echoed_and_badvers_refused() {
        let (m, _) = ask_with(
            &table(),
            &query_bytes("orders.mesh.", RecordType::A, Some(4096)),
            Transport::Udp,
        );
        let edns = m.edns.as_ref().unwrap();
        assert_eq!(edns.max_payload(), 1232);
        let (m, _) = ask(&table(), "orders.mesh.", RecordType::A);
        assert!(m.edns.is_none());

        let mut q = Message::query();
        q.add_query(Query::query(
            Name::from_ascii("orders.mesh.").unwrap(),
            RecordType::A,
        ));
        let mut e = Edns::new();
        e.set_version(1);
        q.set_edns(e);
        let (m, outcome) = ask_with(&table(), &q.to_vec().unwrap(), Transport::Udp);
        assert_eq!(outcome, Outcome::BadVers);
        // BADVERS shares code 16 with BADSIG, which is how hickory reads it back.
        assert_eq!(u16::from(m.metadata.response_code), 16);
        assert!(m.edns.is_some(), "BADVERS needs the OPT for its upper bits");
    }

    #[test]
    fn a_query_as_dig_sends_it_is_answered() {
        // dig: RD and AD set, EDNS 1232 with a client COOKIE option.
        let mut packet = vec![0xab, 0xcd, 0x01, 0x20, 0, 1, 0, 0, 0, 0, 0, 1];
        packet.extend_from_slice(b"\x06orders\x04mesh\x00\x00\x01\x00\x01");
        packet.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 12, 0, 10, 0, 8]);
        packet.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        let (m, outcome) = ask_with(&table(), &packet, Transport::Udp);
        assert_eq!(outcome, Outcome::Answered);
        assert_eq!(m.metadata.id, 0xabcd);
        assert!(!m.metadata.authentic_data);
        assert_eq!(m.answers.len(), 1);
        assert!(m.edns.is_some());
    }

    #[test]
    fn zone_transfers_and_other_classes_are_refused() {
        assert_eq!(ask(&table(), "mesh.", RecordType::AXFR).1, Outcome::Refused);
        let mut q = Message::query();
        let mut query = Query::query(Name::from_ascii("orders.mesh.").unwrap(), RecordType::A);
        query.set_query_class(DNSClass::CH);
        q.add_query(query);
        assert_eq!(
            ask_with(&table(), &q.to_vec().unwrap(), Transport::Udp).1,
            Outcome::Refused
        );
    }

    /// A service with `ports` distinct ports: its SRV answer grows ~20 bytes per port.
    fn table_with_ports(ports: u16) -> Table {
        let mut snap = snapshot();
        let instances = (0..ports).map(|p| instance(10_000 + p, &[])).collect();
        snap.services.insert(
            "wide".into(),
            Arc::new(Service {
                name: "wide".into(),
                vip: Some(Ipv4Addr::new(127, 77, 0, 9)),
                protocol: hostmesh_config::spec::Protocol::Tcp,
                instances,
            }),
        );
        Table::build(zone(), Some(&snap))
    }

    #[test]
    fn large_answers_truncate_over_udp_and_fit_over_tcp() {
        let table = table_with_ports(40);
        // No EDNS: 512 bytes.
        let packet = query_bytes("_wide._tcp.mesh.", RecordType::SRV, None);
        let (m, outcome) = ask_with(&table, &packet, Transport::Udp);
        assert_eq!(outcome, Outcome::Truncated);
        assert!(m.metadata.truncation);
        assert!(m.answers.is_empty() && m.authorities.is_empty() && m.additionals.is_empty());
        assert_eq!(m.queries[0].name().to_ascii(), "_wide._tcp.mesh.");
        let (m, outcome) = ask_with(&table, &packet, Transport::Tcp);
        assert_eq!(outcome, Outcome::Answered);
        assert_eq!(m.answers.len(), 40);
        assert!(!m.metadata.truncation);

        // EDNS 4096 is capped at 1232: 40 ports fit, 100 do not.
        let packet = query_bytes("_wide._tcp.mesh.", RecordType::SRV, Some(4096));
        let Handled::Reply(r) = answer_local(&packet, &table, Transport::Udp) else {
            panic!()
        };
        assert!(r.bytes.len() > 512 && r.bytes.len() <= 1232);
        assert_eq!(Message::from_vec(&r.bytes).unwrap().answers.len(), 40);

        let table = table_with_ports(100);
        let Handled::Reply(r) = answer_local(&packet, &table, Transport::Udp) else {
            panic!()
        };
        assert_eq!(r.outcome, Outcome::Truncated);
        assert!(r.bytes.len() <= 1232);
        let m = Message::from_vec(&r.bytes).unwrap();
        assert!(m.metadata.truncation);
        assert!(m.edns.is_some(), "OPT stays in a truncated answer");
        let (m, _) = ask_with(&table, &packet, Transport::Tcp);
        assert_eq!(m.answers.len(), 100);
    }
}
