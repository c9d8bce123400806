//! Consul's names (`dns.consul = true`): the same catalog and VIPs as the mesh domain, spelled
//! the way Consul's DNS interface spells them, so apps written against Consul resolve unchanged.
//!
//! | name (each may have one datacenter label before `consul`) | answers |
//! |---|---|
//! | `NAME.service.consul`, `TAG.NAME.service.consul` | A: the VIP of `NAME.mesh` / `TAG.NAME.mesh`; SRV: one per port, target the name itself |
//! | `_NAME._tcp.service.consul` | SRV per port of the service, target `NAME.service.consul` |
//! | `_NAME._TAG.service.consul` | SRV per port of the instances carrying TAG, target `TAG.NAME.service.consul` |
//! | `HOST.node.consul` | A or AAAA: the host's advertised address |
//!
//! Nothing is stored twice: a question is mapped to the mesh table's key at lookup time (the
//! table is rebuilt per catalog change, so a copy per domain would cost every rebuild).

use std::net::{IpAddr, Ipv4Addr};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::metrics::Outcome;
use super::table::{Entry, Table};
use hostmesh_config::CONSUL_DOMAIN;

/// SRV fields, as for the mesh's: every port equally good, the VIP balancing behind each.
const SRV_PRIORITY: u16 = 0;
const SRV_WEIGHT: u16 = 1;
/// A wire name has at most 127 labels (255 bytes, each label at least 2).
const MAX_LABELS: usize = 128;

/// What a name under `consul.` holds.
#[derive(Debug, PartialEq)]
pub(crate) enum Found<'a> {
    /// No catalog was ever loaded: SERVFAIL, as for mesh names.
    NoCatalog,
    /// `consul.` itself: its SOA.
    Apex,
    /// Exists only because names exist below it (`service`, `node`, `_tcp.service`, each with
    /// or without a datacenter): NODATA rather than NXDOMAIN.
    EmptyNonTerminal,
    /// `NAME.service`, `TAG.NAME.service`: A is the VIP; SRV one per port, target the name
    /// itself (Consul answers SRV on the plain name too).
    Service { vip: Ipv4Addr, ports: &'a [u16] },
    /// `_NAME._tcp.service`, `_NAME._TAG.service`: SRV one per port pointing at `target`, whose
    /// A (the VIP) goes in the additional section.
    Srv {
        vip: Ipv4Addr,
        ports: &'a [u16],
        target: Name,
    },
    /// `HOST.node`: the host's advertised address.
    Node(IpAddr),
    /// Under `consul.`, not in the catalog: NXDOMAIN.
    Missing,
}

#[derive(Clone, Copy)]
enum Kind {
    Service,
    Node,
}

/// Where `name` falls under `consul.`; `None` when it is not under it or Consul names are off
/// (then it is forwarded or refused like any other name).
pub(crate) fn find<'t>(table: &'t Table, name: &Name) -> Option<Found<'t>> {
    if !table.zone().consul() {
        return None;
    }
    let mut all: [&[u8]; MAX_LABELS] = [&[]; MAX_LABELS];
    let mut count = 0;
    for label in name.iter() {
        // More labels than a wire name can hold: not ours.
        *all.get_mut(count)? = label;
        count += 1;
    }
    let (last, labels) = all[..count].split_last()?;
    if !last.eq_ignore_ascii_case(CONSUL_DOMAIN.as_bytes()) {
        return None;
    }
    if table.consul_soa().is_none() {
        return Some(Found::NoCatalog);
    }
    if labels.is_empty() {
        return Some(Found::Apex);
    }
    // `service` or `node` last, else before one datacenter label. The last label is looked at
    // first: `x.service.service.consul` is the tag `x` of the service `service`.
    let n = labels.len();
    let (head, kind) = if let Some(kind) = kind_of(labels[n - 1]) {
        (&labels[..n - 1], kind)
    } else if n >= 2
        && let Some(kind) = kind_of(labels[n - 2])
    {
        (&labels[..n - 2], kind)
    } else {
        return Some(Found::Missing);
    };
    // What follows the service part (`service.consul`, `service.dc1.consul`), for SRV targets.
    let suffix = &all[head.len()..count];
    Some(match kind {
        Kind::Service => service(table, head, suffix),
        Kind::Node => node(table, head),
    })
}

fn kind_of(label: &[u8]) -> Option<Kind> {
    if label.eq_ignore_ascii_case(b"service") {
        Some(Kind::Service)
    } else if label.eq_ignore_ascii_case(b"node") {
        Some(Kind::Node)
    } else {
        None
    }
}

/// The labels before `service[.DC].consul`.
fn service<'t>(table: &'t Table, head: &[&[u8]], suffix: &[&[u8]]) -> Found<'t> {
    let found = match head {
        [] => return empty_non_terminal(table.has_names()),
        [tcp] if tcp.eq_ignore_ascii_case(b"_tcp") => return empty_non_terminal(table.has_names()),
        [name] => address(table, &[name]).map(|(vip, ports)| Found::Service { vip, ports }),
        [name, tag] => match (name.strip_prefix(b"_"), tag.strip_prefix(b"_")) {
            // RFC 2782's `_service._proto`: Consul reads the proto as a tag, except `_tcp`.
            (Some(name), Some(tag)) if tag.eq_ignore_ascii_case(b"tcp") => {
                srv(table, &[name], suffix)
            }
            (Some(name), Some(tag)) => srv(table, &[tag, name], suffix),
            (None, None) => {
                address(table, &[name, tag]).map(|(vip, ports)| Found::Service { vip, ports })
            }
            _ => None,
        },
        _ => None,
    };
    found.unwrap_or(Found::Missing)
}

/// The labels before `node[.DC].consul`: a host name (which may itself hold dots).
fn node<'t>(table: &'t Table, head: &[&[u8]]) -> Found<'t> {
    if head.is_empty() {
        return empty_non_terminal(table.has_hosts());
    }
    let mut buf = [0u8; 256];
    key(head, &mut buf)
        .and_then(|key| table.host(key))
        .map_or(Found::Missing, Found::Node)
}

fn empty_non_terminal<'t>(exists: bool) -> Found<'t> {
    if exists {
        Found::EmptyNonTerminal
    } else {
        Found::Missing
    }
}

/// The VIP and ports of the mesh name made of `labels` (`orders`, `v2.orders`).
fn address<'t>(table: &'t Table, labels: &[&[u8]]) -> Option<(Ipv4Addr, &'t [u16])> {
    let mut buf = [0u8; 256];
    match table.entry(key(labels, &mut buf)?)? {
        Entry::Address { vip, ports } => Some((*vip, ports)),
        _ => None,
    }
}

/// SRV for the mesh name made of `labels`, pointing at `labels` + `suffix` (lowercase).
fn srv<'t>(table: &'t Table, labels: &[&[u8]], suffix: &[&[u8]]) -> Option<Found<'t>> {
    let (vip, ports) = address(table, labels)?;
    let target = Name::from_labels(labels.iter().chain(suffix).copied())
        .ok()?
        .to_lowercase();
    Some(Found::Srv { vip, ports, target })
}

/// `labels` joined with dots and lowercased, as the table keys names; `None` for an empty label
/// or one holding a literal dot (which must not alias two labels).
fn key<'k>(labels: &[&[u8]], buf: &'k mut [u8; 256]) -> Option<&'k [u8]> {
    let mut len = 0;
    for (i, label) in labels.iter().enumerate() {
        if label.is_empty() || label.contains(&b'.') {
            return None;
        }
        if i > 0 {
            *buf.get_mut(len)? = b'.';
            len += 1;
        }
        let slots = buf.get_mut(len..len + label.len())?;
        for (slot, byte) in slots.iter_mut().zip(label.iter()) {
            *slot = byte.to_ascii_lowercase();
        }
        len += label.len();
    }
    Some(&buf[..len])
}

/// Fills `m` (a NOERROR response to a question for `name`) with the answer for `found`.
pub(crate) fn answer(
    table: &Table,
    found: &Found<'_>,
    name: &Name,
    qtype: RecordType,
    m: &mut Message,
) -> Outcome {
    // In the zone with no catalog yet: "don't know", not a confident NXDOMAIN.
    let Some(soa) = table.consul_soa().filter(|_| *found != Found::NoCatalog) else {
        m.metadata.response_code = ResponseCode::ServFail;
        return Outcome::ServFail;
    };
    m.metadata.authoritative = true;
    let ttl = table.zone().ttl;
    let wants = |t: RecordType| qtype == t || qtype == RecordType::ANY;
    let record = |owner: &Name, rdata| Record::from_rdata(owner.clone(), ttl, rdata);
    let srvs = |m: &mut Message, ports: &[u16], target: &Name| {
        for port in ports {
            let rdata = SRV::new(SRV_PRIORITY, SRV_WEIGHT, *port, target.clone());
            m.add_answer(record(name, RData::SRV(rdata)));
        }
    };
    match found {
        Found::Missing => {
            m.metadata.response_code = ResponseCode::NXDomain;
            m.add_authority(soa.clone());
            return Outcome::NxDomain;
        }
        Found::Apex if wants(RecordType::SOA) => {
            let mut record = soa.clone();
            // Repeat the question's spelling, as for every other answer.
            record.name = name.clone();
            m.add_answer(record);
        }
        Found::Service { vip, ports } if wants(RecordType::A) || wants(RecordType::SRV) => {
            if wants(RecordType::A) {
                m.add_answer(record(name, RData::A(A(*vip))));
            }
            if wants(RecordType::SRV) {
                let target = name.to_lowercase();
                srvs(m, ports, &target);
                if !wants(RecordType::A) {
                    m.add_additional(record(&target, RData::A(A(*vip))));
                }
            }
        }
        Found::Srv { vip, ports, target } if wants(RecordType::SRV) => {
            srvs(m, ports, target);
            m.add_additional(record(target, RData::A(A(*vip))));
        }
        Found::Node(IpAddr::V4(ip)) if wants(RecordType::A) => {
            m.add_answer(record(name, RData::A(A(*ip))));
        }
        Found::Node(IpAddr::V6(ip)) if wants(RecordType::AAAA) => {
            m.add_answer(record(name, RData::AAAA(AAAA(*ip))));
        }
        // The name exists, just not with this type.
        _ => {
            m.add_authority(soa.clone());
            return Outcome::NoData;
        }
    }
    Outcome::Answered
}
