//! Network values in the agent config: etcd endpoints, listen addresses, DNS upstreams, the VIP
//! range and the advertised address.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use ipnet::{IpNet, Ipv4Net};

/// Where the DNS shim sends names outside the mesh domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upstream {
    /// The nameservers of `/etc/resolv.conf` as read at start.
    System,
    Addr(SocketAddr),
}

pub(crate) const LISTEN: &str = "an address IP:PORT such as \"127.0.0.1:53\"";

/// A listen address `IP:PORT`. Port 0 is allowed: the OS picks one (tests and `hostmesh dev`).
pub(crate) fn listen(s: &str) -> Result<SocketAddr, String> {
    s.parse().map_err(|_| {
        format!(
            "{s:?} is not an address IP:PORT such as \"127.0.0.1:53\" (an IPv6 one is \"[::1]:53\")"
        )
    })
}

/// An etcd endpoint `http(s)://HOST:PORT`, as etcd-client takes it: no path, query or user.
/// A trailing '/' is dropped.
pub(crate) fn etcd_endpoint(s: &str) -> Result<String, String> {
    let rest = s
        .strip_prefix("http://")
        .or_else(|| s.strip_prefix("https://"))
        .ok_or("must start with http:// or https://")?;
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.contains(['/', '?', '#', '@']) {
        return Err("must be http(s)://HOST:PORT, without path, query or user".to_owned());
    }
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let (ip, port) = bracketed
            .split_once("]:")
            .ok_or("needs a port: http(s)://HOST:PORT")?;
        ip.parse::<std::net::Ipv6Addr>()
            .map_err(|_| format!("{ip:?} is not an IPv6 address"))?;
        (ip, port)
    } else {
        authority
            .rsplit_once(':')
            .ok_or("needs a port: http(s)://HOST:PORT")?
    };
    if host.is_empty() {
        return Err("needs a host: http(s)://HOST:PORT".to_owned());
    }
    if !authority.starts_with('[')
        && !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
    {
        return Err(format!("{host:?} is not a host name or IPv4 address"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => {}
        _ => return Err(format!("{port:?} is not a port (1-65535)")),
    }
    Ok(s.strip_suffix('/').unwrap_or(s).to_owned())
}

/// A DNS upstream: `"system"`, `IP` (port 53) or `IP:PORT`.
pub(crate) fn upstream(s: &str) -> Result<Upstream, String> {
    if s == "system" {
        return Ok(Upstream::System);
    }
    let addr = match (s.parse::<SocketAddr>(), s.parse::<IpAddr>()) {
        (Ok(addr), _) => addr,
        (_, Ok(ip)) => SocketAddr::new(ip, 53),
        _ => return Err("expected \"system\", an IP address (port 53) or IP:PORT".to_owned()),
    };
    if addr.port() == 0 || addr.ip().is_unspecified() {
        return Err("is not an address to send queries to".to_owned());
    }
    Ok(Upstream::Addr(addr))
}

/// The VIP range: a network inside 127.0.0.0/8 (VIPs are always on loopback, so they never leak
/// onto a real network), at most /30, written as its network address.
pub(crate) fn vip_range(s: &str) -> Result<Ipv4Net, String> {
    let net: Ipv4Net = s
        .parse()
        .map_err(|_| format!("{s:?} is not an IPv4 network such as \"127.77.0.0/16\""))?;
    if net.addr() != net.network() {
        return Err(format!(
            "has host bits set; did you mean \"{}\"?",
            net.trunc()
        ));
    }
    let loopback =
        Ipv4Net::new(Ipv4Addr::new(127, 0, 0, 0), 8).expect("/8 is a valid prefix length");
    if !loopback.contains(&net) {
        return Err("must lie inside 127.0.0.0/8: VIPs are always loopback addresses".to_owned());
    }
    if net.prefix_len() > 30 {
        return Err(format!(
            "/{} is too small; the prefix length must be at most /30",
            net.prefix_len()
        ));
    }
    Ok(net)
}

/// A source network (`allow_direct`): IPv4 or IPv6, written as its network address; a bare
/// address is that one host (/32 or /128).
pub(crate) fn cidr(s: &str) -> Result<IpNet, String> {
    let net = match (s.parse::<IpNet>(), s.parse::<IpAddr>()) {
        (Ok(net), _) => net,
        (_, Ok(ip)) => IpNet::from(ip),
        _ => {
            return Err(format!(
                "{s:?} is not a network such as \"10.20.0.0/16\" or \"fd00::/8\", or an address"
            ));
        }
    };
    if net.addr() != net.network() {
        return Err(format!(
            "has host bits set; did you mean \"{}\"?",
            net.trunc()
        ));
    }
    Ok(net)
}

/// Where other hosts reach this one: a concrete unicast address.
pub(crate) fn advertise_address(s: &str) -> Result<IpAddr, String> {
    let ip: IpAddr = s
        .parse()
        .map_err(|_| format!("{s:?} is not an IP address such as \"10.0.0.5\""))?;
    if ip.is_unspecified() || ip.is_multicast() {
        return Err("must be an address other hosts can connect to".to_owned());
    }
    Ok(ip)
}

/// Whether two listeners would fight over one port: the same port on the same address, or on
/// an address and a wildcard that covers it (`[::]` covers IPv4 too: Linux binds it dual-stack).
pub(crate) fn clash(a: SocketAddr, b: SocketAddr) -> bool {
    fn covers(wildcard: IpAddr, other: IpAddr) -> bool {
        match wildcard {
            IpAddr::V6(ip) => ip.is_unspecified(),
            IpAddr::V4(ip) => ip.is_unspecified() && other.is_ipv4(),
        }
    }
    a.port() != 0
        && a.port() == b.port()
        && (a.ip() == b.ip() || covers(a.ip(), b.ip()) || covers(b.ip(), a.ip()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(
            etcd_endpoint("http://127.0.0.1:2379/").unwrap(),
            "http://127.0.0.1:2379"
        );
        assert!(etcd_endpoint("https://etcd-1.example:2379").is_ok());
        assert!(etcd_endpoint("http://[::1]:2379").is_ok());
        assert!(etcd_endpoint("127.0.0.1:2379").is_err());
        assert!(etcd_endpoint("http://127.0.0.1").is_err());
        assert!(etcd_endpoint("http://:2379").is_err());
        assert!(etcd_endpoint("http://a:0").is_err());
        assert!(etcd_endpoint("http://a:2379/v3").is_err());
        assert!(etcd_endpoint("http://u@a:2379").is_err());
    }

    #[test]
    fn upstreams() {
        assert_eq!(upstream("system").unwrap(), Upstream::System);
        assert_eq!(
            upstream("1.1.1.1").unwrap(),
            Upstream::Addr("1.1.1.1:53".parse().unwrap())
        );
        assert_eq!(
            upstream("[::1]:5353").unwrap(),
            Upstream::Addr("[::1]:5353".parse().unwrap())
        );
        assert_eq!(
            upstream("::1").unwrap(),
            Upstream::Addr("[::1]:53".parse().unwrap())
        );
        assert!(upstream("dns.google").is_err());
        assert!(upstream("0.0.0.0").is_err());
    }

    #[test]
    fn vip_ranges() {
        assert!(vip_range("127.77.0.0/16").is_ok());
        assert!(
            vip_range("127.77.0.1/16")
                .unwrap_err()
                .contains("127.77.0.0/16")
        );
        assert!(vip_range("10.0.0.0/8").is_err());
        assert!(vip_range("127.0.0.0/31").is_err());
        assert!(vip_range("127.0.0.0/7").is_err());
    }

    #[test]
    fn cidrs() {
        assert_eq!(cidr("10.20.0.0/16").unwrap().to_string(), "10.20.0.0/16");
        assert_eq!(cidr("fd00:20::/32").unwrap().to_string(), "fd00:20::/32");
        assert_eq!(cidr("10.20.0.7").unwrap().to_string(), "10.20.0.7/32");
        assert_eq!(cidr("::1").unwrap().to_string(), "::1/128");
        assert_eq!(cidr("0.0.0.0/0").unwrap().to_string(), "0.0.0.0/0");
        assert!(
            cidr("10.20.0.1/16")
                .unwrap_err()
                .contains("\"10.20.0.0/16\"")
        );
        assert!(cidr("10.20.0.0/33").is_err());
        assert!(cidr("lb.example").is_err());
        assert!(cidr("").is_err());
    }

    #[test]
    fn clashes() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(clash(a("127.0.0.1:53"), a("127.0.0.1:53")));
        assert!(clash(a("0.0.0.0:53"), a("127.0.0.1:53")));
        assert!(!clash(a("127.0.0.1:53"), a("127.0.0.2:53")));
        assert!(!clash(a("127.0.0.1:0"), a("127.0.0.1:0")));
        assert!(clash(a("[::]:53"), a("127.0.0.1:53")));
        assert!(!clash(a("0.0.0.0:53"), a("[::1]:53")));
    }
}
