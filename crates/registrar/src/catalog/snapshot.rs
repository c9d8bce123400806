//! The immutable view of the mesh that every reader (DNS, proxies, admin, CLI) works from.
//! Built from etcd by [`super::state::State`]; published as `Arc<Snapshot>` and never mutated.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::record::{Health, HostInfo};
use hostmesh_config::spec::Protocol;

/// A map shared with the snapshots before and after it, node by node: publishing a snapshot after
/// one change copies the few nodes on that change's path, not the whole catalog. With plain
/// `BTreeMap`s every change cloned (and later freed) every service, host and VIP: 16 ms of CPU on
/// every agent for every change with 10,000 services (bench/fleet), nine tenths of it in malloc
/// and free.
pub type Map<K, V> = imbl::OrdMap<K, V>;

/// Everything the catalog knows at one etcd revision.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The etcd revision this snapshot reflects.
    pub revision: i64,
    pub hosts: Map<String, HostInfo>,
    /// Services with at least one registered instance, whatever its health. Shared between
    /// snapshots while unchanged.
    pub services: Map<String, Arc<Service>>,
    /// Every known VIP by name (`orders`, `v2.orders`), including those of services that
    /// currently have no instance: a VIP stays reserved for its name.
    pub vips: Map<String, Ipv4Addr>,
    /// Route policies as stored, parsed by the component that applies them.
    #[serde(default)]
    pub routes: Map<String, serde_json::Value>,
    /// Access policies as stored; a stored text that is not JSON is kept as a JSON string (never
    /// a valid policy), so that it denies rather than disappears.
    #[serde(default)]
    pub policies: Map<String, serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Service {
    pub name: String,
    pub vip: Option<Ipv4Addr>,
    /// The protocol most instances declare (instances disagreeing is a configuration mistake
    /// across hosts; the majority wins so one bad host cannot flip a service).
    pub protocol: Protocol,
    /// Sorted by (host, id).
    pub instances: Vec<Instance>,
}

/// One registered instance, joined with its host's info.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    pub host: String,
    pub id: String,
    /// The host's advertised address; `None` while the host's info record is missing.
    pub address: Option<IpAddr>,
    pub inbound_port: Option<u16>,
    pub zone: Option<String>,
    pub port: u16,
    pub protocol: Protocol,
    pub tags: Vec<String>,
    pub weight: u32,
    pub health: Health,
    /// Its host refuses direct connections from other hosts to it (`proxy.lockdown`): the mesh
    /// is the only way in.
    #[serde(default)]
    pub locked: bool,
}

impl Service {
    /// Instances in `passing` health.
    pub fn passing(&self) -> impl Iterator<Item = &Instance> {
        self.instances
            .iter()
            .filter(|i| i.health == Health::Passing)
    }
}

impl Snapshot {
    pub fn service(&self, name: &str) -> Option<&Service> {
        self.services.get(name).map(|s| s.as_ref())
    }
}
