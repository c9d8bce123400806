//! The catalog's working copy of etcd: every key under `<prefix>/v1/` that parsed, with its
//! `mod_revision`. Pure logic (no I/O), so the rules below are unit-tested directly:
//! - an event older than what is held for its key is ignored;
//! - a value that fails to parse is skipped with one warning and never replaces a good one;
//! - a VIP, once seen, never changes (a different value in etcd is refused and logged).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv4Addr;

use crate::keys::{Key, Layout};
use crate::record::{HostInfo, InstanceRecord};

use super::snapshot::{Instance, Service, Snapshot};

#[derive(Debug, Clone, PartialEq)]
enum Value {
    HostInfo(HostInfo),
    Instance(InstanceRecord),
    Vip(Ipv4Addr),
    Route(serde_json::Value),
    Policy(serde_json::Value),
}

#[derive(Debug, Clone, PartialEq)]
struct Entry {
    mod_revision: i64,
    value: Value,
}

/// What applying a change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Changed,
    Unchanged,
}

#[derive(Debug)]
pub struct State {
    layout: Layout,
    entries: BTreeMap<String, Entry>,
    revision: i64,
    /// VIPs this agent has handed out to apps: never changed afterwards, even if etcd says so.
    seen_vips: HashMap<String, Ipv4Addr>,
    /// (key, mod_revision) of bad values already warned about, so a re-list does not repeat it.
    warned: HashSet<(String, i64)>,
}

impl State {
    pub fn new(layout: Layout) -> Self {
        State {
            layout,
            entries: BTreeMap::new(),
            revision: 0,
            seen_vips: HashMap::new(),
            warned: HashSet::new(),
        }
    }

    /// Seeds the VIPs this agent already handed out (from a persisted snapshot).
    pub fn remember_vips(&mut self, vips: &BTreeMap<String, Ipv4Addr>) {
        for (name, ip) in vips {
            self.seen_vips.entry(name.clone()).or_insert(*ip);
        }
    }

    pub fn revision(&self) -> i64 {
        self.revision
    }

    pub fn set_revision(&mut self, revision: i64) {
        self.revision = self.revision.max(revision);
    }

    /// Follows etcd's revision even backwards: an etcd rebuilt from nothing restarts its
    /// revisions, and a watch from our old, higher revision would miss everything it writes.
    pub fn reset_revision(&mut self, revision: i64) {
        self.revision = revision;
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// A put seen in a list or a watch event.
    pub fn put(&mut self, key: &str, value: &[u8], mod_revision: i64) -> Applied {
        if self
            .entries
            .get(key)
            .is_some_and(|e| e.mod_revision >= mod_revision)
        {
            return Applied::Unchanged;
        }
        let parsed = match self.parse(key, value) {
            Ok(Some(v)) => v,
            Ok(None) => return Applied::Unchanged,
            Err(why) => {
                if self.warned.insert((key.to_owned(), mod_revision)) {
                    tracing::warn!(key, mod_revision, "skipping a bad value in etcd: {why}");
                }
                return Applied::Unchanged;
            }
        };
        let parsed = match parsed {
            Value::Vip(ip) => Value::Vip(self.sticky_vip(key, ip)),
            other => other,
        };
        let changed = self.entries.get(key).is_none_or(|e| e.value != parsed);
        self.entries.insert(
            key.to_owned(),
            Entry {
                mod_revision,
                value: parsed,
            },
        );
        if changed {
            Applied::Changed
        } else {
            Applied::Unchanged
        }
    }

    /// A delete seen in a watch event.
    pub fn delete(&mut self, key: &str, mod_revision: i64) -> Applied {
        match self.entries.get(key) {
            Some(e) if e.mod_revision < mod_revision => {
                self.entries.remove(key);
                self.warned.retain(|(k, _)| k != key);
                Applied::Changed
            }
            _ => Applied::Unchanged,
        }
    }

    /// Replaces everything with a fresh listing taken at `revision`; returns how many keys
    /// differed (added, removed or changed) so the caller can log drift.
    pub fn replace_with(&mut self, listed: State) -> usize {
        let mut differ = 0;
        for (k, e) in &self.entries {
            match listed.entries.get(k) {
                Some(n) if n.value == e.value => {}
                _ => differ += 1,
            }
        }
        differ += listed
            .entries
            .keys()
            .filter(|k| !self.entries.contains_key(*k))
            .count();
        self.entries = listed.entries;
        self.revision = listed.revision;
        self.seen_vips.extend(listed.seen_vips);
        self.warned.extend(listed.warned);
        differ
    }

    /// A fresh, empty state that shares this one's memory of VIPs and warnings (for a re-list).
    pub fn empty_like(&self) -> State {
        State {
            layout: self.layout.clone(),
            entries: BTreeMap::new(),
            revision: 0,
            seen_vips: self.seen_vips.clone(),
            warned: self.warned.clone(),
        }
    }

    fn sticky_vip(&mut self, key: &str, ip: Ipv4Addr) -> Ipv4Addr {
        let Key::Vip { name } = self.layout.parse(key) else {
            return ip;
        };
        match self.seen_vips.get(name) {
            Some(seen) if *seen != ip => {
                tracing::error!(
                    name,
                    seen = %seen,
                    etcd = %ip,
                    "the VIP of a name changed in etcd; keeping the one apps already use"
                );
                *seen
            }
            Some(seen) => *seen,
            None => {
                self.seen_vips.insert(name.to_owned(), ip);
                ip
            }
        }
    }

    fn parse(&self, key: &str, value: &[u8]) -> Result<Option<Value>, String> {
        let json = |v: &[u8]| -> Result<serde_json::Value, String> {
            serde_json::from_slice(v).map_err(|e| e.to_string())
        };
        Ok(Some(match self.layout.parse(key) {
            Key::HostInfo { .. } => {
                Value::HostInfo(serde_json::from_slice(value).map_err(|e| e.to_string())?)
            }
            Key::Instance { .. } => {
                Value::Instance(serde_json::from_slice(value).map_err(|e| e.to_string())?)
            }
            Key::Vip { .. } => Value::Vip(parse_vip(value)?),
            Key::Route { .. } => Value::Route(json(value)?),
            Key::Policy { .. } => Value::Policy(json(value)?),
            Key::VipOwner { .. } | Key::Unknown => return Ok(None),
        }))
    }

    /// Builds the immutable snapshot readers use.
    pub fn snapshot(&self) -> Snapshot {
        let mut snap = Snapshot {
            revision: self.revision,
            ..Snapshot::default()
        };
        for (name, ip) in &self.seen_vips {
            snap.vips.insert(name.clone(), *ip);
        }
        let mut records: Vec<(&str, &str, &str, &InstanceRecord)> = Vec::new();
        for (key, entry) in &self.entries {
            match (&entry.value, self.layout.parse(key)) {
                (Value::HostInfo(info), Key::HostInfo { host }) => {
                    snap.hosts.insert(host.to_owned(), info.clone());
                }
                (Value::Instance(rec), Key::Instance { host, service, id }) => {
                    records.push((host, service, id, rec));
                }
                (Value::Vip(ip), Key::Vip { name }) => {
                    snap.vips.insert(name.to_owned(), *ip);
                }
                (Value::Route(v), Key::Route { service }) => {
                    snap.routes.insert(service.to_owned(), v.clone());
                }
                (Value::Policy(v), Key::Policy { service }) => {
                    snap.policies.insert(service.to_owned(), v.clone());
                }
                _ => {}
            }
        }
        for (host, service, id, rec) in records {
            let info = snap.hosts.get(host);
            let instance = Instance {
                host: host.to_owned(),
                id: id.to_owned(),
                address: info.map(|i| i.address),
                inbound_port: info.map(|i| i.inbound_port),
                zone: info.and_then(|i| i.zone.clone()),
                port: rec.port,
                protocol: rec.protocol,
                tags: rec.tags.clone(),
                weight: rec.weight,
                health: rec.health,
            };
            snap.services
                .entry(service.to_owned())
                .or_insert_with(|| Service {
                    name: service.to_owned(),
                    vip: None,
                    protocol: rec.protocol,
                    instances: Vec::new(),
                })
                .instances
                .push(instance);
        }
        for svc in snap.services.values_mut() {
            svc.vip = snap.vips.get(&svc.name).copied();
            svc.instances
                .sort_by(|a, b| (&a.host, &a.id).cmp(&(&b.host, &b.id)));
            svc.protocol = majority_protocol(&svc.instances).unwrap_or(svc.protocol);
        }
        snap
    }
}

fn majority_protocol(instances: &[Instance]) -> Option<crate::spec::Protocol> {
    let mut counts: Vec<(crate::spec::Protocol, usize)> = Vec::new();
    for i in instances {
        match counts.iter_mut().find(|(p, _)| *p == i.protocol) {
            Some((_, n)) => *n += 1,
            None => counts.push((i.protocol, 1)),
        }
    }
    counts.into_iter().max_by_key(|(_, n)| *n).map(|(p, _)| p)
}

/// A VIP value is a JSON string (`"127.77.0.12"`); a bare address is accepted too, since
/// operators sometimes write one with etcdctl.
pub fn parse_vip(value: &[u8]) -> Result<Ipv4Addr, String> {
    let text = std::str::from_utf8(value)
        .map_err(|e| e.to_string())?
        .trim();
    let text = match serde_json::from_str::<String>(text) {
        Ok(s) => s,
        Err(_) => text.to_owned(),
    };
    text.parse::<Ipv4Addr>()
        .map_err(|e| format!("VIP {text:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Health;

    fn layout() -> Layout {
        Layout::new("/hm")
    }

    fn instance_json(health: &str) -> String {
        format!(
            r#"{{"port":8080,"protocol":"http","tags":["v2"],"weight":100,"health":"{health}"}}"#
        )
    }

    const INFO: &str = r#"{"address":"198.18.0.10","inbound_port":4143,"version":"0.1.0"}"#;

    #[test]
    fn joins_instances_with_host_info() {
        let l = layout();
        let mut s = State::new(l.clone());
        s.put(&l.host_info("b"), INFO.as_bytes(), 2);
        s.put(
            &l.instance("b", "orders", "o1"),
            instance_json("passing").as_bytes(),
            2,
        );
        s.put(&l.vip("orders"), br#""127.77.0.5""#, 3);
        let snap = s.snapshot();
        let svc = snap.service("orders").expect("orders");
        assert_eq!(svc.vip, Some(Ipv4Addr::new(127, 77, 0, 5)));
        assert_eq!(svc.instances.len(), 1);
        assert_eq!(
            svc.instances[0].address,
            Some("198.18.0.10".parse().expect("ip"))
        );
        assert_eq!(svc.instances[0].health, Health::Passing);
    }

    #[test]
    fn older_events_are_ignored() {
        let l = layout();
        let mut s = State::new(l.clone());
        let k = l.instance("b", "orders", "o1");
        assert_eq!(
            s.put(&k, instance_json("critical").as_bytes(), 10),
            Applied::Changed
        );
        assert_eq!(
            s.put(&k, instance_json("passing").as_bytes(), 9),
            Applied::Unchanged
        );
        assert_eq!(s.delete(&k, 8), Applied::Unchanged);
        assert_eq!(
            s.snapshot().services["orders"].instances[0].health,
            Health::Critical
        );
        assert_eq!(s.delete(&k, 11), Applied::Changed);
        assert!(s.snapshot().services.is_empty());
    }

    #[test]
    fn bad_values_never_replace_good_ones() {
        let l = layout();
        let mut s = State::new(l.clone());
        let k = l.instance("b", "orders", "o1");
        s.put(&k, instance_json("passing").as_bytes(), 5);
        assert_eq!(s.put(&k, b"{not json", 6), Applied::Unchanged);
        assert_eq!(s.snapshot().services["orders"].instances.len(), 1);
        // A bad value under a new key is skipped, the rest stays.
        s.put(&l.instance("b", "orders", "o2"), br#"{"port":"x"}"#, 7);
        s.put(&l.vip("orders"), b"not-an-ip", 7);
        let snap = s.snapshot();
        assert_eq!(snap.services["orders"].instances.len(), 1);
        assert!(snap.vips.is_empty());
    }

    #[test]
    fn a_seen_vip_never_changes() {
        let l = layout();
        let mut s = State::new(l.clone());
        s.put(&l.vip("orders"), br#""127.77.0.5""#, 3);
        s.put(&l.vip("orders"), br#""127.77.0.9""#, 4);
        assert_eq!(s.snapshot().vips["orders"], Ipv4Addr::new(127, 77, 0, 5));
        // Deleted in etcd: the name keeps its VIP.
        s.delete(&l.vip("orders"), 5);
        assert_eq!(s.snapshot().vips["orders"], Ipv4Addr::new(127, 77, 0, 5));
    }

    #[test]
    fn replace_counts_drift() {
        let l = layout();
        let mut s = State::new(l.clone());
        s.put(
            &l.instance("b", "a", "1"),
            instance_json("passing").as_bytes(),
            2,
        );
        s.put(
            &l.instance("b", "b", "1"),
            instance_json("passing").as_bytes(),
            2,
        );
        let mut listed = s.empty_like();
        listed.put(
            &l.instance("b", "a", "1"),
            instance_json("passing").as_bytes(),
            2,
        );
        listed.put(
            &l.instance("b", "c", "1"),
            instance_json("passing").as_bytes(),
            3,
        );
        listed.set_revision(3);
        assert_eq!(s.replace_with(listed), 2);
        assert_eq!(s.revision(), 3);
        let names: Vec<_> = s.snapshot().services.keys().cloned().collect();
        assert_eq!(names, ["a", "c"]);
    }

    #[test]
    fn vip_values_parse() {
        assert_eq!(
            parse_vip(br#""127.77.0.1""#),
            Ok(Ipv4Addr::new(127, 77, 0, 1))
        );
        assert_eq!(parse_vip(b"127.77.0.1\n"), Ok(Ipv4Addr::new(127, 77, 0, 1)));
        assert!(parse_vip(br#""::1""#).is_err());
    }
}
