//! The catalog's working copy of etcd: every key under `<prefix>/v1/` that parsed, with its
//! `mod_revision`. Pure logic (no I/O), so the rules below are unit-tested directly:
//! - an event older than what is held for its key is ignored;
//! - a value that fails to parse or breaks the rules of [`super::check`] (names, ports,
//!   weights, tags, a VIP inside `vip_range`) is skipped with one warning and never replaces a
//!   good one;
//! - a VIP, once handed out (published in a snapshot), never changes (a different value in etcd
//!   is refused, logged once, and listed in [`State::vip_conflicts`] while etcd disagrees);
//! - a VIP belongs to one name: a second name claiming it is refused, logged once, and listed in
//!   [`State::vip_duplicates`]. The name that keeps it is the one already handed out, else the
//!   one written first (lower `mod_revision`), so every agent decides alike.
//!
//! The snapshot is maintained incrementally: a change marks the services it touches, and
//! [`State::snapshot`] rebuilds only those (a health flap among 10,000 services costs one service,
//! not the whole catalog). Unchanged services are shared between snapshots through `Arc`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::Arc;

use ipnet::Ipv4Net;

use crate::keys::{Key, Layout};
use crate::record::{HostInfo, InstanceRecord, parse_vip};

use super::check;
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

/// A name whose VIP in etcd is not the one this agent already handed out (and keeps).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct VipConflict {
    pub kept: Ipv4Addr,
    pub etcd: Ipv4Addr,
}

/// A name whose VIP in etcd is already another name's (and stays that name's).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VipDuplicate {
    pub vip: Ipv4Addr,
    pub held_by: String,
}

#[derive(Debug)]
pub struct State {
    layout: Layout,
    /// VIPs outside it are refused.
    vip_range: Ipv4Net,
    entries: BTreeMap<String, Entry>,
    revision: i64,
    /// VIPs this agent has handed out to apps: never changed afterwards, even if etcd says so.
    seen_vips: HashMap<String, Ipv4Addr>,
    /// Served VIPs not yet in `seen_vips`: they become "handed out" at the next snapshot.
    unseen_vips: BTreeSet<String>,
    /// The one name each served VIP belongs to.
    vip_holders: HashMap<Ipv4Addr, String>,
    /// Names whose VIP in etcd differs from the one kept, as of the current view of etcd.
    vip_conflicts: BTreeMap<String, VipConflict>,
    /// Names whose VIP in etcd belongs to another name, as of the current view of etcd.
    vip_duplicates: BTreeMap<String, VipDuplicate>,
    /// (key, mod_revision) of bad values already warned about, so a re-list does not repeat it.
    warned: HashSet<(String, i64)>,
    /// Instance keys by service name.
    by_service: HashMap<String, BTreeSet<String>>,
    /// Services with an instance on a host, by host (to rebuild them when its info changes).
    by_host: HashMap<String, BTreeSet<String>>,
    /// The snapshot as of the last call to `snapshot`, plus everything but `dirty` since.
    cache: Snapshot,
    /// Services whose entry in `cache` is out of date.
    dirty: BTreeSet<String>,
}

impl State {
    pub fn new(layout: Layout, vip_range: Ipv4Net) -> Self {
        State {
            layout,
            vip_range,
            entries: BTreeMap::new(),
            revision: 0,
            seen_vips: HashMap::new(),
            unseen_vips: BTreeSet::new(),
            vip_holders: HashMap::new(),
            vip_conflicts: BTreeMap::new(),
            vip_duplicates: BTreeMap::new(),
            warned: HashSet::new(),
            by_service: HashMap::new(),
            by_host: HashMap::new(),
            cache: Snapshot::default(),
            dirty: BTreeSet::new(),
        }
    }

    /// Rebuilds the state a saved snapshot was made from (`catalog.json`, which an operator may
    /// have edited), through the same checks as values from etcd. The VIPs it serves count as
    /// handed out. What the returned snapshot lacks was refused, with one warning each.
    pub fn from_snapshot(
        layout: Layout,
        vip_range: Ipv4Net,
        saved: &Snapshot,
    ) -> (State, Snapshot) {
        let mut state = State::new(layout, vip_range);
        let rev = saved.revision;
        let l = state.layout.clone();
        let put = |state: &mut State, key: String, value: Result<Vec<u8>, serde_json::Error>| {
            if let Ok(bytes) = value {
                state.put(&key, &bytes, rev);
            }
        };
        for (host, info) in &saved.hosts {
            put(&mut state, l.host_info(host), serde_json::to_vec(info));
        }
        for svc in saved.services.values() {
            for i in &svc.instances {
                let record = crate::record::InstanceRecord {
                    port: i.port,
                    protocol: i.protocol,
                    tags: i.tags.clone(),
                    weight: i.weight,
                    health: i.health,
                    lockdown: i.locked,
                };
                put(
                    &mut state,
                    l.instance(&i.host, &svc.name, &i.id),
                    serde_json::to_vec(&record),
                );
            }
        }
        for (name, ip) in &saved.vips {
            put(&mut state, l.vip(name), serde_json::to_vec(&ip.to_string()));
        }
        for (service, v) in &saved.routes {
            put(&mut state, l.route(service), serde_json::to_vec(v));
        }
        for (service, v) in &saved.policies {
            // A policy kept as its text (not JSON) is a JSON string, and goes back encoded as
            // one, to deny again. Written back as bare text it was parsed afresh: a value that
            // was not UTF-8 (kept lossily) could then parse as a policy and allow callers after
            // a restart (found by the catalog fuzz target).
            put(&mut state, l.policy(service), serde_json::to_vec(v));
        }
        state.set_revision(rev);
        let snapshot = state.snapshot();
        (state, snapshot)
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
            Value::Vip(ip) => Value::Vip(self.sticky_vip(key, ip, mod_revision)),
            other => other,
        };
        let changed = self.entries.get(key).is_none_or(|e| e.value != parsed);
        if let (Key::Vip { name }, Value::Vip(ip)) = (self.layout.parse(key), &parsed) {
            // Decided at every put, changed or not: the holder's rank may have changed.
            let name = name.to_owned();
            self.claim_vip(&name, *ip, mod_revision);
        } else if changed {
            self.touch(key, Some(&parsed));
        }
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
                self.touch(key, None);
                self.warned.retain(|(k, _)| k != key);
                if let Key::Vip { name } = self.layout.parse(key) {
                    // Nothing in etcd contradicts the kept VIP any more.
                    self.vip_conflicts.remove(name);
                    self.vip_duplicates.remove(name);
                }
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
        let State {
            entries,
            revision,
            seen_vips,
            unseen_vips,
            vip_holders,
            vip_conflicts,
            vip_duplicates,
            warned,
            by_service,
            by_host,
            cache,
            dirty,
            ..
        } = listed;
        self.entries = entries;
        self.revision = revision;
        self.seen_vips.extend(seen_vips);
        self.unseen_vips = unseen_vips;
        self.vip_holders = vip_holders;
        self.vip_conflicts = vip_conflicts;
        self.vip_duplicates = vip_duplicates;
        self.warned.extend(warned);
        self.by_service = by_service;
        self.by_host = by_host;
        self.cache = cache;
        self.dirty = dirty;
        differ
    }

    /// A fresh, empty state that shares this one's memory of VIPs and warnings (for a re-list).
    pub fn empty_like(&self) -> State {
        let mut state = State::new(self.layout.clone(), self.vip_range);
        state.warned = self.warned.clone();
        state.seen_vips = self.seen_vips.clone();
        state.cache.vips = self
            .seen_vips
            .iter()
            .map(|(name, ip)| (name.clone(), *ip))
            .collect();
        state.vip_holders = self
            .seen_vips
            .iter()
            .map(|(name, ip)| (*ip, name.clone()))
            .collect();
        state
    }

    /// Brings the cached snapshot's non-service parts up to date with a change of `key` (to
    /// `value`, or deleted) and marks the services it affects.
    fn touch(&mut self, key: &str, value: Option<&Value>) {
        match self.layout.parse(key) {
            Key::Instance { host, service, .. } => {
                let keys = self.by_service.entry(service.to_owned()).or_default();
                if value.is_some() {
                    keys.insert(key.to_owned());
                    self.by_host
                        .entry(host.to_owned())
                        .or_default()
                        .insert(service.to_owned());
                } else {
                    keys.remove(key);
                    let host_prefix = self.layout.host_prefix(host);
                    if !keys.iter().any(|k| k.starts_with(&host_prefix))
                        && let Some(services) = self.by_host.get_mut(host)
                    {
                        services.remove(service);
                    }
                    if keys.is_empty() {
                        self.by_service.remove(service);
                    }
                }
                self.dirty.insert(service.to_owned());
            }
            Key::HostInfo { host } => {
                match value {
                    Some(Value::HostInfo(info)) => {
                        self.cache.hosts.insert(host.to_owned(), info.clone());
                    }
                    _ => {
                        self.cache.hosts.remove(host);
                    }
                }
                if let Some(services) = self.by_host.get(host) {
                    self.dirty.extend(services.iter().cloned());
                }
            }
            // Served VIPs change only in `claim_vip`; a deleted one stays with its name.
            Key::Vip { .. } => {}
            Key::Route { service } => match value {
                Some(Value::Route(v)) => {
                    self.cache.routes.insert(service.to_owned(), v.clone());
                }
                _ => {
                    self.cache.routes.remove(service);
                }
            },
            Key::Policy { service } => match value {
                Some(Value::Policy(v)) => {
                    self.cache.policies.insert(service.to_owned(), v.clone());
                }
                _ => {
                    self.cache.policies.remove(service);
                }
            },
            Key::VipOwner { .. } | Key::Unknown => {}
        }
    }

    /// Names whose VIP in etcd differs from the one kept (for `/status` and a metric).
    pub fn vip_conflicts(&self) -> &BTreeMap<String, VipConflict> {
        &self.vip_conflicts
    }

    /// Names whose VIP in etcd belongs to another name (for `/status` and a metric).
    pub fn vip_duplicates(&self) -> &BTreeMap<String, VipDuplicate> {
        &self.vip_duplicates
    }

    /// Serves `ip` for `name` unless another name holds it. The holder is the name that has
    /// already handed it out, else the one whose `vips/` key was written first; a later claim
    /// (a rogue or mistaken write, or a race an allocator lost) is refused and reported.
    fn claim_vip(&mut self, name: &str, ip: Ipv4Addr, mod_revision: i64) {
        let rank =
            |state: &State, who: &str, rev: i64| (state.seen_vips.get(who) != Some(&ip), rev);
        let holder = self.vip_holders.get(&ip).cloned();
        if let Some(holder) = holder.filter(|h| h != name) {
            let holder_rev = self
                .entries
                .get(&self.layout.vip(&holder))
                .map_or(0, |e| e.mod_revision);
            if rank(self, name, mod_revision) >= rank(self, &holder, holder_rev) {
                if !self.seen_vips.contains_key(name) {
                    self.unserve(name);
                }
                self.refuse_duplicate(name, ip, &holder, mod_revision);
                return;
            }
            // This name was written first: the holder (never handed out) gives the VIP back.
            self.unserve(&holder);
            self.refuse_duplicate(&holder, ip, name, holder_rev);
        }
        self.vip_duplicates.remove(name);
        // A name moving to another VIP (only before it was handed out) frees the old one.
        if self.cache.vips.get(name).is_some_and(|old| *old != ip) {
            self.unserve(name);
        }
        self.vip_holders.insert(ip, name.to_owned());
        if self.cache.vips.insert(name.to_owned(), ip) != Some(ip) {
            self.dirty.insert(name.to_owned());
        }
        if !self.seen_vips.contains_key(name) {
            self.unseen_vips.insert(name.to_owned());
        }
    }

    /// Stops serving a VIP for `name` that was never handed out.
    fn unserve(&mut self, name: &str) {
        if let Some(old) = self.cache.vips.remove(name) {
            if self.vip_holders.get(&old).is_some_and(|h| h == name) {
                self.vip_holders.remove(&old);
            }
            self.dirty.insert(name.to_owned());
        }
        self.unseen_vips.remove(name);
    }

    fn refuse_duplicate(&mut self, name: &str, ip: Ipv4Addr, holder: &str, mod_revision: i64) {
        let key = self.layout.vip(name);
        if self.warned.insert((key.clone(), mod_revision)) {
            tracing::error!(
                key,
                vip = %ip,
                held_by = holder,
                "refusing a VIP that belongs to another name; delete or fix the key"
            );
        }
        self.vip_duplicates.insert(
            name.to_owned(),
            VipDuplicate {
                vip: ip,
                held_by: holder.to_owned(),
            },
        );
    }

    fn sticky_vip(&mut self, key: &str, ip: Ipv4Addr, mod_revision: i64) -> Ipv4Addr {
        let Key::Vip { name } = self.layout.parse(key) else {
            return ip;
        };
        match self.seen_vips.get(name).copied() {
            Some(seen) if seen != ip => {
                // Once per value in etcd, not again at every re-list.
                if self.warned.insert((key.to_owned(), mod_revision)) {
                    tracing::error!(
                        name,
                        kept = %seen,
                        etcd = %ip,
                        "refusing a changed VIP in etcd; keeping the one apps already use"
                    );
                }
                self.vip_conflicts.insert(
                    name.to_owned(),
                    VipConflict {
                        kept: seen,
                        etcd: ip,
                    },
                );
                seen
            }
            Some(seen) => {
                self.vip_conflicts.remove(name);
                seen
            }
            None => ip,
        }
    }

    fn parse(&self, key: &str, value: &[u8]) -> Result<Option<Value>, String> {
        let json = |v: &[u8]| -> Result<serde_json::Value, String> {
            serde_json::from_slice(v).map_err(|e| e.to_string())
        };
        let key = self.layout.parse(key);
        check::key(&key)?;
        Ok(Some(match key {
            Key::HostInfo { .. } => {
                let info = serde_json::from_slice(value).map_err(|e| e.to_string())?;
                check::host_info(&info)?;
                Value::HostInfo(info)
            }
            Key::Instance { .. } => {
                let rec = serde_json::from_slice(value).map_err(|e| e.to_string())?;
                check::instance(&rec)?;
                Value::Instance(rec)
            }
            Key::Vip { .. } => {
                let ip = parse_vip(value).map_err(|e| e.to_string())?;
                check::vip(ip, self.vip_range)?;
                Value::Vip(ip)
            }
            Key::Route { .. } => Value::Route(json(value)?),
            // Not skipped when it is not JSON, unlike other values: a skipped policy would read
            // as "no policy" and open the service to every caller. Its text is kept as a JSON
            // string, which is never a valid policy, so agents deny (fail closed).
            Key::Policy { .. } => Value::Policy(json(value).unwrap_or_else(|_| {
                serde_json::Value::String(String::from_utf8_lossy(value).into_owned())
            })),
            Key::VipOwner { .. } | Key::Unknown => return Ok(None),
        }))
    }

    /// The immutable snapshot readers use: the cached one with the changed services rebuilt.
    pub fn snapshot(&mut self) -> Snapshot {
        // Published now: these VIPs are handed out and never change afterwards.
        for name in std::mem::take(&mut self.unseen_vips) {
            if let Some(ip) = self.cache.vips.get(&name) {
                self.seen_vips.insert(name, *ip);
            }
        }
        for name in std::mem::take(&mut self.dirty) {
            match self.build_service(&name) {
                Some(svc) => {
                    self.cache.services.insert(name, Arc::new(svc));
                }
                None => {
                    self.cache.services.remove(&name);
                }
            }
        }
        self.cache.revision = self.revision;
        self.cache.clone()
    }

    /// Builds one service from its instance entries; `None` when it has no instance.
    fn build_service(&self, name: &str) -> Option<Service> {
        let keys = self.by_service.get(name)?;
        let mut instances: Vec<Instance> = keys
            .iter()
            .filter_map(|key| {
                let Some(Entry {
                    value: Value::Instance(rec),
                    ..
                }) = self.entries.get(key)
                else {
                    return None;
                };
                let Key::Instance { host, id, .. } = self.layout.parse(key) else {
                    return None;
                };
                let info = self.cache.hosts.get(host);
                Some(Instance {
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
                    locked: rec.lockdown,
                })
            })
            .collect();
        if instances.is_empty() {
            return None;
        }
        instances.sort_by(|a, b| (&a.host, &a.id).cmp(&(&b.host, &b.id)));
        let protocol = majority_protocol(&instances)?;
        Some(Service {
            name: name.to_owned(),
            vip: self.cache.vips.get(name).copied(),
            protocol,
            instances,
        })
    }
}

fn majority_protocol(instances: &[Instance]) -> Option<hostmesh_config::spec::Protocol> {
    let mut counts: Vec<(hostmesh_config::spec::Protocol, usize)> = Vec::new();
    for i in instances {
        match counts.iter_mut().find(|(p, _)| *p == i.protocol) {
            Some((_, n)) => *n += 1,
            None => counts.push((i.protocol, 1)),
        }
    }
    counts.into_iter().max_by_key(|(_, n)| *n).map(|(p, _)| p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Health;

    fn layout() -> Layout {
        Layout::new("/hm")
    }

    fn range() -> Ipv4Net {
        "127.77.0.0/16".parse().expect("range")
    }

    fn instance_json(health: &str) -> String {
        format!(
            r#"{{"port":8080,"protocol":"http","tags":["v2"],"weight":100,"health":"{health}"}}"#
        )
    }

    const INFO: &str = r#"{"address":"198.18.0.10","inbound_port":4143,"version":"0.1.0"}"#;

    /// Host `b`'s info, its instance `o1` of `orders`, and orders' VIP 127.77.0.5.
    fn orders_on_b(l: &Layout) -> State {
        let mut s = State::new(l.clone(), range());
        s.put(&l.host_info("b"), INFO.as_bytes(), 2);
        s.put(
            &l.instance("b", "orders", "o1"),
            instance_json("passing").as_bytes(),
            2,
        );
        s.put(&l.vip("orders"), br#""127.77.0.5""#, 3);
        s
    }

    #[test]
    fn joins_instances_with_host_info() {
        let l = layout();
        let mut s = orders_on_b(&l);
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
        let mut s = State::new(l.clone(), range());
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
        let mut s = State::new(l.clone(), range());
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
    fn a_policy_that_is_not_json_is_kept_as_its_text() {
        // Skipping it, like other bad values, would read as "no policy": open to every caller.
        let l = layout();
        let mut s = State::new(l.clone(), range());
        let k = l.policy("orders");
        s.put(&k, br#"{"allow":["web"]}"#, 5);
        assert_eq!(s.put(&k, br#"{"allow":["web"]"#, 6), Applied::Changed);
        assert_eq!(
            s.snapshot().policies["orders"],
            serde_json::Value::String(r#"{"allow":["web"]"#.to_owned())
        );
    }

    #[test]
    fn a_policy_that_is_not_utf8_stays_text_in_catalog_json() {
        // JSON that would allow `web` but is not UTF-8: kept as lossy text, so it denies. It
        // must still deny after a restart from catalog.json, not parse there as a policy.
        let l = layout();
        let mut s = State::new(l.clone(), range());
        s.put(
            &l.policy("orders"),
            b"{\"allow\":[\"web\"],\"x\":\"\xa4\"}",
            5,
        );
        let saved = s.snapshot();
        assert!(saved.policies["orders"].is_string());
        let (_, restored) = State::from_snapshot(l, range(), &saved);
        assert_eq!(restored.policies, saved.policies);
    }

    #[test]
    fn a_seen_vip_never_changes() {
        let l = layout();
        let mut s = State::new(l.clone(), range());
        s.put(&l.vip("orders"), br#""127.77.0.5""#, 3);
        s.snapshot(); // handed out
        s.put(&l.vip("orders"), br#""127.77.0.9""#, 4);
        assert_eq!(s.snapshot().vips["orders"], Ipv4Addr::new(127, 77, 0, 5));
        let conflict = VipConflict {
            kept: Ipv4Addr::new(127, 77, 0, 5),
            etcd: Ipv4Addr::new(127, 77, 0, 9),
        };
        assert_eq!(s.vip_conflicts()["orders"], conflict);
        // A re-list still sees the conflict.
        let mut listed = s.empty_like();
        listed.put(&l.vip("orders"), br#""127.77.0.9""#, 4);
        s.replace_with(listed);
        assert_eq!(s.vip_conflicts()["orders"], conflict);
        // Deleted in etcd: the name keeps its VIP, and nothing contradicts it any more.
        s.delete(&l.vip("orders"), 5);
        assert_eq!(s.snapshot().vips["orders"], Ipv4Addr::new(127, 77, 0, 5));
        assert!(s.vip_conflicts().is_empty());
        // Put back as it was: no conflict.
        s.put(&l.vip("orders"), br#""127.77.0.9""#, 6);
        s.put(&l.vip("orders"), br#""127.77.0.5""#, 7);
        assert!(s.vip_conflicts().is_empty());
    }

    #[test]
    fn a_vip_outside_the_range_is_never_served() {
        let l = layout();
        let mut s = State::new(l.clone(), range());
        assert_eq!(
            s.put(&l.vip("evil"), br#""198.18.25.15""#, 3),
            Applied::Unchanged
        );
        assert_eq!(s.put(&l.vip("orders"), b"8.8.8.8", 4), Applied::Unchanged);
        assert!(s.snapshot().vips.is_empty());
    }

    #[test]
    fn records_breaking_the_rules_are_skipped() {
        let l = layout();
        let mut s = State::new(l.clone(), range());
        let good = instance_json("passing");
        s.put(&l.instance("b", "Evil Name!", "1"), good.as_bytes(), 2);
        s.put(&l.instance("b", "v9.orders", "1"), good.as_bytes(), 2);
        s.put(
            &l.instance("b", "orders", "1"),
            br#"{"port":0,"protocol":"http","health":"passing"}"#,
            2,
        );
        s.put(
            &l.instance("b", "orders", "2"),
            br#"{"port":80,"protocol":"http","weight":0,"health":"passing"}"#,
            2,
        );
        assert!(s.snapshot().services.is_empty());
        s.put(&l.instance("b", "orders", "3"), good.as_bytes(), 3);
        assert_eq!(s.snapshot().services["orders"].instances.len(), 1);
    }

    #[test]
    fn a_vip_belongs_to_one_name() {
        let l = layout();
        let vip = Ipv4Addr::new(127, 77, 0, 5);
        // A fresh agent lists in key order: "evil" before "orders", but orders was written first.
        let mut s = State::new(l.clone(), range());
        s.put(&l.vip("evil"), br#""127.77.0.5""#, 9);
        s.put(&l.vip("orders"), br#""127.77.0.5""#, 3);
        let snap = s.snapshot();
        assert_eq!(snap.vips.get("orders"), Some(&vip));
        assert_eq!(snap.vips.get("evil"), None);
        let dup = VipDuplicate {
            vip,
            held_by: "orders".to_owned(),
        };
        assert_eq!(s.vip_duplicates()["evil"], dup);
        // Once handed out, the holder keeps it even against an earlier write seen later.
        let mut s = State::new(l.clone(), range());
        s.put(&l.vip("orders"), br#""127.77.0.5""#, 9);
        s.snapshot();
        s.put(&l.vip("evil"), br#""127.77.0.5""#, 3);
        assert_eq!(s.snapshot().vips.get("evil"), None);
        assert_eq!(s.vip_duplicates()["evil"], dup);
        // A re-list agrees; deleting the duplicate clears the report.
        let mut listed = s.empty_like();
        listed.put(&l.vip("evil"), br#""127.77.0.5""#, 3);
        listed.put(&l.vip("orders"), br#""127.77.0.5""#, 9);
        s.replace_with(listed);
        assert_eq!(s.snapshot().vips.get("orders"), Some(&vip));
        assert_eq!(s.vip_duplicates()["evil"], dup);
        s.delete(&l.vip("evil"), 10);
        assert!(s.vip_duplicates().is_empty());
    }

    #[test]
    fn a_saved_snapshot_is_checked_like_etcd() {
        let l = layout();
        let mut s = orders_on_b(&l);
        s.put(&l.policy("orders"), br#"{"allow":["web"]"#, 4);
        s.set_revision(4);
        let good = s.snapshot();
        let (_, back) = State::from_snapshot(l.clone(), range(), &good);
        assert_eq!(back, good);
        // Edited by hand: a VIP off the range, a second name on orders' VIP.
        let mut edited = good.clone();
        edited
            .vips
            .insert("orders".into(), Ipv4Addr::new(8, 8, 8, 8));
        edited
            .vips
            .insert("web".into(), Ipv4Addr::new(127, 77, 0, 9));
        edited
            .vips
            .insert("zz".into(), Ipv4Addr::new(127, 77, 0, 9));
        let (state, back) = State::from_snapshot(l, range(), &edited);
        assert_eq!(back.vips.get("orders"), None);
        assert_eq!(back.services["orders"].vip, None);
        assert_eq!(back.vips.get("web"), Some(&Ipv4Addr::new(127, 77, 0, 9)));
        assert!(state.vip_duplicates().contains_key("zz"));
    }

    #[test]
    fn replace_counts_drift() {
        let l = layout();
        let mut s = State::new(l.clone(), range());
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

    /// The incremental snapshot always equals one built from scratch from the same entries.
    #[test]
    fn incremental_snapshots_match_a_full_rebuild() {
        let l = layout();
        let mut s = State::new(l.clone(), range());
        let mut seed: u64 = 42;
        let mut next = |n: u64| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) % n
        };
        for rev in 1..2000 {
            let host = format!("h{}", next(4));
            let service = format!("s{}", next(5));
            let id = format!("i{}", next(3));
            match next(10) {
                0..=3 => {
                    let health = ["passing", "critical"][next(2) as usize];
                    s.put(
                        &l.instance(&host, &service, &id),
                        instance_json(health).as_bytes(),
                        rev,
                    );
                }
                4..=5 => {
                    s.delete(&l.instance(&host, &service, &id), rev);
                }
                6 => {
                    let info = format!(
                        r#"{{"address":"10.0.0.{}","inbound_port":4143}}"#,
                        next(250)
                    );
                    s.put(&l.host_info(&host), info.as_bytes(), rev);
                }
                7 => {
                    s.delete(&l.host_info(&host), rev);
                }
                8 => {
                    s.put(
                        &l.vip(&service),
                        format!("\"127.77.0.{}\"", next(250)).as_bytes(),
                        rev,
                    );
                }
                _ => {
                    s.put(&l.route(&service), br#"{"timeout":"1s"}"#, rev);
                }
            }
            s.set_revision(rev);
            let incremental = s.snapshot();
            let mut fresh = s.empty_like();
            for (key, entry) in &s.entries {
                let bytes = match &entry.value {
                    Value::HostInfo(v) => serde_json::to_vec(v),
                    Value::Instance(v) => serde_json::to_vec(v),
                    Value::Vip(ip) => serde_json::to_vec(&ip.to_string()),
                    Value::Route(v) | Value::Policy(v) => serde_json::to_vec(v),
                }
                .expect("serializes");
                fresh.put(key, &bytes, entry.mod_revision);
            }
            fresh.set_revision(rev);
            assert_eq!(incremental, fresh.snapshot(), "after revision {rev}");
        }
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
