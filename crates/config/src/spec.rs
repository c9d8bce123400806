//! What this host runs: validated local instance definitions, as the agent's config loader
//! produces them from `services.d/*.toml`. The registrar publishes these and checks their health.

use std::net::SocketAddr;
use std::time::Duration;

use ipnet::IpNet;

use serde::{Deserialize, Serialize};

/// The wire protocol of a service, as clients speak it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Http,
    Grpc,
    Tcp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Grpc => "grpc",
            Protocol::Tcp => "tcp",
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The weights an instance may have, in a service file or a record from etcd.
pub const WEIGHT: std::ops::RangeInclusive<u32> = 1..=10_000;

/// One instance of a service on this host: one file in `services_dir`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceSpec {
    /// The service name, `[a-z0-9-]{1,63}`.
    pub service: String,
    /// The instance id: the definition's file name without `.toml`.
    pub id: String,
    /// The port clients use (`orders.mesh:8080`).
    pub port: u16,
    /// Where this host's app listens. Never published: peers resolve instances from their own
    /// definitions, so an address on the wire can never turn an agent into an open proxy.
    pub target: SocketAddr,
    pub protocol: Protocol,
    pub tags: Vec<String>,
    pub weight: u32,
    pub check: Option<CheckSpec>,
    /// Networks that may connect to `target`'s port directly while lockdown is on.
    pub allow_direct: Vec<IpNet>,
    /// Whether this agent locks `target`'s port down (`proxy.lockdown`). Never read from the
    /// service file: the agent sets it ([`lock_down`]) once the agent config is known, and the
    /// registrar publishes it in the instance record.
    pub lockdown: bool,
}

/// Marks every spec as locked down or not, as `proxy.lockdown` says. Every local instance is
/// locked when lockdown is on: its port is locked on every address of the host, whatever
/// address `target` names, since an app told to listen on 127.0.0.1 often binds 0.0.0.0.
pub fn lock_down(specs: &mut [InstanceSpec], on: bool) {
    for spec in specs {
        spec.lockdown = on;
    }
}

/// A local health check with its rise/fall thresholds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckSpec {
    pub kind: CheckKind,
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive failures that turn a passing instance critical.
    pub unhealthy_after: u32,
    /// Consecutive successes that turn a critical instance passing.
    pub healthy_after: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckKind {
    /// `GET path` against the target; 2xx passes, redirects are not followed (3xx fails).
    Http { path: String },
    /// A TCP connect to the target.
    Tcp,
    /// Run a program; exit status 0 passes.
    Exec { argv: Vec<String> },
}
