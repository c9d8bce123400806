//! The lookup table the shim answers from, built once per catalog snapshot.
//!
//! Queries only read an immutable `Table` (swapped whole when the catalog changes), so the
//! query path takes no lock and never waits on etcd. Keys are the name relative to the domain,
//! lowercased (`orders`, `v2.orders`, `_orders._tcp`), which makes lookups case-insensitive
//! while answers can still repeat the question's own spelling (0x20 randomisation).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::rr::rdata::SOA;
use hickory_proto::rr::{Name, RData, Record};
use hostmesh_config::CONSUL_DOMAIN;
use hostmesh_registrar::catalog::Snapshot;

/// SOA timers. Nothing transfers this zone, so only `minimum` (the negative-caching TTL, set to
/// the DNS TTL) matters; the rest are the conventional values tools expect to see.
const SOA_REFRESH: i32 = 3600;
const SOA_RETRY: i32 = 600;
const SOA_EXPIRE: i32 = 86_400;

/// The zone's fixed settings, decided when the server binds.
#[derive(Debug)]
pub struct Zone {
    /// Fully qualified, lowercase (`mesh.`).
    pub(crate) domain: Name,
    /// The domain's labels, lowercase, for comparing the tail of a question name.
    labels: Vec<Box<[u8]>>,
    /// Seconds, for answers and (as the SOA minimum) for negative caching.
    pub(crate) ttl: u32,
    /// Whether names outside the domain are forwarded (also the RA flag).
    pub(crate) forwarding: bool,
    mname: Name,
    rname: Name,
    /// `consul.`'s SOA names when Consul names are answered too (`dns.consul`).
    consul: Option<ConsulApex>,
}

/// The owner and SOA names of the `consul.` zone.
#[derive(Debug)]
struct ConsulApex {
    domain: Name,
    mname: Name,
    rname: Name,
}

impl Zone {
    pub fn new(domain: &str, ttl: Duration, forwarding: bool) -> io::Result<Zone> {
        let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidInput, what.to_owned());
        let mut domain = Name::from_ascii(domain.trim_end_matches('.'))
            .map_err(|e| invalid(&format!("dns domain {domain:?}: {e}")))?
            .to_lowercase();
        domain.set_fqdn(true);
        if domain.is_root() {
            return Err(invalid("dns domain must not be the root"));
        }
        let labels = domain.iter().map(Box::from).collect();
        let under = |label: &str| {
            Name::from_ascii(label)
                .and_then(|n| n.append_domain(&domain))
                .map_err(|e| invalid(&format!("dns domain {domain}: {e}")))
        };
        Ok(Zone {
            mname: under("ns")?,
            rname: under("hostmaster")?,
            labels,
            ttl: u32::try_from(ttl.as_secs()).unwrap_or(u32::MAX),
            forwarding,
            domain,
            consul: None,
        })
    }

    /// Also answers Consul's names under `consul.` (`dns.consul = true`).
    pub fn with_consul(mut self) -> Zone {
        let name = |text: &str| {
            let mut name = Name::from_ascii(text).expect("a fixed, valid name");
            name.set_fqdn(true);
            name
        };
        self.consul = Some(ConsulApex {
            domain: name(CONSUL_DOMAIN),
            mname: name(&format!("ns.{CONSUL_DOMAIN}")),
            rname: name(&format!("hostmaster.{CONSUL_DOMAIN}")),
        });
        self
    }

    /// Whether Consul's names are answered.
    pub(crate) fn consul(&self) -> bool {
        self.consul.is_some()
    }

    fn soa(&self, serial: u32) -> Record {
        soa(&self.domain, &self.mname, &self.rname, self.ttl, serial)
    }
}

fn soa(domain: &Name, mname: &Name, rname: &Name, ttl: u32, serial: u32) -> Record {
    Record::from_rdata(
        domain.clone(),
        ttl,
        RData::SOA(SOA::new(
            mname.clone(),
            rname.clone(),
            serial,
            SOA_REFRESH,
            SOA_RETRY,
            SOA_EXPIRE,
            ttl,
        )),
    )
}

/// What a name in the domain holds.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Entry {
    /// `NAME` or `TAG.NAME`: an A record. `ports` are the distinct ports of its instances, for
    /// the SRV forms of Consul names (empty when those are off).
    Address { vip: Ipv4Addr, ports: Arc<[u16]> },
    /// `_NAME._tcp`: one SRV per distinct port, all pointing at `target`, whose A is `vip`.
    Srv {
        ports: Arc<[u16]>,
        target: Name,
        vip: Ipv4Addr,
    },
    /// Exists only because names exist below it (`_tcp`): NODATA rather than NXDOMAIN, so a
    /// resolver that trusts "nothing below NXDOMAIN" (RFC 8020) still finds the SRV names.
    EmptyNonTerminal,
}

/// Where a question name falls.
#[derive(Debug, PartialEq)]
pub(crate) enum Found<'a> {
    /// Not under the domain.
    OutOfZone,
    /// Under the domain, but no catalog was ever loaded.
    NoCatalog,
    /// The domain itself.
    Apex,
    Entry(&'a Entry),
    /// Under the domain, not in the table.
    Missing,
}

#[derive(Debug)]
struct Catalog {
    soa: Record,
    names: HashMap<Box<[u8]>, Entry>,
    /// VIP to the name it belongs to, for PTR queries on VIPs.
    reverse: HashMap<Ipv4Addr, Name>,
    /// With Consul names on: what only they need.
    consul: Option<ConsulCatalog>,
}

#[derive(Debug)]
struct ConsulCatalog {
    /// `consul.`'s SOA, with the mesh's serial.
    soa: Record,
    /// Host names, lowercase, to their advertised address (`HOST.node.consul`).
    hosts: HashMap<Box<[u8]>, IpAddr>,
}

/// The names of one catalog snapshot (or of none, before the first).
#[derive(Debug)]
pub struct Table {
    zone: Arc<Zone>,
    catalog: Option<Catalog>,
}

impl Table {
    /// `None`: no catalog was ever loaded, so mesh names get SERVFAIL rather than a
    /// confident NXDOMAIN.
    pub fn build(zone: Arc<Zone>, snapshot: Option<&Snapshot>) -> Table {
        let catalog = snapshot.map(|s| Catalog::build(&zone, s));
        Table { zone, catalog }
    }

    pub(crate) fn zone(&self) -> &Zone {
        &self.zone
    }

    /// The zone's SOA (for authority sections and apex SOA answers); `None` before any catalog.
    pub(crate) fn soa(&self) -> Option<&Record> {
        self.catalog.as_ref().map(|c| &c.soa)
    }

    pub(crate) fn reverse(&self, ip: Ipv4Addr) -> Option<&Name> {
        self.catalog.as_ref()?.reverse.get(&ip)
    }

    /// The entry for `key`, a lowercase name relative to the domain (`orders`, `v2.orders`).
    pub(crate) fn entry(&self, key: &[u8]) -> Option<&Entry> {
        self.catalog.as_ref()?.names.get(key)
    }

    /// Whether the catalog has any name (so the names above them, `_tcp`, exist).
    pub(crate) fn has_names(&self) -> bool {
        self.catalog.as_ref().is_some_and(|c| !c.names.is_empty())
    }

    /// `consul.`'s SOA; `None` before any catalog or with Consul names off.
    pub(crate) fn consul_soa(&self) -> Option<&Record> {
        Some(&self.catalog.as_ref()?.consul.as_ref()?.soa)
    }

    /// The advertised address of the host named `key` (lowercase), with Consul names on.
    pub(crate) fn host(&self, key: &[u8]) -> Option<IpAddr> {
        let consul = self.catalog.as_ref()?.consul.as_ref()?;
        consul.hosts.get(key).copied()
    }

    /// Whether any host is known, with Consul names on.
    pub(crate) fn has_hosts(&self) -> bool {
        let consul = self.catalog.as_ref().and_then(|c| c.consul.as_ref());
        consul.is_some_and(|c| !c.hosts.is_empty())
    }

    pub(crate) fn find(&self, name: &Name) -> Found<'_> {
        // Every label: hickory's `num_labels` leaves out a leading `*`, which made
        // `*.orders.mesh` look like a name outside the zone (forwarded, not NXDOMAIN).
        let total = name.iter().count();
        let ours = self.zone.labels.len();
        if total < ours {
            return Found::OutOfZone;
        }
        let relative = total - ours;
        // A name is at most 255 bytes, so its relative part always fits.
        let mut key = [0u8; 256];
        let mut len = 0;
        let mut has_dot = false;
        for (i, label) in name.iter().enumerate() {
            if i < relative {
                if i > 0 {
                    key[len] = b'.';
                    len += 1;
                }
                // A label may hold a literal dot on the wire; such a name must not alias
                // a two-label name after joining, so it matches nothing.
                has_dot |= label.contains(&b'.');
                for (slot, byte) in key[len..].iter_mut().zip(label) {
                    *slot = byte.to_ascii_lowercase();
                }
                len += label.len();
            } else if !label.eq_ignore_ascii_case(&self.zone.labels[i - relative]) {
                return Found::OutOfZone;
            }
        }
        let Some(catalog) = &self.catalog else {
            return Found::NoCatalog;
        };
        if relative == 0 {
            return Found::Apex;
        }
        if has_dot {
            return Found::Missing;
        }
        match catalog.names.get(&key[..len]) {
            Some(entry) => Found::Entry(entry),
            None => Found::Missing,
        }
    }
}

impl Catalog {
    fn build(zone: &Zone, snapshot: &Snapshot) -> Catalog {
        let mut names = HashMap::new();
        let mut reverse = HashMap::new();
        // Tag ports serve only Consul's SRV forms: without them, every tag shares one empty list.
        let no_ports: Arc<[u16]> = Arc::from([]);
        let fqdn = |relative: &str| {
            Name::from_ascii(relative)
                .and_then(|n| n.append_domain(&zone.domain))
                .ok()
        };
        for (service_name, service) in &snapshot.services {
            // A service is listed while it has instances; an empty one can only come from a
            // hand-built snapshot, and is as gone as an absent one.
            if service.instances.is_empty() {
                continue;
            }
            // A name without a VIP yet cannot be answered; NXDOMAIN until the registrar
            // allocates one (a few milliseconds after the first registration).
            let Some(vip) = service
                .vip
                .or_else(|| snapshot.vips.get(service_name).copied())
            else {
                continue;
            };
            let key = service_name.to_ascii_lowercase();
            // Names from etcd are validated by the registrar; one that still is not a valid
            // DNS name is skipped rather than answered wrongly.
            let Some(target) = fqdn(&key) else {
                continue;
            };
            reverse.insert(vip, target.clone());

            // Each tag with the ports of the instances carrying it.
            let mut tags: BTreeMap<&str, BTreeSet<u16>> = BTreeMap::new();
            for instance in &service.instances {
                for tag in &instance.tags {
                    let ports = tags.entry(tag.as_str()).or_default();
                    if zone.consul() {
                        ports.insert(instance.port);
                    }
                }
            }
            for (tag, tag_ports) in tags {
                let tagged = format!("{tag}.{service_name}");
                if let (Some(tag_vip), Some(owner)) = (
                    snapshot.vips.get(&tagged),
                    fqdn(&tagged.to_ascii_lowercase()),
                ) {
                    reverse.insert(*tag_vip, owner);
                    let ports = if zone.consul() {
                        tag_ports.into_iter().collect()
                    } else {
                        no_ports.clone()
                    };
                    names.insert(
                        Box::from(tagged.to_ascii_lowercase().as_bytes()),
                        Entry::Address {
                            vip: *tag_vip,
                            ports,
                        },
                    );
                }
            }

            let ports: BTreeSet<u16> = service.instances.iter().map(|i| i.port).collect();
            let ports: Arc<[u16]> = ports.into_iter().collect();
            names.insert(
                Box::from(format!("_{key}._tcp").as_bytes()),
                Entry::Srv {
                    ports: ports.clone(),
                    target,
                    vip,
                },
            );
            names.insert(Box::from(key.as_bytes()), Entry::Address { vip, ports });
        }
        if !names.is_empty() {
            names.insert(Box::from(&b"_tcp"[..]), Entry::EmptyNonTerminal);
        }
        // RFC 1982 serials wrap; the low 32 bits of the etcd revision still increase with
        // every change for the first four billion of them.
        let serial = snapshot.revision as u32;
        Catalog {
            soa: zone.soa(serial),
            names,
            reverse,
            consul: zone.consul.as_ref().map(|apex| ConsulCatalog {
                soa: soa(&apex.domain, &apex.mname, &apex.rname, zone.ttl, serial),
                hosts: snapshot
                    .hosts
                    .iter()
                    .map(|(host, info)| {
                        (
                            Box::from(host.to_ascii_lowercase().as_bytes()),
                            info.address,
                        )
                    })
                    .collect(),
            }),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;
    pub(crate) use crate::fixture::{instance, snapshot};

    pub(crate) use crate::fixture::zone;

    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    fn address(vip: Ipv4Addr, ports: &[u16]) -> Entry {
        Entry::Address {
            vip,
            ports: Arc::from(ports),
        }
    }

    #[test]
    fn finds_services_tags_srv_case_insensitively() {
        let snap = snapshot();
        let table = Table::build(zone(), Some(&snap));
        let ip = |n| Ipv4Addr::new(127, 77, 0, n);
        assert_eq!(
            table.find(&name("orders.mesh.")),
            Found::Entry(&address(ip(1), &[8080, 9090]))
        );
        assert_eq!(
            table.find(&name("OrDeRs.MESH.")),
            Found::Entry(&address(ip(1), &[8080, 9090]))
        );
        assert_eq!(
            table.find(&name("v2.orders.mesh.")),
            Found::Entry(&address(ip(2), &[]))
        );
        // A tag with no VIP allocated yet, or a VIP for a tag no instance carries.
        assert_eq!(table.find(&name("v1.orders.mesh.")), Found::Missing);
        assert_eq!(table.find(&name("v2.payments.mesh.")), Found::Missing);
        match table.find(&name("_orders._TCP.mesh.")) {
            Found::Entry(Entry::Srv { ports, target, vip }) => {
                assert_eq!(&ports[..], &[8080, 9090]);
                assert_eq!(target, &name("orders.mesh."));
                assert_eq!(*vip, ip(1));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            table.find(&name("_tcp.mesh.")),
            Found::Entry(&Entry::EmptyNonTerminal)
        );
        assert_eq!(table.find(&name("mesh.")), Found::Apex);
        assert_eq!(table.find(&name("pending.mesh.")), Found::Missing);
        assert_eq!(table.find(&name("gone.mesh.")), Found::Missing);
        assert_eq!(table.find(&name("x.v2.orders.mesh.")), Found::Missing);
        // A wildcard label is a label like any other: no such name here.
        assert_eq!(table.find(&name("*.orders.mesh.")), Found::Missing);
        assert_eq!(table.find(&name("*.mesh.")), Found::Missing);
        assert_eq!(table.find(&name("example.com.")), Found::OutOfZone);
        assert_eq!(table.find(&name("orders.meshy.")), Found::OutOfZone);
        assert_eq!(table.find(&name(".")), Found::OutOfZone);
        assert_eq!(table.reverse(ip(2)), Some(&name("v2.orders.mesh.")));
        assert_eq!(table.reverse(ip(4)), None);
    }

    #[test]
    fn tag_ports_and_hosts_are_kept_only_for_consul_names() {
        let snap = snapshot();
        let ip = |n| Ipv4Addr::new(127, 77, 0, n);
        let consul = Table::build(crate::fixture::consul_zone(), Some(&snap));
        assert_eq!(consul.entry(b"v2.orders"), Some(&address(ip(2), &[8080])));
        assert_eq!(
            consul.entry(b"orders"),
            Some(&address(ip(1), &[8080, 9090]))
        );
        assert_eq!(consul.host(b"db.east"), Some("10.0.0.2".parse().unwrap()));
        assert!(consul.has_hosts() && consul.consul_soa().is_some());

        let mesh = Table::build(zone(), Some(&snap));
        assert_eq!(mesh.entry(b"v2.orders"), Some(&address(ip(2), &[])));
        assert_eq!(mesh.host(b"db.east"), None);
        assert!(!mesh.has_hosts() && mesh.consul_soa().is_none());
    }

    #[test]
    fn a_label_with_a_dot_matches_nothing() {
        let snap = snapshot();
        let table = Table::build(zone(), Some(&snap));
        let odd = Name::from_labels(vec![&b"v2.orders"[..], b"mesh"]).unwrap();
        assert_eq!(table.find(&odd), Found::Missing);
    }

    #[test]
    fn before_any_catalog_mesh_names_have_no_answer_yet() {
        let table = Table::build(zone(), None);
        assert_eq!(table.find(&name("orders.mesh.")), Found::NoCatalog);
        assert_eq!(table.find(&name("mesh.")), Found::NoCatalog);
        assert_eq!(table.find(&name("example.com.")), Found::OutOfZone);
        assert!(table.soa().is_none());
    }

    #[test]
    fn multi_label_domain() {
        let zone = Arc::new(Zone::new("svc.internal.", Duration::from_secs(5), false).unwrap());
        let snap = snapshot();
        let table = Table::build(zone, Some(&snap));
        assert!(matches!(
            table.find(&name("orders.svc.internal.")),
            Found::Entry(_)
        ));
        assert_eq!(table.find(&name("orders.internal.")), Found::OutOfZone);
        assert_eq!(table.find(&name("svc.internal.")), Found::Apex);
    }
}
