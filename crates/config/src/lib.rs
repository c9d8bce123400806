//! What operators write: the agent config (`agent.toml`) and service definitions
//! (`services.d/*.toml`): loading, `HOSTMESH_<SECTION>__<KEY>` overrides, and validation that
//! reports every problem at once with its file and key. Pure: files and the environment in,
//! typed values or problems out; nothing here opens a socket or talks to etcd.
//!
//! - [`key`]: each key declared once (name, kind, default, whether SIGHUP applies it, its rules);
//!   the schema, the environment variables, the defaults, the reload warnings and the key tables
//!   of docs/config.md all come from the declarations in `agent/keys.rs` and `service/keys.rs`.
//! - [`spec`]: what a service instance is once validated, the form the registrar publishes.
//! - [`names`]: the name rules, for local files and for records read from etcd alike.
//!
//! The pipeline: TOML text → `toml::Table` → flat map of known keys (`raw`, unknown keys become
//! problems) → environment overlay (`env`) → typed values key by key (`read`), where a bad value
//! is a problem and its default stands in so that checking goes on.

mod agent;
pub mod duration;
mod env;
pub mod key;
pub mod names;
mod net;
mod problem;
mod raw;
mod read;
mod service;
pub mod spec;
#[cfg(test)]
mod tests;

use std::path::Path;

use crate::spec::InstanceSpec;

pub use agent::{
    AccessLogFormat, AccessLogSection, AdminSection, AgentConfig, AgentSection, CONSUL_DOMAIN,
    Capture, DEFAULT_CONFIG_PATH, DnsSection, EtcdSection, LogFormat, LogSection, PolicyDefault,
    PolicySection, ProxySection, TlsMode, TlsSection, TracingSection, default_vip_range,
};
pub use env::process_env;
pub use net::Upstream;
pub use problem::{ENVIRONMENT, Problem, Problems};
pub use service::{load_service, load_services, parse_service};

/// The config and the services of its `services_dir`, with all problems of both at once: what
/// `check-config --config` and the agent's start use.
pub fn load_all(
    path: &Path,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(AgentConfig, Vec<InstanceSpec>), Problems> {
    let text = agent::read_file(path)?;
    load_all_inner(&text, path, env, &agent::machine_hostname)
}

/// With lockdown on, a target port that is also the port of the agent's inbound or admin
/// listener would lock peers (or a remote Prometheus) out of the agent itself.
fn lockdown_problems(config: &AgentConfig, services: &[InstanceSpec]) -> Vec<Problem> {
    if !config.proxy.lockdown {
        return Vec::new();
    }
    let own = [
        ("proxy.inbound_listen", config.proxy.inbound_listen.port()),
        ("admin.listen", config.admin.listen.port()),
    ];
    services
        .iter()
        .flat_map(|spec| {
            own.iter()
                .filter(move |(_, port)| *port == spec.target.port())
                .map(move |(key, port)| {
                    Problem::new(
                        config.agent.services_dir.join(format!("{}.toml", spec.id)),
                        "target",
                        format!(
                            "port {port} is also the agent's {key}; with proxy.lockdown = true \
                             locking it would shut peers out of the agent"
                        ),
                    )
                })
        })
        .collect()
}

fn load_all_inner(
    text: &str,
    path: &Path,
    env: impl IntoIterator<Item = (String, String)>,
    hostname: &dyn Fn() -> Result<String, String>,
) -> Result<(AgentConfig, Vec<InstanceSpec>), Problems> {
    let parsed = agent::parse_inner(text, path, env, hostname);
    let mut problems = parsed.problems;
    // A services_dir that is bad (or unknown after a syntax error) would only add problems about
    // a directory the operator did not mean.
    let services = if parsed.services_dir_ok {
        match load_services(&parsed.config.agent.services_dir) {
            Ok(mut services) => {
                problems.extend(lockdown_problems(&parsed.config, &services));
                spec::lock_down(&mut services, parsed.config.proxy.lockdown);
                services
            }
            Err(found) => {
                problems.extend(found.0);
                Vec::new()
            }
        }
    } else {
        Vec::new()
    };
    if problems.is_empty() {
        Ok((parsed.config, services))
    } else {
        Err(Problems(problems))
    }
}
