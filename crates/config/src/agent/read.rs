//! Reading the agent config's keys into [`AgentConfig`], with the checks of each value and
//! those across keys.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::keys::*;
use super::{
    AccessLogFormat, AccessLogSection, AdminSection, AgentConfig, AgentSection, CONSUL_DOMAIN,
    Capture, DnsSection, EtcdSection, LogFormat, LogSection, PolicyDefault, PolicySection,
    ProxySection, TlsMode, TlsSection, TracingSection,
};
use crate::duration;
use crate::key::Key;
use crate::names;
use crate::net;
use crate::read::{DURATION, Or, Reader};

/// Per listener; more open connections than a host's descriptors could hold.
const MAX_CONNECTIONS: i64 = 1_000_000;
/// hyper's and h2's own ceilings are of this order; HAProxy's default is 101.
const MAX_HEADERS: i64 = 1_000;
/// nginx's and HAProxy's header buffers are 8–16 KiB by default.
const MAX_HEADER_BYTES: i64 = 1 << 20;

pub(super) fn read(r: &mut Reader, hostname: &dyn Fn() -> Result<String, String>) -> AgentConfig {
    let agent = AgentSection {
        host: host(r, hostname),
        advertise_address: r.optional(
            AGENT_ADVERTISE_ADDRESS,
            "an IP address such as \"10.0.0.5\"",
            net::advertise_address,
        ),
        zone: r.optional(AGENT_ZONE, "a string such as \"eu-1a\"", |s| {
            names::owned(s, names::zone)
        }),
        services_dir: r.path(AGENT_SERVICES_DIR),
        data_dir: data_dir(r),
        drain: r.duration_or_zero(AGENT_DRAIN),
    };
    let etcd = etcd(r);
    let dns = DnsSection {
        listen: r.string(DNS_LISTEN, net::LISTEN, net::listen),
        domain: r.string(DNS_DOMAIN, "a DNS name such as \"mesh\"", |s| {
            names::owned(s, names::dns_name)
        }),
        vip_range: r.string(
            DNS_VIP_RANGE,
            "an IPv4 network such as \"127.77.0.0/16\"",
            net::vip_range,
        ),
        ttl: r.string(DNS_TTL, DURATION, dns_ttl),
        upstream: r.list(
            DNS_UPSTREAM,
            Or::Declared,
            "\"system\" or an address",
            net::upstream,
        ),
        consul: r.boolean(DNS_CONSUL, Or::Declared),
    };
    let proxy = ProxySection {
        capture: r.choice(
            PROXY_CAPTURE,
            &[("nft", Capture::Nft), ("listen", Capture::Listen)],
        ),
        outbound_listen: r.string(PROXY_OUTBOUND_LISTEN, net::LISTEN, net::listen),
        inbound_listen: r.string(PROXY_INBOUND_LISTEN, net::LISTEN, net::listen),
        connect_timeout: r.duration(PROXY_CONNECT_TIMEOUT, Or::Declared),
        request_timeout: r.duration(PROXY_REQUEST_TIMEOUT, Or::Declared),
        idle_timeout: r.duration(PROXY_IDLE_TIMEOUT, Or::Declared),
        header_read_timeout: r.duration(PROXY_HEADER_READ_TIMEOUT, Or::Declared),
        // Upper bounds: each is allocated or counted per connection or request, and beyond them
        // a value only crashes (tokio's semaphore panics above 2^61 permits) or bloats the agent
        // (hyper reserves room for max_headers per request).
        max_connections: r.integer(PROXY_MAX_CONNECTIONS, Or::Declared, 1..=MAX_CONNECTIONS),
        max_headers: r.integer(PROXY_MAX_HEADERS, Or::Declared, 1..=MAX_HEADERS),
        max_header_bytes: r.integer(PROXY_MAX_HEADER_BYTES, Or::Declared, 1..=MAX_HEADER_BYTES),
        workers: r.integer(PROXY_WORKERS, Or::Declared, 0..=1024),
        pin_workers: r.boolean(PROXY_PIN_WORKERS, Or::Declared),
        lockdown: r.boolean(PROXY_LOCKDOWN, Or::Declared),
    };
    let tls = tls(r);
    let policy = PolicySection {
        default: r.choice(
            POLICY_DEFAULT,
            &[
                ("allow", PolicyDefault::Allow),
                ("deny", PolicyDefault::Deny),
            ],
        ),
    };
    let admin = AdminSection {
        listen: r.string(ADMIN_LISTEN, net::LISTEN, net::listen),
    };
    let log = LogSection {
        format: r.choice(
            LOG_FORMAT,
            &[("text", LogFormat::Text), ("json", LogFormat::Json)],
        ),
        level: r.string(LOG_LEVEL, "a string such as \"info\"", log_level),
    };
    let tracing = TracingSection {
        otlp_endpoint: r.optional(
            TRACING_OTLP_ENDPOINT,
            "a URL such as \"http://127.0.0.1:4318\"",
            otlp_endpoint,
        ),
        sample_ratio: r.float(TRACING_SAMPLE_RATIO, 0.0..=1.0),
    };
    let access_log = AccessLogSection {
        enabled: r.boolean(ACCESS_LOG_ENABLED, Or::Declared),
        format: r.choice(
            ACCESS_LOG_FORMAT,
            &[
                ("json", AccessLogFormat::Json),
                ("haproxy", AccessLogFormat::Haproxy),
            ],
        ),
        path: r.optional_path(ACCESS_LOG_PATH),
    };
    let config = AgentConfig {
        agent,
        etcd,
        dns,
        proxy,
        tls,
        policy,
        admin,
        log,
        tracing,
        access_log,
        values: Default::default(),
    };
    check_listeners(r, &config);
    check_consul_domain(r, &config.dns);
    config
}

/// With Consul names on, the mesh domain must not overlap `consul`: one name would belong to
/// both zones.
fn check_consul_domain(r: &mut Reader, dns: &DnsSection) {
    let overlaps = dns.domain == CONSUL_DOMAIN
        || dns
            .domain
            .strip_suffix(CONSUL_DOMAIN)
            .is_some_and(|above| above.ends_with('.'));
    if dns.consul && overlaps && r.ok(&[DNS_DOMAIN, DNS_CONSUL]) {
        r.report(
            DNS_DOMAIN,
            format!(
                "{:?} overlaps the consul domain that dns.consul = true answers; choose another \
                 domain or turn dns.consul off",
                dns.domain
            ),
        );
    }
}

/// `agent.data_dir`: a directory, or a path where one can be made at start.
fn data_dir(r: &mut Reader) -> PathBuf {
    let dir = r.path(AGENT_DATA_DIR);
    if dir.exists() && !dir.is_dir() {
        let message = format!("{} exists and is not a directory", dir.display());
        r.report(AGENT_DATA_DIR, message);
    }
    dir
}

/// `agent.host`, or the machine's hostname when unset.
fn host(r: &mut Reader, hostname: &dyn Fn() -> Result<String, String>) -> String {
    if r.has(AGENT_HOST) {
        return r.string_or(
            AGENT_HOST,
            Or::Given(String::new()),
            "a string such as \"web-01\"",
            |s| names::owned(s, names::host),
        );
    }
    let name = match hostname() {
        Ok(name) => {
            let name = name.trim().to_lowercase();
            match names::host(&name) {
                Ok(()) => name,
                Err(e) => {
                    let message = format!(
                        "agent.host is not set and the machine's hostname {name:?} cannot be used ({e}); set agent.host"
                    );
                    r.report(AGENT_HOST, message);
                    String::new()
                }
            }
        }
        Err(e) => {
            let message = format!(
                "agent.host is not set and the machine's hostname cannot be read ({e}); set agent.host"
            );
            r.report(AGENT_HOST, message);
            String::new()
        }
    };
    r.record(AGENT_HOST, &name);
    name
}

/// The machine's host name as the kernel gives it to every process (gethostname(2), the UTS
/// namespace's nodename). Not `/proc/sys/kernel/hostname`: the unit's `ProcSubset=pid` hides
/// `/proc/sys`, and a container may not mount /proc at all.
pub(crate) fn machine_hostname() -> Result<String, String> {
    let name = nix::unistd::gethostname().map_err(|e| format!("gethostname: {e}"))?;
    name.into_string()
        .map_err(|raw| format!("gethostname: not UTF-8 ({raw:?})"))
}

fn etcd(r: &mut Reader) -> EtcdSection {
    let endpoints = r.list(
        ETCD_ENDPOINTS,
        Or::Declared,
        "a URL such as \"http://127.0.0.1:2379\"",
        net::etcd_endpoint,
    );
    if r.ok(&[ETCD_ENDPOINTS]) {
        if endpoints.is_empty() {
            r.report(ETCD_ENDPOINTS, "must list at least one endpoint");
        }
        for (i, endpoint) in endpoints.iter().enumerate() {
            if endpoints[..i].contains(endpoint) {
                r.report(ETCD_ENDPOINTS, format!("{endpoint:?} is listed twice"));
            }
        }
    }
    let section = EtcdSection {
        endpoints,
        prefix: r.string(ETCD_PREFIX, "a string such as \"/hostmesh\"", etcd_prefix),
        lease_ttl: r.string(ETCD_LEASE_TTL, DURATION, lease_ttl),
        ca_file: r.optional_path(ETCD_CA_FILE),
        cert_file: r.optional_path(ETCD_CERT_FILE),
        key_file: r.optional_path(ETCD_KEY_FILE),
        username: r.optional(ETCD_USERNAME, "a string", |s| Ok(s.to_owned())),
        password_file: r.optional_path(ETCD_PASSWORD_FILE),
    };
    // Half a client identity or half a login would fail only at connect time, far from the file.
    both(
        r,
        (ETCD_CERT_FILE, section.cert_file.is_some()),
        (ETCD_KEY_FILE, section.key_file.is_some()),
    );
    both(
        r,
        (ETCD_USERNAME, section.username.is_some()),
        (ETCD_PASSWORD_FILE, section.password_file.is_some()),
    );
    section
}

/// Reports the key that is set when its partner is not.
fn both(r: &mut Reader, (a, has_a): (&Key, bool), (b, has_b): (&Key, bool)) {
    if !r.ok(&[a, b]) {
        return;
    }
    let (a_name, b_name) = (a.name, b.name);
    match (has_a, has_b) {
        (true, false) => r.report(
            a,
            format!("is set but {b_name} is not; set both or neither"),
        ),
        (false, true) => r.report(
            b,
            format!("is set but {a_name} is not; set both or neither"),
        ),
        _ => {}
    }
}

fn etcd_prefix(s: &str) -> Result<String, String> {
    if !s.starts_with('/') {
        return Err(format!("{s:?} must start with \"/\""));
    }
    if s.ends_with('/') {
        return Err(format!(
            "{s:?} must not end with \"/\" (and cannot be \"/\" alone)"
        ));
    }
    if s.contains("//") {
        return Err(format!("{s:?} must not contain \"//\""));
    }
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "{s:?} must not contain spaces or control characters"
        ));
    }
    Ok(s.to_owned())
}

fn lease_ttl(s: &str) -> Result<Duration, String> {
    let d = duration::parse(s)?;
    if d < Duration::from_secs(2) {
        return Err("must be at least 2s: etcd grants no lease shorter than that".to_owned());
    }
    if d > Duration::from_secs(3600) {
        return Err(
            "must be at most 1h: a longer lease keeps a dead host listed too long".to_owned(),
        );
    }
    if d.subsec_nanos() != 0 {
        return Err("must be whole seconds: etcd leases have a TTL in seconds".to_owned());
    }
    Ok(d)
}

fn dns_ttl(s: &str) -> Result<Duration, String> {
    let d = duration::parse(s)?;
    if d.subsec_nanos() != 0 {
        return Err("must be whole seconds: DNS TTLs are in seconds".to_owned());
    }
    if d > Duration::from_secs(86_400) {
        return Err("must be at most 1day".to_owned());
    }
    Ok(d)
}

fn tls(r: &mut Reader) -> TlsSection {
    let mode = r.choice(
        TLS_MODE,
        &[("mtls", TlsMode::Mtls), ("disabled", TlsMode::Disabled)],
    );
    // Only the paths are checked here: the files are read in mTLS mode by the TLS code
    // (`tls::TlsStore::for_config`), at start and by check-config.
    TlsSection {
        mode,
        ca_file: r.path(TLS_CA_FILE),
        cert_file: r.path(TLS_CERT_FILE),
        key_file: r.path(TLS_KEY_FILE),
        trust_domain: r.string(
            TLS_TRUST_DOMAIN,
            "a string such as \"hostmesh.local\"",
            |s| names::owned(s, names::trust_domain),
        ),
    }
}

/// A level, or `tracing_subscriber` filter directives when it holds an '='. A bare word other
/// than a level would parse as a target name and silently log nothing, so it is refused.
fn log_level(s: &str) -> Result<String, String> {
    const LEVELS: &[&str] = &["trace", "debug", "info", "warn", "error", "off"];
    let level = s.trim();
    if LEVELS.contains(&level.to_ascii_lowercase().as_str()) {
        return Ok(level.to_owned());
    }
    if level.contains('=') {
        return tracing_subscriber::EnvFilter::builder()
            .parse(level)
            .map(|_| level.to_owned())
            .map_err(|e| format!("{level:?} is not a valid filter ({e})"));
    }
    Err(format!(
        "{s:?} is not a level (trace, debug, info, warn, error, off) or filter such as \"info,hostmesh=debug\""
    ))
}

fn otlp_endpoint(s: &str) -> Result<String, String> {
    // OTLP over HTTP, to a collector next to the agent (its port 4318): TLS to the collector is
    // not supported, and a gRPC port would take the JSON requests for garbage.
    if s.starts_with("https://") {
        Err(format!(
            "{s:?}: https is not supported for trace export; point it at a local collector's OTLP/HTTP port (http://127.0.0.1:4318)"
        ))
    } else if s.starts_with("http://") {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "{s:?} must be an http:// URL (an OTLP/HTTP collector), or \"\" for no export"
        ))
    }
}

/// Listeners that would fail to bind at start: two on one port, or one inside the VIP range
/// (whose addresses the agent hands to services).
fn check_listeners(r: &mut Reader, config: &AgentConfig) {
    let listeners = [
        (DNS_LISTEN, config.dns.listen),
        (PROXY_OUTBOUND_LISTEN, config.proxy.outbound_listen),
        (PROXY_INBOUND_LISTEN, config.proxy.inbound_listen),
        (ADMIN_LISTEN, config.admin.listen),
    ];
    for (i, &(key, address)) in listeners.iter().enumerate() {
        for &(earlier, earlier_address) in &listeners[..i] {
            if r.ok(&[key, earlier]) && net::clash(address, earlier_address) {
                let earlier = earlier.name;
                r.report(
                    key,
                    format!("{address} takes the same port as {earlier} ({earlier_address})"),
                );
            }
        }
        let range = config.dns.vip_range;
        let in_range = match address.ip() {
            IpAddr::V4(ip) => range.contains(&ip),
            IpAddr::V6(_) => false,
        };
        if in_range && r.ok(&[key, DNS_VIP_RANGE]) {
            r.report(
                key,
                format!(
                    "{address} lies inside dns.vip_range {range}, whose addresses go to services"
                ),
            );
        }
    }
}
