//! The agent config (`agent.toml`): its validated types, defaults, and the check of every key.

mod keys;
mod read;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::Ipv4Net;

use super::env;
use super::key::Key;
use super::net::Upstream;
use super::problem::{ENVIRONMENT, Problem, Problems};
use super::raw::{self, Fields};
use super::read::{Reader, Values};

pub(crate) use keys::SCHEMA;
pub(crate) use read::machine_hostname;

/// Where the agent and the client commands look for the config by default.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/hostmesh/agent.toml";

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
    pub access_log: AccessLogSection,
    /// Every key's value as read, to tell which keys a reload changes.
    pub(crate) values: Values,
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

/// The domain of Consul's names when `dns.consul` is on: fixed, Consul's default `-domain`.
pub const CONSUL_DOMAIN: &str = "consul";

#[derive(Debug, Clone, PartialEq)]
pub struct DnsSection {
    pub listen: SocketAddr,
    pub domain: String,
    pub vip_range: Ipv4Net,
    /// Whole seconds.
    pub ttl: Duration,
    /// Empty: refuse non-mesh names.
    pub upstream: Vec<Upstream>,
    /// Also answer Consul's names (`NAME.service.consul`, `HOST.node.consul`, …).
    pub consul: bool,
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
    /// Whether the target ports of this host's instances refuse connections from other hosts
    /// (except each service's `allow_direct`), so that the mesh is the only way in.
    pub lockdown: bool,
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

/// `[access_log]`: a line per request or TCP connection.
#[derive(Debug, Clone, PartialEq)]
pub struct AccessLogSection {
    pub enabled: bool,
    pub format: AccessLogFormat,
    /// `None`: the journal under systemd, else stderr.
    pub path: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessLogFormat {
    Json,
    /// HAProxy's HTTP and TCP log formats.
    Haproxy,
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

    /// The keys whose value in `new` differs from this config's, in file order.
    pub fn changed_keys(&self, new: &AgentConfig) -> Vec<&'static Key> {
        let changed: Vec<&str> = self.values.changed(&new.values).collect();
        SCHEMA
            .iter()
            .copied()
            .filter(|key| changed.contains(&key.name))
            .collect()
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
    let mut config = read::read(&mut reader, hostname);
    config.values = std::mem::take(&mut reader.values);
    let services_dir_ok = syntax_ok && reader.ok(&[keys::AGENT_SERVICES_DIR]);
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

/// `dns.vip_range` when unset (127.77.0.0/16, on loopback so a VIP can never leave the host), as
/// its key declares it.
pub fn default_vip_range() -> Ipv4Net {
    keys::DNS_VIP_RANGE
        .written_default()
        .as_ref()
        .and_then(|value| value.as_str())
        .and_then(|text| super::net::vip_range(text).ok())
        .expect("dns.vip_range's declared default is a valid range (every_written_default_passes_its_rule)")
}
