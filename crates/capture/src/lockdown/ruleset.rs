//! The lockdown table as text (pure): which ports are locked, and the `nft -f` batch that
//! replaces whatever table of ours is there with one that locks exactly those.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use ipnet::IpNet;

use hostmesh_config::spec::InstanceSpec;

use super::TABLE;

/// One locked port and the networks that may still connect to it directly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockedPort {
    pub port: u16,
    /// Sorted, without duplicates: the union of the `allow_direct` of every instance on the port.
    pub allow: Vec<IpNet>,
}

/// The ports to lock for these specs: the target port of each one marked `lockdown`, in port
/// order. Instances that share a port share one rule, so their `allow_direct` lists are merged
/// (the kernel sees a port, not an instance).
pub fn locked_ports(specs: &[InstanceSpec]) -> Vec<LockedPort> {
    let mut ports: BTreeMap<u16, Vec<IpNet>> = BTreeMap::new();
    for spec in specs.iter().filter(|s| s.lockdown) {
        ports
            .entry(spec.target.port())
            .or_default()
            .extend(spec.allow_direct.iter().copied());
    }
    ports
        .into_iter()
        .map(|(port, mut allow)| {
            allow.sort_unstable();
            allow.dedup();
            LockedPort { port, allow }
        })
        .collect()
}

/// The batch that installs the table for `ports`, replacing any table of ours in the same
/// transaction (declaring the table first makes the delete succeed when there is none).
///
/// Why each rule:
/// - `inet`: one table sees IPv4 and IPv6; the `input` hook sees only packets for this host,
///   never forwarded ones, and `policy accept` leaves everything else to the host's firewall
///   (lockdown only ever refuses; it never opens what another table drops).
/// - Only connection attempts (SYN without ACK) to a locked port are judged, in a chain of
///   their own: an established connection is never cut (lockdown turning on or a network leaving
///   `allow_direct` affects new connections), no conntrack is needed (the table does not load
///   it on hosts that do not use it), and the reply packets of this host's own outgoing
///   connections are never touched, whatever their port.
/// - `fib saddr type local`: a source address that is one of this host's own (loopback, or any
///   address of its interfaces) is this host: the agent, health checks, local clients.
/// - `reject with tcp reset`: the client sees "connection refused" at once, not a timeout.
pub fn ruleset(ports: &[LockedPort]) -> String {
    let mut out = format!(
        "table {TABLE}\n\
         delete table {TABLE}\n\
         table {TABLE} {{\n\
         \tset locked_ports {{\n\
         \t\ttype inet_service\n"
    );
    if !ports.is_empty() {
        let list: Vec<String> = ports.iter().map(|p| p.port.to_string()).collect();
        let _ = writeln!(out, "\t\telements = {{ {} }}", list.join(", "));
    }
    out.push_str(
        "\t}\n\
         \tchain input {\n\
         \t\ttype filter hook input priority filter; policy accept;\n\
         \t\ttcp dport @locked_ports tcp flags & (syn | ack) == syn jump connect\n\
         \t}\n\
         \tchain connect {\n\
         \t\tfib saddr type local accept\n",
    );
    for p in ports {
        let (v4, v6): (Vec<&IpNet>, Vec<&IpNet>) =
            p.allow.iter().partition(|n| matches!(n, IpNet::V4(_)));
        for (family, nets) in [("ip", v4), ("ip6", v6)] {
            if nets.is_empty() {
                continue;
            }
            let nets: Vec<String> = nets.iter().map(|n| n.to_string()).collect();
            let _ = writeln!(
                out,
                "\t\ttcp dport {} {family} saddr {{ {} }} accept",
                p.port,
                nets.join(", ")
            );
        }
    }
    out.push_str(
        "\t\treject with tcp reset\n\
         \t}\n\
         }\n",
    );
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn spec(id: &str, target: &str, allow: &[&str], lockdown: bool) -> InstanceSpec {
        InstanceSpec {
            service: "orders".into(),
            id: id.into(),
            port: 8080,
            target: target.parse().unwrap(),
            protocol: hostmesh_config::spec::Protocol::Http,
            tags: Vec::new(),
            weight: 100,
            check: None,
            allow_direct: allow.iter().map(|a| a.parse().unwrap()).collect(),
            lockdown,
        }
    }

    #[test]
    fn ports_are_merged_sorted_and_only_locked_ones() {
        let specs = [
            spec("b", "127.0.0.1:9090", &[], true),
            spec("a", "127.0.0.1:8080", &["10.20.0.0/16", "fd00::/8"], true),
            spec("c", "10.0.0.5:8080", &["10.20.0.0/16", "10.9.0.0/24"], true),
            spec("d", "127.0.0.1:7070", &[], false),
        ];
        let ports = locked_ports(&specs);
        let shown: Vec<(u16, Vec<String>)> = ports
            .iter()
            .map(|p| (p.port, p.allow.iter().map(|n| n.to_string()).collect()))
            .collect();
        assert_eq!(
            shown,
            [
                (
                    8080,
                    vec![
                        "10.9.0.0/24".to_owned(),
                        "10.20.0.0/16".to_owned(),
                        "fd00::/8".to_owned()
                    ]
                ),
                (9090, vec![]),
            ]
        );
    }

    #[test]
    fn the_ruleset_replaces_our_table_and_locks_each_port() {
        let ports = locked_ports(&[
            spec("a", "127.0.0.1:8080", &["10.20.0.0/16", "fd00::/8"], true),
            spec("b", "127.0.0.1:9090", &[], true),
        ]);
        assert_eq!(
            ruleset(&ports),
            "table inet hostmesh_lockdown\n\
             delete table inet hostmesh_lockdown\n\
             table inet hostmesh_lockdown {\n\
             \tset locked_ports {\n\
             \t\ttype inet_service\n\
             \t\telements = { 8080, 9090 }\n\
             \t}\n\
             \tchain input {\n\
             \t\ttype filter hook input priority filter; policy accept;\n\
             \t\ttcp dport @locked_ports tcp flags & (syn | ack) == syn jump connect\n\
             \t}\n\
             \tchain connect {\n\
             \t\tfib saddr type local accept\n\
             \t\ttcp dport 8080 ip saddr { 10.20.0.0/16 } accept\n\
             \t\ttcp dport 8080 ip6 saddr { fd00::/8 } accept\n\
             \t\treject with tcp reset\n\
             \t}\n\
             }\n"
        );
    }

    #[test]
    fn no_ports_is_an_empty_set_not_a_syntax_error() {
        let text = ruleset(&[]);
        assert!(!text.contains("elements"), "{text}");
        assert!(text.contains("reject with tcp reset"), "{text}");
    }
}
