//! What `hostmesh explain` is asked about: a URL or a name (`http://orders.mesh:8080/path`,
//! `v2.orders.mesh:8080/path`, `orders`, `orders.mesh`, a VIP `127.77.0.12:8080`) and the
//! `--header K:V` values. Pure parsing, shared by the command (which refuses bad input with exit
//! 2 before asking the agent) and the agent (which resolves the name against its catalog).

use std::net::Ipv4Addr;

use http::uri::PathAndQuery;
use http::{HeaderName, HeaderValue};

/// A parsed URL-or-NAME.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub host: Host,
    /// `None`: the service's one port (resolved by the agent).
    pub port: Option<u16>,
    /// Path and query, `/` when none was given.
    pub path: String,
}

/// The host part of a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// A virtual IP, as apps dial it.
    Vip(Ipv4Addr),
    /// A name, lowercase, without a trailing dot: `orders`, `orders.mesh`, `v2.orders.mesh`.
    Name(String),
}

/// A mesh name resolved against the DNS domain: a service, or a tag subset of one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshName {
    pub service: String,
    pub tag: Option<String>,
}

impl MeshName {
    /// The key of its VIP in the catalog (`orders`, `v2.orders`).
    pub fn vip_key(&self) -> String {
        match &self.tag {
            Some(tag) => format!("{tag}.{}", self.service),
            None => self.service.clone(),
        }
    }

    /// The inverse of [`Self::vip_key`].
    pub fn from_vip_key(key: &str) -> MeshName {
        match key.split_once('.') {
            Some((tag, service)) => MeshName {
                service: service.to_owned(),
                tag: Some(tag.to_owned()),
            },
            None => MeshName {
                service: key.to_owned(),
                tag: None,
            },
        }
    }
}

/// Parses a URL-or-NAME; the error says what is wrong with it.
pub fn parse(input: &str) -> Result<Target, String> {
    let input = input.trim();
    if input.is_empty() {
        return Err("empty target: give a URL or a service name".into());
    }
    let rest = match input.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
        Some((scheme, _)) => {
            return Err(format!(
                "{scheme}:// is not supported: apps speak plain http:// to the VIP"
            ));
        }
        None => input,
    };
    let split = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(split);
    let path = match path {
        "" => "/".to_owned(),
        p if p.starts_with('?') => format!("/{p}"),
        p => p.to_owned(),
    };
    path.parse::<PathAndQuery>()
        .map_err(|e| format!("bad path {path:?}: {e}"))?;
    if authority.contains('@') {
        return Err("user info (user@) is not part of a mesh name".into());
    }
    if authority.starts_with('[') {
        return Err("VIPs are IPv4 addresses".into());
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) => {
            let port = port
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("bad port {port:?}: expected 1..65535"))?;
            (host, Some(port))
        }
        None => (authority, None),
    };
    let host = if let Ok(ip) = host.parse::<Ipv4Addr>() {
        Host::Vip(ip)
    } else {
        Host::Name(name(host)?)
    };
    Ok(Target { host, port, path })
}

/// A DNS name: labels of `[a-z0-9-]`, 1..63 characters; lowercased, trailing dot dropped.
fn name(host: &str) -> Result<String, String> {
    let lower = host.trim_end_matches('.').to_ascii_lowercase();
    if lower.is_empty() {
        return Err("no host name in the target".into());
    }
    for label in lower.split('.') {
        let ok = (1..=63).contains(&label.len())
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !ok {
            return Err(format!(
                "{host:?} is not a mesh name (labels of a-z, 0-9 and -, 1 to 63 characters)"
            ));
        }
    }
    Ok(lower)
}

/// Reads a name as the DNS shim does: `NAME.<domain>` or `TAG.NAME.<domain>`, and the same
/// without the domain (`orders`, `v2.orders`). `None`: it cannot be a mesh name.
pub fn mesh_name(name: &str, domain: &str) -> Option<MeshName> {
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    let local = name
        .strip_suffix(domain.as_str())
        .and_then(|n| n.strip_suffix('.'))
        .unwrap_or(name);
    match local.split('.').collect::<Vec<_>>()[..] {
        [service] => Some(MeshName {
            service: service.to_owned(),
            tag: None,
        }),
        [tag, service] => Some(MeshName {
            service: service.to_owned(),
            tag: Some(tag.to_owned()),
        }),
        _ => None,
    }
}

/// Parses one `--header NAME:VALUE` (spaces after the colon are dropped, as in HTTP).
pub fn header(input: &str) -> Result<(HeaderName, HeaderValue), String> {
    let (name, value) = input
        .split_once(':')
        .ok_or_else(|| format!("header {input:?}: expected NAME:VALUE"))?;
    let name = HeaderName::from_bytes(name.trim().as_bytes())
        .map_err(|_| format!("header {input:?}: {:?} is not a header name", name.trim()))?;
    let value = HeaderValue::from_str(value.trim())
        .map_err(|_| format!("header {input:?}: the value has characters HTTP does not allow"))?;
    Ok((name, value))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn name_target(name: &str, port: Option<u16>, path: &str) -> Target {
        Target {
            host: Host::Name(name.into()),
            port,
            path: path.into(),
        }
    }

    #[test]
    fn urls_names_and_vips_parse() {
        assert_eq!(
            parse("http://orders.mesh:8080/api/v2?x=1").unwrap(),
            name_target("orders.mesh", Some(8080), "/api/v2?x=1")
        );
        assert_eq!(
            parse("HTTP://Orders.Mesh.:8080").unwrap(),
            name_target("orders.mesh", Some(8080), "/")
        );
        assert_eq!(
            parse("v2.orders.mesh:8080/path").unwrap(),
            name_target("v2.orders.mesh", Some(8080), "/path")
        );
        assert_eq!(parse("orders").unwrap(), name_target("orders", None, "/"));
        assert_eq!(
            parse("orders.mesh?q").unwrap(),
            name_target("orders.mesh", None, "/?q")
        );
        assert_eq!(
            parse(" 127.77.0.12:8080/x ").unwrap(),
            Target {
                host: Host::Vip(Ipv4Addr::new(127, 77, 0, 12)),
                port: Some(8080),
                path: "/x".into()
            }
        );
    }

    #[test]
    fn malformed_targets_are_refused_with_the_reason() {
        for (input, says) in [
            ("", "empty"),
            ("https://orders.mesh/", "https:// is not supported"),
            ("orders.mesh:http", "bad port"),
            ("orders.mesh:0", "bad port"),
            ("orders.mesh:70000", "bad port"),
            ("or_ders.mesh", "not a mesh name"),
            ("orders..mesh", "not a mesh name"),
            ("http://:8080/", "no host name"),
            ("u@orders.mesh", "user info"),
            ("[::1]:8080", "IPv4"),
            ("orders.mesh/a b", "bad path"),
        ] {
            let e = parse(input).unwrap_err();
            assert!(e.contains(says), "{input:?}: {e}");
        }
    }

    #[test]
    fn mesh_names_resolve_with_or_without_the_domain() {
        let svc = |s: &str| Some(MeshName::from_vip_key(s));
        assert_eq!(mesh_name("orders", "mesh"), svc("orders"));
        assert_eq!(mesh_name("orders.mesh", "mesh"), svc("orders"));
        assert_eq!(mesh_name("v2.orders.mesh", "mesh"), svc("v2.orders"));
        assert_eq!(mesh_name("v2.orders", "mesh"), svc("v2.orders"));
        assert_eq!(mesh_name("orders.svc.local", "svc.local."), svc("orders"));
        assert_eq!(mesh_name("a.b.c.mesh", "mesh"), None);
        assert_eq!(svc("v2.orders").unwrap().vip_key(), "v2.orders");
    }

    #[test]
    fn headers_parse_as_name_colon_value() {
        let (n, v) = header("X-Canary: 1").unwrap();
        assert_eq!((n.as_str(), v.to_str().unwrap()), ("x-canary", "1"));
        let (n, v) = header("x-hostmesh-timeout:250ms").unwrap();
        assert_eq!(
            (n.as_str(), v.to_str().unwrap()),
            ("x-hostmesh-timeout", "250ms")
        );
        assert!(header("x-canary").unwrap_err().contains("NAME:VALUE"));
        assert!(
            header("bad name:1")
                .unwrap_err()
                .contains("not a header name")
        );
        assert!(header(":1").unwrap_err().contains("not a header name"));
        assert!(header("x-a:\u{1}").unwrap_err().contains("not allow"));
    }
}
