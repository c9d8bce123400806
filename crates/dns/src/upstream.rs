//! Which servers out-of-domain names go to: the configured list with `system` expanded from
//! `/etc/resolv.conf`, minus this shim itself.
//!
//! Once the shim is installed, resolv.conf usually names the shim (that is how legacy apps
//! find it), so taking it verbatim would make every forwarded query loop back to us. The file
//! is read once at start, as the config documents.

use std::net::{IpAddr, SocketAddr};

use hostmesh_config::Upstream;

pub(crate) const RESOLV_CONF: &str = "/etc/resolv.conf";
const DNS_PORT: u16 = 53;

/// The `nameserver` addresses of a resolv.conf, in order. IPv6 zone ids (`%eth0`) are dropped:
/// the resolver takes a plain address.
pub(crate) fn nameservers(resolv_conf: &str) -> Vec<IpAddr> {
    resolv_conf
        .lines()
        .filter_map(|line| {
            let line = line.split(['#', ';']).next().unwrap_or_default();
            let mut words = line.split_whitespace();
            if words.next() != Some("nameserver") {
                return None;
            }
            let addr = words.next()?;
            addr.split('%').next()?.parse().ok()
        })
        .collect()
}

/// Whether a query sent to `server` would reach the shim listening on `us`.
pub(crate) fn is_self(server: SocketAddr, us: SocketAddr) -> bool {
    if server.port() != us.port() {
        return false;
    }
    let (server_ip, our_ip) = (server.ip().to_canonical(), us.ip().to_canonical());
    server_ip == our_ip
        // Bound to the wildcard, we also answer on every loopback and local address; the
        // loopback ones are the ones a resolv.conf names.
        || (our_ip.is_unspecified() && (server_ip.is_loopback() || server_ip.is_unspecified()))
        || (server_ip.is_unspecified() && our_ip.is_loopback())
}

/// What the upstream list resolved to.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Resolved {
    pub(crate) servers: Vec<SocketAddr>,
    /// Entries dropped because they are this shim.
    pub(crate) dropped_self: Vec<SocketAddr>,
    /// `system` was configured but contributed no usable server.
    pub(crate) system_empty: bool,
}

/// Expands `upstream` against `resolv_conf` (the file's text, `None` when unreadable) and
/// drops the shim's own address `us`. Order is kept and duplicates removed.
pub(crate) fn resolve(
    upstream: &[Upstream],
    resolv_conf: Option<&str>,
    us: SocketAddr,
) -> Resolved {
    let mut out = Resolved::default();
    for entry in upstream {
        let candidates: Vec<SocketAddr> = match entry {
            Upstream::Addr(addr) => vec![*addr],
            Upstream::System => {
                let from_system: Vec<SocketAddr> = resolv_conf
                    .map(nameservers)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|ip| SocketAddr::new(ip, DNS_PORT))
                    .collect();
                if from_system.iter().all(|s| is_self(*s, us)) {
                    out.system_empty = true;
                }
                from_system
            }
        };
        for server in candidates {
            if is_self(server, us) {
                if !out.dropped_self.contains(&server) {
                    out.dropped_self.push(server);
                }
            } else if !out.servers.contains(&server) {
                out.servers.push(server);
            }
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn reads_nameservers() {
        let text = "# generated\nsearch example.com\nnameserver 10.0.0.2\n\
                    nameserver   fe80::1%eth0 ; comment\nnameserver bogus\noptions ndots:2\n\
                    nameserver 2001:db8::53\n";
        let got = nameservers(text);
        assert_eq!(
            got,
            vec![
                "10.0.0.2".parse::<IpAddr>().unwrap(),
                "fe80::1".parse().unwrap(),
                "2001:db8::53".parse().unwrap(),
            ]
        );
    }

    #[test]
    fn system_minus_ourselves() {
        let conf = "nameserver 127.0.0.1\nnameserver 10.0.0.2\nnameserver 10.0.0.2\n";
        let got = resolve(
            &[Upstream::System, Upstream::Addr(sa("10.0.0.3:5353"))],
            Some(conf),
            sa("127.0.0.1:53"),
        );
        assert_eq!(got.servers, vec![sa("10.0.0.2:53"), sa("10.0.0.3:5353")]);
        assert_eq!(got.dropped_self, vec![sa("127.0.0.1:53")]);
        assert!(!got.system_empty);
    }

    #[test]
    fn system_with_only_ourselves_is_empty() {
        let got = resolve(
            &[Upstream::System],
            Some("nameserver 127.0.0.1\n"),
            sa("127.0.0.1:53"),
        );
        assert!(got.servers.is_empty());
        assert!(got.system_empty);
        let got = resolve(&[Upstream::System], None, sa("127.0.0.1:53"));
        assert!(got.system_empty);
        // On another port the loopback resolver is not us.
        let got = resolve(
            &[Upstream::System],
            Some("nameserver 127.0.0.1\n"),
            sa("127.0.0.1:5300"),
        );
        assert_eq!(got.servers, vec![sa("127.0.0.1:53")]);
    }

    #[test]
    fn wildcard_listen_covers_loopback() {
        assert!(is_self(sa("127.0.0.1:53"), sa("0.0.0.0:53")));
        assert!(is_self(sa("127.0.0.53:53"), sa("0.0.0.0:53")));
        assert!(is_self(sa("[::1]:53"), sa("[::]:53")));
        assert!(!is_self(sa("10.0.0.2:53"), sa("0.0.0.0:53")));
        assert!(!is_self(sa("127.0.0.53:53"), sa("127.0.0.1:53")));
        assert!(is_self(sa("[::ffff:127.0.0.1]:53"), sa("127.0.0.1:53")));
    }

    #[test]
    fn an_explicit_upstream_naming_us_is_dropped() {
        let got = resolve(
            &[Upstream::Addr(sa("127.0.0.1:53"))],
            None,
            sa("127.0.0.1:53"),
        );
        assert!(got.servers.is_empty());
        assert!(!got.system_empty);
    }
}
