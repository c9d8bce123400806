//! What the catalog accepts from etcd and from `catalog.json`: the rules local definitions
//! follow, because any host may write below `vips/` and its own `hosts/<host>/`, and an
//! operator may edit either by hand. A record that breaks one is skipped with one warning
//! naming its key (see [`super::state::State::put`]); it is never served.

use std::net::{IpAddr, Ipv4Addr};

use ipnet::Ipv4Net;

use crate::keys::Key;
use crate::record::{HostInfo, InstanceRecord};
use hostmesh_config::names;
use hostmesh_config::spec::WEIGHT;

/// The names inside a key: host, service, instance id, or a VIP's name.
pub(super) fn key(key: &Key<'_>) -> Result<(), String> {
    let host = |h: &str| names::host(h).map_err(|e| format!("host name {h:?} {e}"));
    let service = |s: &str| names::service(s).map_err(|e| format!("service name {s:?} {e}"));
    match *key {
        Key::HostInfo { host: h } => host(h),
        Key::Instance {
            host: h,
            service: s,
            id,
        } => {
            host(h)?;
            service(s)?;
            names::instance_id(id).map_err(|e| format!("instance id {id:?} {e}"))
        }
        Key::Vip { name } => vip_name(name),
        Key::Route { service: s } | Key::Policy { service: s } => service(s),
        Key::VipOwner { .. } | Key::Unknown => Ok(()),
    }
}

/// A VIP belongs to a service (`orders`) or to one tag of it (`v2.orders`).
pub fn vip_name(name: &str) -> Result<(), String> {
    let (tag, service) = match name.split_once('.') {
        Some((tag, service)) => (Some(tag), service),
        None => (None, name),
    };
    names::service(service).map_err(|e| format!("VIP name {name:?}: service {service:?} {e}"))?;
    if let Some(tag) = tag {
        names::tag(tag).map_err(|e| format!("VIP name {name:?}: tag {tag:?} {e}"))?;
    }
    Ok(())
}

pub(super) fn instance(rec: &InstanceRecord) -> Result<(), String> {
    if rec.port == 0 {
        return Err("port 0: clients need a port from 1 to 65535".to_owned());
    }
    if !WEIGHT.contains(&rec.weight) {
        return Err(format!(
            "weight {} is outside {}..={}",
            rec.weight,
            WEIGHT.start(),
            WEIGHT.end()
        ));
    }
    for (i, tag) in rec.tags.iter().enumerate() {
        names::tag(tag).map_err(|e| format!("tag {tag:?} {e}"))?;
        if rec.tags[..i].contains(tag) {
            return Err(format!("tag {tag:?} is listed twice"));
        }
    }
    Ok(())
}

pub(super) fn host_info(info: &HostInfo) -> Result<(), String> {
    if info.inbound_port == 0 {
        return Err("inbound_port 0: peers need a port from 1 to 65535".to_owned());
    }
    let unroutable = match info.address {
        IpAddr::V4(a) => a.is_unspecified() || a.is_multicast() || a.is_broadcast(),
        IpAddr::V6(a) => a.is_unspecified() || a.is_multicast(),
    };
    if unroutable {
        return Err(format!("address {} cannot reach a host", info.address));
    }
    if let Some(zone) = &info.zone {
        names::zone(zone).map_err(|e| format!("zone {zone:?} {e}"))?;
    }
    Ok(())
}

/// A VIP must be one the allocator could have handed out: inside `vip_range`, neither its
/// network nor its broadcast address. Anything else would send an app's traffic somewhere the
/// capture does not see it (no mTLS, no policy).
pub(super) fn vip(ip: Ipv4Addr, range: Ipv4Net) -> Result<(), String> {
    if crate::vip::usable_contains(range, ip) {
        Ok(())
    } else {
        Err(format!("VIP {ip} lies outside vip_range {range}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::Layout;
    use hostmesh_config::spec::Protocol;

    fn record(port: u16, weight: u32, tags: &[&str]) -> InstanceRecord {
        InstanceRecord {
            port,
            protocol: Protocol::Http,
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
            weight,
            health: crate::record::Health::Passing,
            lockdown: false,
        }
    }

    #[test]
    fn keys_follow_the_name_rules() {
        let l = Layout::new("/hm");
        let ok = [
            l.instance("web-01", "orders", "orders.1"),
            l.host_info("web-01.eu"),
            l.vip("orders"),
            l.vip("v2.orders"),
            l.route("orders"),
        ];
        for k in &ok {
            assert_eq!(key(&l.parse(k)), Ok(()), "{k}");
        }
        let bad = [
            l.instance("Web", "orders", "1"),
            l.instance("web", "Evil Name!", "1"),
            l.instance("web", "orders", "a b"),
            l.vip("Evil Name!"),
            l.vip("v9.x.orders"),
            l.vip("V9.orders"),
            l.policy("-orders"),
        ];
        for k in &bad {
            assert!(key(&l.parse(k)).is_err(), "{k}");
        }
    }

    #[test]
    fn records_follow_the_service_file_rules() {
        assert_eq!(instance(&record(8080, 100, &["v2"])), Ok(()));
        assert!(instance(&record(0, 100, &[])).is_err());
        assert!(instance(&record(8080, 0, &[])).is_err());
        assert!(instance(&record(8080, 10_001, &[])).is_err());
        assert!(instance(&record(8080, 1, &["V2"])).is_err());
        assert!(instance(&record(8080, 1, &["v2", "v2"])).is_err());
        let info = |address: &str, port: u16, zone: Option<&str>| HostInfo {
            address: address.parse().expect("ip"),
            inbound_port: port,
            zone: zone.map(str::to_owned),
            version: String::new(),
        };
        assert_eq!(host_info(&info("10.0.0.1", 4143, Some("eu-1a"))), Ok(()));
        assert!(host_info(&info("10.0.0.1", 0, None)).is_err());
        assert!(host_info(&info("0.0.0.0", 4143, None)).is_err());
        assert!(host_info(&info("224.0.0.1", 4143, None)).is_err());
        assert!(host_info(&info("10.0.0.1", 4143, Some("eu 1"))).is_err());
    }

    #[test]
    fn vips_lie_in_the_usable_range() {
        let range: Ipv4Net = "127.77.0.0/16".parse().expect("range");
        assert_eq!(vip(Ipv4Addr::new(127, 77, 1, 2), range), Ok(()));
        assert!(vip(Ipv4Addr::new(198, 18, 25, 15), range).is_err());
        assert!(vip(Ipv4Addr::new(8, 8, 8, 8), range).is_err());
        assert!(vip(Ipv4Addr::new(127, 77, 0, 0), range).is_err());
        assert!(vip(Ipv4Addr::new(127, 77, 255, 255), range).is_err());
    }
}
