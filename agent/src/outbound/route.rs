//! Where a captured connection goes: the VIP:port an app dialed → a service (or a tag subset of
//! it) and its candidate instances. Rebuilt once per catalog snapshot and swapped whole, so the
//! request path only reads an immutable table.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;

use hostmesh_registrar::catalog::Snapshot;
use hostmesh_registrar::record::Health;
use hostmesh_registrar::spec::Protocol;

use crate::balance::{EndpointKey, EndpointStats, EndpointTable};

/// One candidate instance for a route.
#[derive(Debug)]
pub struct Endpoint {
    pub host: String,
    pub id: String,
    /// The peer agent's inbound address; for a same-host instance, unused (reached directly).
    pub peer: SocketAddr,
    /// Runs on this host: reached at its `target`, skipping the inbound hop.
    pub local: bool,
    pub weight: u32,
    pub stats: Arc<EndpointStats>,
}

/// Everything needed to serve one VIP:port.
#[derive(Debug)]
pub struct Route {
    pub service: String,
    pub protocol: Protocol,
    /// Passing instances serving this port (and tag), in a stable order.
    pub endpoints: Vec<Endpoint>,
}

/// VIP:port → route.
#[derive(Debug, Default)]
pub struct RouteTable {
    routes: HashMap<SocketAddrV4, Arc<Route>>,
}

impl RouteTable {
    /// Builds the table for `snapshot`. `stats` keeps each instance's latency and in-flight
    /// state across snapshots; instances that left the catalog are dropped from it.
    pub fn build(snapshot: &Snapshot, self_host: &str, stats: &EndpointTable) -> RouteTable {
        let mut routes = HashMap::new();
        for (name, vip) in &snapshot.vips {
            let (tag, service) = match name.split_once('.') {
                Some((tag, service)) => (Some(tag), service),
                None => (None, name.as_str()),
            };
            let Some(svc) = snapshot.services.get(service) else {
                continue;
            };
            let members = svc
                .instances
                .iter()
                .filter(|i| tag.is_none_or(|t| i.tags.iter().any(|x| x == t)));
            let mut by_port: HashMap<u16, Vec<Endpoint>> = HashMap::new();
            for i in members {
                let endpoints = by_port.entry(i.port).or_default();
                if i.health != Health::Passing {
                    continue;
                }
                let local = i.host == self_host;
                let peer = match (i.address, i.inbound_port) {
                    (Some(a), Some(p)) => SocketAddr::new(a, p),
                    // A host without its info record cannot be reached through its agent.
                    _ if !local => continue,
                    _ => SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
                };
                endpoints.push(Endpoint {
                    host: i.host.clone(),
                    id: i.id.clone(),
                    peer,
                    local,
                    weight: i.weight.max(1),
                    stats: stats.get_or_insert(&EndpointKey::new(service, &i.host, &i.id)),
                });
            }
            for (port, endpoints) in by_port {
                routes.insert(
                    SocketAddrV4::new(*vip, port),
                    Arc::new(Route {
                        service: service.to_owned(),
                        protocol: svc.protocol,
                        endpoints,
                    }),
                );
            }
        }
        stats.retain(|key| {
            snapshot.services.get(key.service()).is_some_and(|s| {
                s.instances
                    .iter()
                    .any(|i| i.host == key.host() && i.id == key.id())
            })
        });
        RouteTable { routes }
    }

    pub fn get(&self, dst: SocketAddrV4) -> Option<Arc<Route>> {
        self.routes.get(&dst).cloned()
    }
}

impl Route {
    /// Picks an endpoint by power of two choices, skipping the indexes in `tried` (instances
    /// this request or connection already failed on). Returns its index in `endpoints`.
    pub fn pick(&self, tried: &[usize]) -> Option<usize> {
        let picked = crate::balance::pick(
            &self.endpoints,
            |e| (e.stats.as_ref(), e.weight),
            |e| tried.contains(&self.index_of(e)),
        )?;
        Some(self.index_of(picked))
    }

    /// The index of an element of `endpoints`, from its address (no search).
    fn index_of(&self, e: &Endpoint) -> usize {
        let base = self.endpoints.as_ptr() as usize;
        (e as *const Endpoint as usize - base) / std::mem::size_of::<Endpoint>()
    }
}
