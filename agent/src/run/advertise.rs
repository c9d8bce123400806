//! The address peers reach this host at, when `advertise_address` is not set.

use std::net::{IpAddr, SocketAddr, UdpSocket};

/// Without `advertise_address`: the source address this host would use to reach etcd, which is
/// the interface peers most likely share. Connecting a UDP socket sends nothing.
pub(super) fn pick_advertise_address(endpoints: &[String]) -> IpAddr {
    let fallback = IpAddr::from([127, 0, 0, 1]);
    let Some(target) = endpoints.iter().find_map(|e| endpoint_socket(e)) else {
        tracing::warn!(
            "advertise_address not set and no etcd endpoint to derive it from; using {fallback}"
        );
        return fallback;
    };
    let bind: SocketAddr = if target.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    match UdpSocket::bind(bind).and_then(|s| s.connect(target).and_then(|()| s.local_addr())) {
        Ok(local) => local.ip(),
        Err(e) => {
            tracing::warn!(
                "advertise_address not set and the route to etcd is unknown ({e}); using {fallback}"
            );
            fallback
        }
    }
}

pub(super) fn endpoint_socket(endpoint: &str) -> Option<SocketAddr> {
    use std::net::ToSocketAddrs;
    let rest = endpoint.split_once("://").map_or(endpoint, |(_, r)| r);
    let authority = rest.split('/').next()?;
    authority.to_socket_addrs().ok()?.next()
}
