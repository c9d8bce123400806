//! Why each Consul field without a place in a hostmesh service definition is left out. The
//! table in docs/reference/cli.md (`hostmesh import consul`) lists the same reasons.

/// The reason for a field, by its normalized dotted key (`meta`, `check.header`).
pub fn reason(key: &str) -> &'static str {
    REASONS
        .iter()
        .find(|(keys, _)| keys.contains(&key))
        .map_or_else(
            || {
                if key.starts_with("check.") {
                    "not a Consul check field hostmesh knows"
                } else {
                    "not a Consul service field hostmesh knows"
                }
            },
            |(_, reason)| reason,
        )
}

const REASONS: &[(&[&str], &str)] = &[
    (
        &["meta"],
        "hostmesh service definitions carry no metadata (only Meta.protocol is read, as the protocol)",
    ),
    (
        &["taggedaddresses"],
        "an instance has one address in hostmesh: its host's, published by the agent",
    ),
    (
        &["enabletagoverride"],
        "only the definition file sets an instance's tags in hostmesh",
    ),
    (
        &["connect", "native"],
        "hostmesh's agents proxy and encrypt between hosts themselves: there is no sidecar to \
         declare (a protocol under SidecarService.Proxy.Config is read)",
    ),
    (
        &["proxy"],
        "a Consul mesh proxy's settings; hostmesh's agent is the proxy",
    ),
    (
        &["token"],
        "a Consul ACL token; agents authenticate to etcd with their own credentials ([etcd] username)",
    ),
    (
        &["weights.warning", "check.failuresbeforewarning"],
        "hostmesh has no warning state: an instance is passing, critical or in maintenance",
    ),
    (
        &["namespace", "partition"],
        "Consul Enterprise tenancy; a hostmesh mesh is one namespace",
    ),
    (
        &["locality"],
        "hostmesh takes locality from the host's agent.zone",
    ),
    (&["socketpath"], "hostmesh reaches apps over TCP only"),
    (
        &["ports"],
        "a hostmesh definition has one port: write one definition per port",
    ),
    (
        &["check.id", "check.checkid", "check.name", "check.notes"],
        "a label; hostmesh reports a check under its instance",
    ),
    (
        &["check.status"],
        "hostmesh starts a checked instance critical and probes it at once",
    ),
    (
        &["check.deregistercriticalserviceafter"],
        "hostmesh never deregisters a failing instance: it stays registered, critical, without traffic",
    ),
    (
        &["check.header"],
        "hostmesh's http check sends no extra headers",
    ),
    (
        &["check.body"],
        "hostmesh's http check sends a GET without a body",
    ),
    (
        &["check.tlsskipverify", "check.tlsservername"],
        "hostmesh's http check speaks plain HTTP to the target",
    ),
    (
        &["check.disableredirects"],
        "hostmesh's http check never follows redirects: only a 2xx passes",
    ),
    (&["check.outputmaxsize"], "hostmesh keeps no check output"),
    (
        &["check.serviceid"],
        "a check in a definition belongs to that definition's instance",
    ),
    (
        &["check.ttl"],
        "a TTL check is passed by the app calling Consul's API, which hostmesh does not have: \
         use an http, tcp or exec check",
    ),
    (
        &["check.grpc", "check.grpcusetls"],
        "hostmesh has no gRPC health check: tcp = true, or exec = [\"grpc_health_probe\", …]",
    ),
    (
        &["check.h2ping", "check.h2pingusetls"],
        "hostmesh has no HTTP/2 ping check; tcp = true comes closest",
    ),
    (
        &["check.dockercontainerid", "check.shell"],
        "hostmesh runs exec checks on the host, not inside a container",
    ),
    (
        &["check.aliasservice", "check.aliasnode"],
        "hostmesh has no alias checks: an instance's health is its own check's",
    ),
    (&["check.udp"], "hostmesh has no UDP check"),
    (
        &["check.osservice"],
        "hostmesh has no OS service check: exec = [\"systemctl\", \"is-active\", \"UNIT\"] does the same",
    ),
    (
        &["check.script"],
        "a shell command line; hostmesh runs exec checks without a shell: exec = [\"/bin/sh\", \"-c\", \"…\"] if a shell is meant",
    ),
    (
        &["check.tcpusetls"],
        "hostmesh's tcp check only opens a TCP connection",
    ),
];
