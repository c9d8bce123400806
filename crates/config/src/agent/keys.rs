//! Every key of the agent config (`agent.toml`), declared once. The tables under "Agent config"
//! in docs/config.md are generated from these declarations.

use crate::key::DefaultValue::{Derived, Unset, Written};
use crate::key::keys;

const LISTEN: &str = "`IP:PORT`";
const AS_DNS_LISTEN: &str = "As `dns.listen`.";

keys! {
    AGENT_HOST = "agent.host", Str, "string",
        Derived("the machine's host name (gethostname(2)), trimmed and lowercased"), Restart,
        "Lowercase letters, digits, `.`, `-`; 1..=253 chars. An explicit value is not \
         lowercased, so `Web` is a problem. If unset and the hostname cannot be read or fails \
         these rules, it is a problem (\"…; set agent.host\").";
    AGENT_ADVERTISE_ADDRESS = "agent.advertise_address", Str, "IP string (v4 or v6)",
        Unset("unset, so the agent uses its source address towards the first resolvable etcd \
               endpoint, else `127.0.0.1` with a warning"), Restart,
        "Must not be unspecified (`0.0.0.0`, `::`) or multicast. `\"\"` = unset.";
    AGENT_ZONE = "agent.zone", Str, "string", Unset("unset"), Restart,
        "Letters (either case), digits, `.`, `_`, `-`; 1..=63 chars. `\"\"` = unset. This \
         host's availability zone: routes with `locality = \"zone\"` keep its requests in it \
         ([routes.md](routes.md#zones)).";
    AGENT_SERVICES_DIR = "agent.services_dir", Str, "path", Written("\"/etc/hostmesh/services.d\""),
        Applied,
        "Non-empty. With `--config` and at agent start, the directory must be readable (\"cannot \
         read the services directory\"). A relative path is resolved against the working \
         directory.";
    AGENT_DATA_DIR = "agent.data_dir", Str, "path", Written("\"/var/lib/hostmesh\""), Restart,
        "Non-empty; refused when it exists and is not a directory. Holds `catalog.json` (the \
         last-known catalog), `lease` and `maintenance.json` (instances in `hostmesh maint`).";
    AGENT_DRAIN = "agent.drain", Str, "duration", Written("\"5s\""), Restart,
        "`\"0s\"` is allowed and means no drain. This is how long SIGTERM keeps serving after \
         deregistering; a second signal ends the wait early.";

    ETCD_ENDPOINTS = "etcd.endpoints", StrList, "list of strings",
        Written("[\"http://127.0.0.1:2379\"]"), Restart,
        "At least one. No duplicates, compared after a trailing `/` is dropped. Each item is \
         `http://HOST:PORT` or `https://HOST:PORT`. HOST is a name or IPv4 address \
         (`[A-Za-z0-9.-]`) or a bracketed IPv6 address (`[::1]`). PORT is 1..=65535. No path, \
         query, fragment or `user@`. A trailing `/` is dropped. Each bad item is its own problem \
         (`item N (\"…\"): …`). Members of one etcd cluster, or etcd grpc-proxies in front of \
         it: the agent spreads its requests over them and moves its lease and watch to another \
         when one fails. List two or more proxies behind a proxy tier (docs/scale.md).";
    ETCD_PREFIX = "etcd.prefix", Str, "string", Written("\"/hostmesh\""), Restart,
        "Starts with `/`. Does not end with `/`, so `/` alone is refused. No `//`, whitespace or \
         control characters.";
    ETCD_LEASE_TTL = "etcd.lease_ttl", Str, "duration", Written("\"10s\""), Restart,
        "Whole seconds, 2s..=1h.";
    ETCD_CA_FILE = "etcd.ca_file", Str, "path", Unset("unset"), Restart,
        "`\"\"` = unset. Read only when connecting.";
    ETCD_CERT_FILE = "etcd.cert_file", Str, "path", Unset("unset"), Restart,
        "`\"\"` = unset. Set both `cert_file` and `key_file`, or neither.";
    ETCD_KEY_FILE = "etcd.key_file", Str, "path", Unset("unset"), Restart,
        "`\"\"` = unset. Set with `cert_file`.";
    ETCD_USERNAME = "etcd.username", Str, "string", Unset("unset"), Restart,
        "`\"\"` = unset. Set both `username` and `password_file`, or neither.";
    ETCD_PASSWORD_FILE = "etcd.password_file", Str, "path", Unset("unset"), Restart,
        "`\"\"` = unset. Set with `username`. Read when connecting, with trailing whitespace \
         removed; an empty file is an error.";

    DNS_LISTEN = "dns.listen", Str, LISTEN, Written("\"127.0.0.1:53\""), Restart,
        "IPv6 is written `[::1]:53`. Port 0 is allowed (the OS picks). See \
         [listener rules](#listener-rules).";
    DNS_DOMAIN = "dns.domain", Str, "string", Written("\"mesh\""), Restart,
        "Dot-separated labels. Each label is `[a-z0-9-]`, 1..=63 chars, with no `-` at either \
         end. At most 253 chars in total, with no trailing `.`.";
    DNS_VIP_RANGE = "dns.vip_range", Str, "IPv4 CIDR", Written("\"127.77.0.0/16\""), Restart,
        "Must be written as its network address, with no host bits set. The message suggests \
         the truncated form. Must lie inside `127.0.0.0/8`. Prefix length at most /30. The \
         network and broadcast addresses are never handed out.";
    DNS_TTL = "dns.ttl", Str, "duration", Written("\"5s\""), Restart,
        "Whole seconds, 1s..=1 day.";
    DNS_UPSTREAM = "dns.upstream", StrList, "list of strings", Written("[\"system\"]"), Restart,
        "Each item is one of: `\"system\"` (the `resolv.conf` nameservers as read at start), an \
         IP (port 53), or `IP:PORT` (IPv6 with a port is written `[::1]:5353`). Port 0 and \
         unspecified addresses are refused. `[]` refuses non-mesh names.";
    DNS_CONSUL = "dns.consul", Bool, "bool", Written("false"), Restart,
        "Also answer Consul's names under `consul` (`NAME.service.consul`, \
         `_NAME._tcp.service.consul`, `HOST.node.consul`, …) with the mesh's VIPs \
         ([dns.md](reference/dns.md#consul-names)); `false`: `*.consul` is forwarded like any \
         other name. With `true`, `dns.domain` must not be `consul` or end in `.consul`.";

    PROXY_CAPTURE = "proxy.capture", Str, "string", Written("\"nft\""), Restart,
        "`\"nft\"` or `\"listen\"`.";
    PROXY_OUTBOUND_LISTEN = "proxy.outbound_listen", Str, LISTEN, Written("\"127.0.0.1:4140\""),
        Restart, AS_DNS_LISTEN;
    PROXY_INBOUND_LISTEN = "proxy.inbound_listen", Str, LISTEN, Written("\"0.0.0.0:4143\""),
        Restart, AS_DNS_LISTEN;
    PROXY_CONNECT_TIMEOUT = "proxy.connect_timeout", Str, "duration", Written("\"1s\""), Restart,
        "> 0.";
    PROXY_REQUEST_TIMEOUT = "proxy.request_timeout", Str, "duration", Written("\"10s\""), Restart,
        "> 0.";
    PROXY_IDLE_TIMEOUT = "proxy.idle_timeout", Str, "duration", Written("\"60s\""), Restart,
        "> 0.";
    PROXY_HEADER_READ_TIMEOUT = "proxy.header_read_timeout", Str, "duration", Written("\"10s\""),
        Restart,
        "> 0. How long a client may take to send a whole HTTP/1 request head; slower clients are \
         disconnected without an answer (slowloris). An app connection idle between requests is \
         also closed after this long. 10 s, as HAProxy advises for `timeout http-request`.";
    PROXY_MAX_CONNECTIONS = "proxy.max_connections", Int, "integer", Written("10000"), Restart,
        "1..=1,000,000.";
    PROXY_MAX_HEADERS = "proxy.max_headers", Int, "integer", Written("100"), Restart,
        "1..=1,000.";
    PROXY_MAX_HEADER_BYTES = "proxy.max_header_bytes", Int, "integer", Written("65536"), Restart,
        "1..=1 MiB (1048576).";
    PROXY_WORKERS = "proxy.workers", Int, "integer", Written("0"), Restart,
        "0 to 1024. Threads that serve proxied connections, each a single-threaded event loop \
         that keeps a connection for its life; `0`: one per CPU the agent may run on (its CPU \
         affinity, e.g. systemd's `CPUAffinity=`).";
    PROXY_PIN_WORKERS = "proxy.pin_workers", Bool, "bool", Written("false"), Restart,
        "With one worker per CPU, keep each on its own CPU. Off by default: a pinned worker \
         woken while an app keeps its CPU busy waits there even when another CPU is idle (on \
         the two-host bench, unpinned workers served about 10 % more requests). Worth measuring \
         where the agent has CPUs of its own (`CPUAffinity=`, the apps elsewhere). A worker \
         that cannot be pinned logs a warning and runs unpinned.";
    PROXY_LOCKDOWN = "proxy.lockdown", Bool, "bool", Written("false"), Applied,
        "`true`: the agent refuses, with an nftables table of its own (`inet hostmesh_lockdown`), \
         TCP connections to the `target` port of each of this host's instances unless they come \
         from this host itself or from the service's `allow_direct` networks, so peers reach \
         the apps only through the mesh. Needs `nft` and CAP_NET_ADMIN: when they fail, the \
         agent does not start (a reload is rejected). A target port equal to the port of \
         `proxy.inbound_listen` or `admin.listen` is a problem. See [lockdown.md](lockdown.md).";

    TLS_MODE = "tls.mode", Str, "string", Written("\"mtls\""), Restart,
        "`\"mtls\"` or `\"disabled\"`. `\"mtls\"`: every agent-to-agent connection is TLS 1.3 \
         with a certificate on both ends; there is no plaintext fallback. `\"disabled\"`: plain \
         TCP between hosts and the caller is whatever the peer claims, for tests and dev only.";
    TLS_CA_FILE = "tls.ca_file", Str, "path", Written("\"/etc/hostmesh/tls/ca.pem\""), Restart,
        "Non-empty. With `mtls`: one or more PEM CA certificates (a bundle, e.g. old and new CA \
         during a CA rotation); peers must chain to one of them. The file's content is re-read \
         on SIGHUP and when it changes; a new path needs a restart.";
    TLS_CERT_FILE = "tls.cert_file", Str, "path", Written("\"/etc/hostmesh/tls/host.pem\""),
        Restart,
        "Non-empty. With `mtls`: this host's PEM certificate (then any intermediates). It must \
         chain to `ca_file`, be valid now, allow both serverAuth and clientAuth, not be a CA, and \
         carry exactly one URI SAN `spiffe://<trust_domain>/host/<agent.host>` plus `agent.host` \
         as DNS SAN (what `hostmesh ca issue` makes). Re-read as `ca_file` is.";
    TLS_KEY_FILE = "tls.key_file", Str, "path", Written("\"/etc/hostmesh/tls/host.key\""),
        Restart,
        "Non-empty. With `mtls`: the PEM private key (PKCS#8, SEC1 or PKCS#1) of `cert_file`. \
         Re-read as `ca_file` is.";
    TLS_TRUST_DOMAIN = "tls.trust_domain", Str, "string", Written("\"hostmesh.local\""), Restart,
        "Lowercase letters, digits, `.`, `-`, `_`; 1..=255 chars. Peers' identities must be in \
         it.";

    POLICY_DEFAULT = "policy.default", Str, "string", Written("\"allow\""), Restart,
        "`\"allow\"` or `\"deny\"`. Who may call a service that has no access policy in etcd \
         (`hostmesh policy set`): every host, or none. Give every agent the same value. See \
         [policy.md](policy.md).";

    ADMIN_LISTEN = "admin.listen", Str, LISTEN, Written("\"127.0.0.1:9190\""), Restart,
        "As `dns.listen`. The endpoint's own limits are fixed \
         ([operations](operations.md#connection-limits-and-file-descriptors)).";

    LOG_FORMAT = "log.format", Str, "string", Written("\"text\""), Restart,
        "`\"text\"` or `\"json\"`. Output goes to stderr, which is the journal under systemd.";
    LOG_LEVEL = "log.level", Str, "string", Written("\"info\""), Restart,
        "Either a level (`trace`, `debug`, `info`, `warn`, `error`, `off`, in any case) or a \
         `tracing-subscriber` filter with at least one `=` (e.g. `\"info,hostmesh=debug\"`), \
         which must parse. Any other bare word is refused, because it would silently log \
         nothing. Surrounding whitespace is trimmed. A valid `RUST_LOG` overrides this key at \
         runtime.";

    TRACING_OTLP_ENDPOINT = "tracing.otlp_endpoint", Str, "string", Unset("`\"\"` (no export)"),
        Restart,
        "`\"\"` or unset means no export. Otherwise the `http://` base URL of an OTLP/HTTP \
         collector (spans are POSTed as JSON to `<url>/v1/traces`), normally a collector on the \
         same host: `http://127.0.0.1:4318`. `https://` is refused (no TLS to the collector).";
    TRACING_SAMPLE_RATIO = "tracing.sample_ratio", Float, "number", Written("0.01"), Restart,
        "0.0..=1.0. An integer (`0`, `1`) is accepted. The share of new traces (requests without \
         a `traceparent`) that are recorded; a request with one follows its sampled flag \
         (parent-based).";

    ACCESS_LOG_ENABLED = "access_log.enabled", Bool, "bool", Written("false"), Restart,
        "One line per HTTP request and per TCP connection, outbound and inbound, written off \
         the data path: a line that cannot be written at once is dropped and counted \
         (`hostmesh_access_log_dropped_total`), never waited for. See \
         [operations.md](operations.md#access-logs).";
    ACCESS_LOG_FORMAT = "access_log.format", Str, "string", Written("\"json\""), Restart,
        "`\"json\"` (one object per line) or `\"haproxy\"` (HAProxy's HTTP and TCP log \
         formats, so pipelines parsing HAProxy logs read these lines).";
    ACCESS_LOG_PATH = "access_log.path", Str, "path",
        Unset("unset: the journal under systemd (`journalctl -t hostmesh-access`), else stderr"),
        Restart,
        "`\"\"` = unset. A file the agent appends to (created 0640); it must be writable at \
         start, and it is reopened on SIGHUP, after log rotation.";
}
