//! The etcd key layout (docs/reference/etcd-layout.md), in one place for writers and readers.
//!
//! Everything lives under `<prefix>/v1/`. A host writes only below `hosts/<host>/` (on its lease),
//! `vips/` and `vip-owners/`, so etcd RBAC can confine each agent to those.

use std::net::Ipv4Addr;

/// Builds and parses keys below one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    root: String,
}

/// What a key under the layout's root names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key<'a> {
    HostInfo {
        host: &'a str,
    },
    Instance {
        host: &'a str,
        service: &'a str,
        id: &'a str,
    },
    Vip {
        name: &'a str,
    },
    VipOwner {
        ip: &'a str,
    },
    Route {
        service: &'a str,
    },
    Policy {
        service: &'a str,
    },
    /// A key this version does not know: written by a newer agent or another tool. Ignored.
    Unknown,
}

impl Layout {
    /// `prefix` is the configured `etcd.prefix`, e.g. `/hostmesh` (no trailing slash).
    pub fn new(prefix: &str) -> Self {
        Layout {
            root: format!("{}/v1/", prefix.trim_end_matches('/')),
        }
    }

    /// `<prefix>/v1/`: everything the catalog watches.
    pub fn root(&self) -> &str {
        &self.root
    }

    /// `<prefix>/v1/hosts/<host>/`: everything one host owns.
    pub fn host_prefix(&self, host: &str) -> String {
        format!("{}hosts/{host}/", self.root)
    }

    pub fn host_info(&self, host: &str) -> String {
        format!("{}hosts/{host}/info", self.root)
    }

    pub fn instance(&self, host: &str, service: &str, id: &str) -> String {
        format!("{}hosts/{host}/instances/{service}/{id}", self.root)
    }

    pub fn vips_prefix(&self) -> String {
        format!("{}vips/", self.root)
    }

    pub fn vip(&self, name: &str) -> String {
        format!("{}vips/{name}", self.root)
    }

    pub fn vip_owners_prefix(&self) -> String {
        format!("{}vip-owners/", self.root)
    }

    pub fn vip_owner(&self, ip: Ipv4Addr) -> String {
        format!("{}vip-owners/{ip}", self.root)
    }

    pub fn route(&self, service: &str) -> String {
        format!("{}routes/{service}", self.root)
    }

    pub fn policy(&self, service: &str) -> String {
        format!("{}policies/{service}", self.root)
    }

    /// Classifies a full key. Keys outside the root or with an unexpected shape are `Unknown`.
    pub fn parse<'a>(&self, key: &'a str) -> Key<'a> {
        let Some(rest) = key.strip_prefix(self.root.as_str()) else {
            return Key::Unknown;
        };
        let parts: Vec<&str> = rest.split('/').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Key::Unknown;
        }
        match parts.as_slice() {
            ["hosts", host, "info"] => Key::HostInfo { host },
            ["hosts", host, "instances", service, id] => Key::Instance { host, service, id },
            ["vips", name] => Key::Vip { name },
            ["vip-owners", ip] => Key::VipOwner { ip },
            ["routes", service] => Key::Route { service },
            ["policies", service] => Key::Policy { service },
            _ => Key::Unknown,
        }
    }
}

/// The end of the key range that holds every key starting with `prefix` (etcd's "prefix end").
pub fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // An all-0xff prefix: etcd's convention for "to the end of the keyspace".
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_and_parses_round_trip() {
        let l = Layout::new("/hostmesh");
        assert_eq!(l.root(), "/hostmesh/v1/");
        let k = l.instance("web-01", "orders", "orders-1");
        assert_eq!(k, "/hostmesh/v1/hosts/web-01/instances/orders/orders-1");
        assert_eq!(
            l.parse(&k),
            Key::Instance {
                host: "web-01",
                service: "orders",
                id: "orders-1"
            }
        );
        assert_eq!(
            l.parse(&l.host_info("web-01")),
            Key::HostInfo { host: "web-01" }
        );
        assert_eq!(l.parse(&l.vip("v2.orders")), Key::Vip { name: "v2.orders" });
        let ip = Ipv4Addr::new(127, 77, 0, 3);
        assert_eq!(
            l.parse(&l.vip_owner(ip)),
            Key::VipOwner { ip: "127.77.0.3" }
        );
    }

    #[test]
    fn odd_keys_are_unknown() {
        let l = Layout::new("/hostmesh");
        for k in [
            "/other/v1/vips/a",
            "/hostmesh/v1/hosts/web/instances/orders",
            "/hostmesh/v1/hosts//info",
            "/hostmesh/v1/vips/a/b",
            "/hostmesh/v2/vips/a",
            "/hostmesh/v1/future/x",
        ] {
            assert_eq!(l.parse(k), Key::Unknown, "{k}");
        }
    }

    #[test]
    fn prefix_end_increments_last_byte() {
        assert_eq!(prefix_end("/a/"), b"/a0".to_vec());
        assert_eq!(prefix_end("a\u{7f}"), b"a\x80".to_vec());
    }
}
