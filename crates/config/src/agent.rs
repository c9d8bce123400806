//! The agent config (`agent.toml`): its validated types, defaults, and the check of every key.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::Ipv4Net;

use super::duration;
use super::env;
use super::names;
use super::net::{self, Upstream};
use super::problem::{ENVIRONMENT, Problem, Problems};
use super::raw::{self, Fields, Key, Kind};
use super::read::{DURATION, Reader};

/// Where the agent and the client commands look for the config by default.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/hostmesh/agent.toml";

/// Every key of the agent config; the environment overlay derives its variable names from these.
pub(crate) const SCHEMA: &[Key] = &[
    ("agent.host", Kind::Str),
    ("agent.advertise_address", Kind::Str),
    ("agent.zone", Kind::Str),
    ("agent.services_dir", Kind::Str),
    ("agent.data_dir", Kind::Str),
    ("agent.drain", Kind::Str),
    ("etcd.endpoints", Kind::StrList),
    ("etcd.prefix", Kind::Str),
    ("etcd.lease_ttl", Kind::Str),
    ("etcd.ca_file", Kind::Str),
    ("etcd.cert_file", Kind::Str),
    ("etcd.key_file", Kind::Str),
    ("etcd.username", Kind::Str),
    ("etcd.password_file", Kind::Str),
    ("dns.listen", Kind::Str),
    ("dns.domain", Kind::Str),
    ("dns.vip_range", Kind::Str),
    ("dns.ttl", Kind::Str),
    ("dns.upstream", Kind::StrList),
    ("proxy.capture", Kind::Str),
    ("proxy.outbound_listen", Kind::Str),
    ("proxy.inbound_listen", Kind::Str),
    ("proxy.connect_timeout", Kind::Str),
    ("proxy.request_timeout", Kind::Str),
    ("proxy.idle_timeout", Kind::Str),
    ("proxy.header_read_timeout", Kind::Str),
    ("proxy.max_connections", Kind::Int),
    ("proxy.max_headers", Kind::Int),
    ("proxy.max_header_bytes", Kind::Int),
    ("proxy.workers", Kind::Int),
    ("proxy.pin_workers", Kind::Bool),
    ("tls.mode", Kind::Str),
    ("tls.ca_file", Kind::Str),
    ("tls.cert_file", Kind::Str),
    ("tls.key_file", Kind::Str),
    ("tls.trust_domain", Kind::Str),
    ("policy.default", Kind::Str),
    ("admin.listen", Kind::Str),
    ("log.format", Kind::Str),
    ("log.level", Kind::Str),
    ("tracing.otlp_endpoint", Kind::Str),
    ("tracing.sample_ratio", Kind::Float),
];

const DEFAULT_SERVICES_DIR: &str = "/etc/hostmesh/services.d";
/// Per listener; more open connections than a host's descriptors could hold.
const MAX_CONNECTIONS: i64 = 1_000_000;
/// hyper's and h2's own ceilings are of this order; HAProxy's default is 101.
const MAX_HEADERS: i64 = 1_000;
/// nginx's and HAProxy's header buffers are 8–16 KiB by default.
const MAX_HEADER_BYTES: i64 = 1 << 20;

#[derive(Debug, Clone, PartialEq)]
pub struct AgentConfig {
    pub agent: AgentSection,
    pub etcd: EtcdSection,
    pub dns: DnsSection,
    pub proxy: ProxySection,
    pub tls: TlsSection,
    pub policy: PolicySection,
    pub admin: AdminSection,
    pub log: LogSection,
    pub tracing: TracingSection,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AgentSection {
    /// This host's name in etcd and in its certificate identity.
    pub host: String,
    /// Where other hosts reach this host's inbound port; `None`: the agent picks one at start.
    pub advertise_address: Option<IpAddr>,
    pub zone: Option<String>,
    pub services_dir: PathBuf,
    /// Where the last-known catalog snapshot is kept.
    pub data_dir: PathBuf,
    /// How long SIGTERM keeps serving after deregistering.
    pub drain: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EtcdSection {
    /// `http(s)://HOST:PORT`, at least one.
    pub endpoints: Vec<String>,
    /// Starts with '/', no trailing '/'.
    pub prefix: String,
    /// Whole seconds, 2s..=1h.
    pub lease_ttl: Duration,
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DnsSection {
    pub listen: SocketAddr,
    pub domain: String,
    pub vip_range: Ipv4Net,
    /// Whole seconds.
    pub ttl: Duration,
    /// Empty: refuse non-mesh names.
    pub upstream: Vec<Upstream>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProxySection {
    pub capture: Capture,
    pub outbound_listen: SocketAddr,
    pub inbound_listen: SocketAddr,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub idle_timeout: Duration,
    /// How long a client may take to send a whole HTTP/1 request head (slowloris); an app
    /// connection idle between requests is closed after as long.
    pub header_read_timeout: Duration,
    pub max_connections: usize,
    pub max_headers: usize,
    pub max_header_bytes: usize,
    /// Threads serving proxied connections; 0: one per CPU the agent may run on.
    pub workers: usize,
    /// Whether each of those threads stays on one CPU (only when there is one per CPU).
    pub pin_workers: bool,
}

/// How connections to VIPs reach the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capture {
    /// An nftables redirect of the VIP range to `outbound_listen`.
    Nft,
    /// One listener per VIP and port (no root needed).
    Listen,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TlsSection {
    pub mode: TlsMode,
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub trust_domain: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    Mtls,
    /// Plain TCP between hosts: tests and dev only.
    Disabled,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PolicySection {
    /// For services with no policy.
    pub default: PolicyDefault,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyDefault {
    Allow,
    Deny,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AdminSection {
    pub listen: SocketAddr,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LogSection {
    pub format: LogFormat,
    /// A level (`info`) or filter directives (`info,hostmesh=debug`).
    pub level: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TracingSection {
    /// `None`: no export (`traceparent` is propagated either way).
    pub otlp_endpoint: Option<String>,
    pub sample_ratio: f64,
}

impl AgentConfig {
    /// Parses config text; `file` is used in problems only. `env` are (name, value) pairs,
    /// normally [`super::process_env`] or `std::env::vars()`.
    pub fn parse(
        text: &str,
        file: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<AgentConfig, Problems> {
        parse_inner(text, file, env, &machine_hostname).into_result()
    }

    /// Reads and parses a file (a read error is one problem with an empty key).
    pub fn load(
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<AgentConfig, Problems> {
        let text = read_file(path)?;
        AgentConfig::parse(&text, path, env)
    }
}

/// Reads a config or service file; failing that is a whole-file problem.
pub(crate) fn read_file(path: &Path) -> Result<String, Problem> {
    std::fs::read_to_string(path)
        .map_err(|e| Problem::whole_file(path, format!("cannot read: {e}")))
}

/// The outcome of parsing, including what `load_all` needs to go on to the services.
pub(crate) struct Parsed {
    /// Valid only when `problems` is empty; bad keys hold their defaults.
    pub config: AgentConfig,
    pub problems: Vec<Problem>,
    /// Whether `config.agent.services_dir` is what the operator meant, so its services are worth
    /// checking too.
    pub services_dir_ok: bool,
}

impl Parsed {
    pub fn into_result(self) -> Result<AgentConfig, Problems> {
        if self.problems.is_empty() {
            Ok(self.config)
        } else {
            Err(Problems(self.problems))
        }
    }
}

/// Parses with a given source of the machine's hostname, so tests do not depend on the machine's.
pub(crate) fn parse_inner(
    text: &str,
    file: &Path,
    env: impl IntoIterator<Item = (String, String)>,
    hostname: &dyn Fn() -> Result<String, String>,
) -> Parsed {
    let (mut fields, mut problems, syntax_ok) = match raw::parse_toml(text, file) {
        Ok(table) => {
            let (fields, problems) = raw::flatten(&table, file, SCHEMA);
            (fields, problems, true)
        }
        Err(problem) => (Fields::new(), vec![problem], false),
    };
    problems.extend(env::overlay(&mut fields, SCHEMA, env));
    let found_before = problems.len();
    let mut reader = Reader::new(file, fields, problems);
    let config = read(&mut reader, hostname);
    let services_dir_ok = syntax_ok && reader.ok(&["agent.services_dir"]);
    let mut problems = reader.problems;
    if !syntax_ok {
        // The file's values are unknown, so checking defaults in their place would report what
        // may well be set right (tls.mode above all); keep what the environment alone got wrong.
        let mut i = 0;
        problems.retain(|p| {
            i += 1;
            i <= found_before || p.file == Path::new(ENVIRONMENT)
        });
    }
    Parsed {
        config,
        problems,
        services_dir_ok,
    }
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn addr(ip: [u8; 4], port: u16) -> SocketAddr {
    SocketAddr::from((ip, port))
}

fn read(r: &mut Reader, hostname: &dyn Fn() -> Result<String, String>) -> AgentConfig {
    let agent = AgentSection {
        host: host(r, hostname),
        advertise_address: r.optional(
            "agent.advertise_address",
            "an IP address such as \"10.0.0.5\"",
            net::advertise_address,
        ),
        zone: r.optional("agent.zone", "a string such as \"eu-1a\"", |s| {
            names::owned(s, names::zone)
        }),
        services_dir: r.path("agent.services_dir", DEFAULT_SERVICES_DIR),
        data_dir: data_dir(r),
        drain: r.duration_or_zero("agent.drain", secs(5)),
    };
    let etcd = etcd(r);
    let dns = DnsSection {
        listen: r.string(
            "dns.listen",
            addr([127, 0, 0, 1], 53),
            net::LISTEN,
            net::listen,
        ),
        domain: r.string(
            "dns.domain",
            "mesh".to_owned(),
            "a DNS name such as \"mesh\"",
            |s| names::owned(s, names::dns_name),
        ),
        vip_range: r.string(
            "dns.vip_range",
            default_vip_range(),
            "an IPv4 network such as \"127.77.0.0/16\"",
            net::vip_range,
        ),
        ttl: r.string("dns.ttl", secs(5), DURATION, dns_ttl),
        upstream: r.list(
            "dns.upstream",
            vec![Upstream::System],
            "\"system\" or an address",
            net::upstream,
        ),
    };
    let proxy = ProxySection {
        capture: r.choice(
            "proxy.capture",
            Capture::Nft,
            &[("nft", Capture::Nft), ("listen", Capture::Listen)],
        ),
        outbound_listen: r.string(
            "proxy.outbound_listen",
            addr([127, 0, 0, 1], 4140),
            net::LISTEN,
            net::listen,
        ),
        inbound_listen: r.string(
            "proxy.inbound_listen",
            addr([0, 0, 0, 0], 4143),
            net::LISTEN,
            net::listen,
        ),
        connect_timeout: r.duration("proxy.connect_timeout", secs(1)),
        request_timeout: r.duration("proxy.request_timeout", secs(10)),
        idle_timeout: r.duration("proxy.idle_timeout", secs(60)),
        header_read_timeout: r.duration("proxy.header_read_timeout", secs(10)),
        // Upper bounds: each is allocated or counted per connection or request, and beyond them
        // a value only crashes (tokio's semaphore panics above 2^61 permits) or bloats the agent
        // (hyper reserves room for max_headers per request).
        max_connections: r.integer("proxy.max_connections", 10_000, 1..=MAX_CONNECTIONS),
        max_headers: r.integer("proxy.max_headers", 100, 1..=MAX_HEADERS),
        max_header_bytes: r.integer("proxy.max_header_bytes", 65_536, 1..=MAX_HEADER_BYTES),
        workers: r.integer("proxy.workers", 0, 0..=1024),
        pin_workers: r.boolean("proxy.pin_workers", true),
    };
    let tls = tls(r);
    let policy = PolicySection {
        default: r.choice(
            "policy.default",
            PolicyDefault::Allow,
            &[
                ("allow", PolicyDefault::Allow),
                ("deny", PolicyDefault::Deny),
            ],
        ),
    };
    let admin = AdminSection {
        listen: r.string(
            "admin.listen",
            addr([127, 0, 0, 1], 9190),
            net::LISTEN,
            net::listen,
        ),
    };
    let log = LogSection {
        format: r.choice(
            "log.format",
            LogFormat::Text,
            &[("text", LogFormat::Text), ("json", LogFormat::Json)],
        ),
        level: r.string(
            "log.level",
            "info".to_owned(),
            "a string such as \"info\"",
            log_level,
        ),
    };
    let tracing = TracingSection {
        otlp_endpoint: r.optional(
            "tracing.otlp_endpoint",
            "a URL such as \"http://127.0.0.1:4318\"",
            otlp_endpoint,
        ),
        sample_ratio: r.float("tracing.sample_ratio", 0.01, 0.0..=1.0),
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
    };
    check_listeners(r, &config);
    config
}

/// `agent.data_dir`: a directory, or a path where one can be made at start.
fn data_dir(r: &mut Reader) -> PathBuf {
    let dir = r.path("agent.data_dir", "/var/lib/hostmesh");
    if dir.exists() && !dir.is_dir() {
        let message = format!("{} exists and is not a directory", dir.display());
        r.report("agent.data_dir", message);
    }
    dir
}

/// `agent.host`, or the machine's hostname when unset.
fn host(r: &mut Reader, hostname: &dyn Fn() -> Result<String, String>) -> String {
    if r.has("agent.host") {
        return r.string(
            "agent.host",
            String::new(),
            "a string such as \"web-01\"",
            |s| names::owned(s, names::host),
        );
    }
    match hostname() {
        Ok(name) => {
            let name = name.trim().to_lowercase();
            match names::host(&name) {
                Ok(()) => name,
                Err(e) => {
                    let message = format!(
                        "agent.host is not set and the machine's hostname {name:?} cannot be used ({e}); set agent.host"
                    );
                    r.report("agent.host", message);
                    String::new()
                }
            }
        }
        Err(e) => {
            let message = format!(
                "agent.host is not set and the machine's hostname cannot be read ({e}); set agent.host"
            );
            r.report("agent.host", message);
            String::new()
        }
    }
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
        "etcd.endpoints",
        vec!["http://127.0.0.1:2379".to_owned()],
        "a URL such as \"http://127.0.0.1:2379\"",
        net::etcd_endpoint,
    );
    if r.ok(&["etcd.endpoints"]) {
        if endpoints.is_empty() {
            r.report("etcd.endpoints", "must list at least one endpoint");
        }
        for (i, endpoint) in endpoints.iter().enumerate() {
            if endpoints[..i].contains(endpoint) {
                r.report("etcd.endpoints", format!("{endpoint:?} is listed twice"));
            }
        }
    }
    let section = EtcdSection {
        endpoints,
        prefix: r.string(
            "etcd.prefix",
            "/hostmesh".to_owned(),
            "a string such as \"/hostmesh\"",
            etcd_prefix,
        ),
        lease_ttl: r.string("etcd.lease_ttl", secs(10), DURATION, lease_ttl),
        ca_file: r.optional_path("etcd.ca_file"),
        cert_file: r.optional_path("etcd.cert_file"),
        key_file: r.optional_path("etcd.key_file"),
        username: r.optional("etcd.username", "a string", |s| Ok(s.to_owned())),
        password_file: r.optional_path("etcd.password_file"),
    };
    // Half a client identity or half a login would fail only at connect time, far from the file.
    both(
        r,
        "etcd.cert_file",
        section.cert_file.is_some(),
        "etcd.key_file",
        section.key_file.is_some(),
    );
    both(
        r,
        "etcd.username",
        section.username.is_some(),
        "etcd.password_file",
        section.password_file.is_some(),
    );
    section
}

/// Reports the key that is set when its partner is not.
fn both(r: &mut Reader, a: &str, has_a: bool, b: &str, has_b: bool) {
    if !r.ok(&[a, b]) {
        return;
    }
    match (has_a, has_b) {
        (true, false) => r.report(a, format!("is set but {b} is not; set both or neither")),
        (false, true) => r.report(b, format!("is set but {a} is not; set both or neither")),
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
    if d < secs(2) {
        return Err("must be at least 2s: etcd grants no lease shorter than that".to_owned());
    }
    if d > secs(3600) {
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
    if d > secs(86_400) {
        return Err("must be at most 1day".to_owned());
    }
    Ok(d)
}

fn tls(r: &mut Reader) -> TlsSection {
    let mode = r.choice(
        "tls.mode",
        TlsMode::Mtls,
        &[("mtls", TlsMode::Mtls), ("disabled", TlsMode::Disabled)],
    );
    // Only the paths are checked here: the files are read in mTLS mode by the TLS code
    // (`tls::TlsStore::for_config`), at start and by check-config.
    TlsSection {
        mode,
        ca_file: r.path("tls.ca_file", "/etc/hostmesh/tls/ca.pem"),
        cert_file: r.path("tls.cert_file", "/etc/hostmesh/tls/host.pem"),
        key_file: r.path("tls.key_file", "/etc/hostmesh/tls/host.key"),
        trust_domain: r.string(
            "tls.trust_domain",
            "hostmesh.local".to_owned(),
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
        ("dns.listen", config.dns.listen),
        ("proxy.outbound_listen", config.proxy.outbound_listen),
        ("proxy.inbound_listen", config.proxy.inbound_listen),
        ("admin.listen", config.admin.listen),
    ];
    for (i, &(key, address)) in listeners.iter().enumerate() {
        for &(earlier, earlier_address) in &listeners[..i] {
            if r.ok(&[key, earlier]) && net::clash(address, earlier_address) {
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
        if in_range && r.ok(&[key, "dns.vip_range"]) {
            r.report(
                key,
                format!(
                    "{address} lies inside dns.vip_range {range}, whose addresses go to services"
                ),
            );
        }
    }
}

/// `dns.vip_range` when unset: 127.77.0.0/16, on loopback so a VIP can never leave the host.
pub fn default_vip_range() -> Ipv4Net {
    Ipv4Net::new(std::net::Ipv4Addr::new(127, 77, 0, 0), 16).expect("/16 is a valid prefix length")
}
