//! Consul's names (`consul.rs`) through the pure handler: every name form, the negative answers,
//! case, the SOA, and that they are ordinary forwarded names when `dns.consul` is off.

#![allow(clippy::unwrap_used)]

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, PTR};
use hickory_proto::rr::{Name, RData, RecordType};

use super::answer::tests::query_bytes;
use super::answer::{Handled, answer_local};
use super::fixture::{consul_zone, snapshot, zone};
use super::metrics::Outcome;
use super::table::{Table, Zone};
use super::wire::Transport;

fn table() -> Table {
    Table::build(consul_zone(), Some(&snapshot()))
}

fn ask(table: &Table, name: &str, rtype: RecordType) -> (Message, Outcome) {
    match answer_local(&query_bytes(name, rtype, None), table, Transport::Udp) {
        Handled::Reply(r) => (Message::from_vec(&r.bytes).unwrap(), r.outcome),
        other => panic!("{name} {rtype}: {other:?}"),
    }
}

fn vip(n: u8) -> RData {
    RData::A(A(Ipv4Addr::new(127, 77, 0, n)))
}

/// (port, target) of every SRV answer.
fn srvs(m: &Message) -> Vec<(u16, String)> {
    m.answers
        .iter()
        .map(|r| match &r.data {
            RData::SRV(s) => {
                assert_eq!((s.priority, s.weight), (0, 1), "{m}");
                (s.port, s.target.to_ascii())
            }
            other => panic!("{other:?}"),
        })
        .collect()
}

fn assert_consul_soa(m: &Message) {
    assert_eq!(m.authorities.len(), 1, "{m}");
    let RData::SOA(soa) = &m.authorities[0].data else {
        panic!("{m}")
    };
    assert_eq!(m.authorities[0].name.to_ascii(), "consul.");
    assert_eq!(m.authorities[0].ttl, 5);
    assert_eq!(soa.mname.to_ascii(), "ns.consul.");
    assert_eq!(soa.rname.to_ascii(), "hostmaster.consul.");
    assert_eq!((soa.serial, soa.minimum), (42, 5));
}

#[test]
fn service_names_answer_the_mesh_vips_in_the_question_case() {
    let t = table();
    for (name, n) in [
        ("orders.service.consul.", 1),
        ("OrDeRs.SeRvIcE.CoNsUl.", 1),
        ("orders.service.dc1.consul.", 1),
        ("orders.service.EU-West.consul.", 1),
        ("v2.orders.service.consul.", 2),
        ("V2.Orders.service.dc1.consul.", 2),
        ("payments.service.consul.", 3),
    ] {
        let (m, outcome) = ask(&t, name, RecordType::A);
        assert_eq!(outcome, Outcome::Answered, "{name}: {m}");
        assert!(m.metadata.authoritative, "{name}");
        assert!(m.metadata.recursion_available, "{name}");
        assert_eq!(m.answers.len(), 1, "{name}: {m}");
        assert_eq!(m.answers[0].name.to_ascii(), name);
        assert_eq!(m.answers[0].ttl, 5);
        assert_eq!(m.answers[0].data, vip(n), "{name}");
    }
}

#[test]
fn rfc2782_srv_names_answer_per_port_with_the_a_additional() {
    let t = table();
    let (m, outcome) = ask(&t, "_orders._tcp.service.consul.", RecordType::SRV);
    assert_eq!(outcome, Outcome::Answered);
    assert!(m.metadata.authoritative);
    assert_eq!(m.answers[0].name.to_ascii(), "_orders._tcp.service.consul.");
    let target = "orders.service.consul.".to_owned();
    assert_eq!(srvs(&m), [(8080, target.clone()), (9090, target.clone())]);
    assert_eq!(m.additionals.len(), 1, "{m}");
    assert_eq!(m.additionals[0].name.to_ascii(), target);
    assert_eq!(m.additionals[0].data, vip(1));

    // With a datacenter, the target keeps it (and is lowercase whatever the question's case).
    let (m, _) = ask(&t, "_Orders._TCP.service.DC1.consul.", RecordType::SRV);
    let target = "orders.service.dc1.consul.".to_owned();
    assert_eq!(srvs(&m), [(8080, target.clone()), (9090, target.clone())]);
    assert_eq!(m.additionals[0].name.to_ascii(), target);

    // A tag in the proto's place: the instances carrying it, pointing at the tag's name.
    let (m, outcome) = ask(&t, "_orders._v2.service.consul.", RecordType::SRV);
    assert_eq!(outcome, Outcome::Answered);
    assert_eq!(srvs(&m), [(8080, "v2.orders.service.consul.".to_owned())]);
    assert_eq!(m.additionals[0].data, vip(2));
    // v1 has instances but no VIP: as `v1.orders.mesh`, it does not exist.
    assert_eq!(
        ask(&t, "_orders._v1.service.consul.", RecordType::SRV).1,
        Outcome::NxDomain
    );
}

#[test]
fn srv_on_the_plain_name_points_at_itself_as_consul_does() {
    let t = table();
    let (m, outcome) = ask(&t, "orders.service.consul.", RecordType::SRV);
    assert_eq!(outcome, Outcome::Answered);
    let me = "orders.service.consul.".to_owned();
    assert_eq!(srvs(&m), [(8080, me.clone()), (9090, me.clone())]);
    assert_eq!(m.additionals[0].name.to_ascii(), me);
    assert_eq!(m.additionals[0].data, vip(1));
    let (m, _) = ask(&t, "v2.orders.service.consul.", RecordType::SRV);
    assert_eq!(srvs(&m), [(8080, "v2.orders.service.consul.".to_owned())]);
    // ANY: the A and the SRV records.
    let (m, outcome) = ask(&t, "orders.service.consul.", RecordType::ANY);
    assert_eq!(outcome, Outcome::Answered);
    assert_eq!(m.answers.len(), 3, "{m}");
    assert_eq!(m.answers[0].data, vip(1));
}

#[test]
fn node_names_answer_the_hosts_advertised_address() {
    let t = table();
    let v4 = |a, b, c, d| RData::A(A(Ipv4Addr::new(a, b, c, d)));
    for (name, data) in [
        ("web-01.node.consul.", v4(10, 0, 0, 1)),
        ("WEB-01.Node.dc1.consul.", v4(10, 0, 0, 1)),
        ("db.east.node.consul.", v4(10, 0, 0, 2)),
    ] {
        let (m, outcome) = ask(&t, name, RecordType::A);
        assert_eq!(outcome, Outcome::Answered, "{name}");
        assert!(m.metadata.authoritative);
        assert_eq!(m.answers[0].name.to_ascii(), name);
        assert_eq!(m.answers[0].data, data, "{name}");
    }
    let (m, outcome) = ask(&t, "v6.node.consul.", RecordType::AAAA);
    assert_eq!(outcome, Outcome::Answered);
    let v6: Ipv6Addr = "fd00::6".parse().unwrap();
    assert_eq!(m.answers[0].data, RData::AAAA(AAAA(v6)));
    // The other address family: the name exists, without that type.
    let (m, outcome) = ask(&t, "v6.node.consul.", RecordType::A);
    assert_eq!(outcome, Outcome::NoData);
    assert_consul_soa(&m);
    assert_eq!(
        ask(&t, "web-01.node.consul.", RecordType::AAAA).1,
        Outcome::NoData
    );
    let (m, outcome) = ask(&t, "nosuch.node.consul.", RecordType::A);
    assert_eq!(outcome, Outcome::NxDomain);
    assert_consul_soa(&m);
}

#[test]
fn unknown_names_under_consul_are_nxdomain_with_the_consul_soa() {
    let t = table();
    for name in [
        "nope.service.consul.",
        "pending.service.consul.",
        "gone.service.consul.",
        "v3.orders.service.consul.",
        "x.v2.orders.service.consul.",
        "_nope._tcp.service.consul.",
        "_orders.service.consul.",
        "_orders.x.service.consul.",
        "orders._tcp.service.consul.",
        "_._tcp.service.consul.",
        "*.service.consul.",
        "orders.service.a.b.consul.",
        "orders.consul.",
        "dc1.consul.",
        "orders.nodes.consul.",
        "web-01.node.service.consul.",
        "web-01.node.a.b.consul.",
    ] {
        let (m, outcome) = ask(&t, name, RecordType::A);
        assert_eq!(outcome, Outcome::NxDomain, "{name}: {m}");
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        assert!(m.metadata.authoritative, "{name}");
        assert!(m.answers.is_empty());
        assert_consul_soa(&m);
    }
    // A label holding a literal dot does not alias two labels.
    let odd = Name::from_labels(vec![&b"v2.orders"[..], b"service", b"consul"]).unwrap();
    let mut q = Message::query();
    q.add_query(hickory_proto::op::Query::query(odd, RecordType::A));
    let Handled::Reply(r) = answer_local(&q.to_vec().unwrap(), &t, Transport::Udp) else {
        panic!()
    };
    assert_eq!(r.outcome, Outcome::NxDomain);
}

#[test]
fn existing_names_of_another_type_and_names_above_them_are_nodata() {
    let t = table();
    for (name, rtype) in [
        ("orders.service.consul.", RecordType::AAAA),
        ("orders.service.consul.", RecordType::TXT),
        ("_orders._tcp.service.consul.", RecordType::A),
        ("service.consul.", RecordType::A),
        ("service.dc1.consul.", RecordType::SRV),
        ("_tcp.service.consul.", RecordType::SRV),
        ("node.consul.", RecordType::A),
        ("node.dc1.consul.", RecordType::A),
        ("consul.", RecordType::NS),
        ("consul.", RecordType::A),
    ] {
        let (m, outcome) = ask(&t, name, rtype);
        assert_eq!(outcome, Outcome::NoData, "{name} {rtype}: {m}");
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.metadata.authoritative);
        assert!(m.answers.is_empty());
        assert_consul_soa(&m);
    }
}

#[test]
fn the_consul_apex_answers_its_soa() {
    let (m, outcome) = ask(&table(), "CONSUL.", RecordType::SOA);
    assert_eq!(outcome, Outcome::Answered);
    assert_eq!(m.answers.len(), 1);
    assert_eq!(m.answers[0].name.to_ascii(), "CONSUL.");
    let RData::SOA(soa) = &m.answers[0].data else {
        panic!("{m}")
    };
    assert_eq!(soa.mname.to_ascii(), "ns.consul.");
}

#[test]
fn an_empty_catalog_has_no_service_or_node_names() {
    let t = Table::build(consul_zone(), Some(&Default::default()));
    for name in ["service.consul.", "node.consul.", "_tcp.service.consul."] {
        assert_eq!(ask(&t, name, RecordType::A).1, Outcome::NxDomain, "{name}");
    }
    assert_eq!(ask(&t, "consul.", RecordType::SOA).1, Outcome::Answered);
}

#[test]
fn servfail_before_any_catalog() {
    let t = Table::build(consul_zone(), None);
    for (name, rtype) in [
        ("orders.service.consul.", RecordType::A),
        ("_orders._tcp.service.consul.", RecordType::SRV),
        ("web-01.node.consul.", RecordType::A),
        ("nope.consul.", RecordType::A),
        ("consul.", RecordType::SOA),
    ] {
        let (m, outcome) = ask(&t, name, rtype);
        assert_eq!(outcome, Outcome::ServFail, "{name}");
        assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
        assert!(!m.metadata.authoritative);
        assert!(m.authorities.is_empty());
    }
}

#[test]
fn off_by_default_consul_names_are_forwarded_or_refused_like_any_other() {
    let snap = snapshot();
    let t = Table::build(zone(), Some(&snap));
    for name in [
        "orders.service.consul.",
        "_orders._tcp.service.consul.",
        "web-01.node.consul.",
        "consul.",
    ] {
        let packet = query_bytes(name, RecordType::A, None);
        assert!(
            matches!(
                answer_local(&packet, &t, Transport::Udp),
                Handled::Forward(_)
            ),
            "{name}"
        );
    }
    let no_upstream = Arc::new(Zone::new("mesh", Duration::from_secs(5), false).unwrap());
    let t = Table::build(no_upstream, Some(&snap));
    let (m, outcome) = ask(&t, "orders.service.consul.", RecordType::A);
    assert_eq!(outcome, Outcome::Refused);
    assert!(!m.metadata.recursion_available);
}

#[test]
fn with_consul_on_mesh_names_ptr_and_other_names_are_unchanged() {
    let t = table();
    let (m, _) = ask(&t, "orders.mesh.", RecordType::A);
    assert_eq!(m.answers[0].data, vip(1));
    let (m, _) = ask(&t, "_orders._tcp.mesh.", RecordType::SRV);
    assert_eq!(srvs(&m)[0].1, "orders.mesh.");
    // PTR for a VIP still names its mesh name.
    let (m, _) = ask(&t, "2.0.77.127.in-addr.arpa.", RecordType::PTR);
    assert_eq!(
        m.answers[0].data,
        RData::PTR(PTR(Name::from_ascii("v2.orders.mesh.").unwrap()))
    );
    for name in ["example.com.", "consul.example.com.", "service.consul.io."] {
        let packet = query_bytes(name, RecordType::A, None);
        assert!(
            matches!(
                answer_local(&packet, &t, Transport::Udp),
                Handled::Forward(_)
            ),
            "{name}"
        );
    }
}

#[test]
fn the_longest_names_under_consul_are_answered() {
    let t = table();
    // 255 bytes on the wire: 119 labels of one byte, then `service.consul`.
    let long = format!("{}service.consul.", "a.".repeat(119));
    for rtype in [RecordType::A, RecordType::SRV, RecordType::ANY] {
        assert_eq!(ask(&t, &long, rtype).1, Outcome::NxDomain);
    }
    let long = format!("{}node.consul.", "a.".repeat(120));
    assert_eq!(ask(&t, &long, RecordType::A).1, Outcome::NxDomain);
}
