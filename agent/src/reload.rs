//! SIGHUP (docs/reference/lifecycle.md): re-read the agent config and `services_dir`, all or
//! nothing. A bad file is rejected with every problem logged and the old state kept; either way
//! the attempt is counted in `hostmesh_config_reloads_total{result}`.
//!
//! What a reload applies at once: the service definitions (registrar and the inbound side) and
//! the TLS files. Other settings (listen addresses, etcd, timeouts) are read at start; a changed
//! one is named in a warning so the operator knows a restart is needed, and nothing that is
//! listening is closed.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::mpsc;

use hostmesh_config::spec::InstanceSpec;

use crate::metrics::Metrics;
use hostmesh_config::{self as config, AgentConfig};
use hostmesh_proxy::local::LocalInstances;
use hostmesh_tls::TlsStore;

#[derive(Debug)]
pub struct Reloader {
    pub config_path: PathBuf,
    /// The config the agent runs with, to tell what changed.
    pub running: AgentConfig,
    /// To the registrar: the new definitions to register.
    pub registrar: mpsc::Sender<Vec<InstanceSpec>>,
    pub local: Arc<LocalInstances>,
    pub metrics: Arc<Metrics>,
    /// The TLS files (mTLS): re-read on every reload, on their own (material that fails its
    /// checks is logged and the old kept, whatever happens to the config).
    pub tls: Option<Arc<TlsStore>>,
}

impl Reloader {
    /// One reload; true when it was applied.
    pub async fn reload(&self) -> bool {
        if let Some(store) = &self.tls {
            store.reload("SIGHUP");
        }
        let (config, specs) = match config::load_all(&self.config_path, config::process_env()) {
            Ok(loaded) => loaded,
            Err(problems) => {
                for p in &problems.0 {
                    tracing::error!("reload rejected: {p}");
                }
                tracing::error!("reload rejected: keeping the running configuration");
                self.metrics.config_reload("rejected");
                return false;
            }
        };
        for section in needs_restart(&self.running, &config) {
            tracing::warn!("[{section}] changed; it takes effect when the agent restarts");
        }
        tracing::info!(instances = specs.len(), "reloaded service definitions");
        self.local.replace(&specs);
        let _ = self.registrar.send(specs).await;
        self.metrics.config_reload("ok");
        true
    }
}

/// The sections whose changes a reload does not apply.
fn needs_restart(running: &AgentConfig, new: &AgentConfig) -> Vec<&'static str> {
    let mut changed = Vec::new();
    // `services_dir` is re-read on reload; any other [agent] key needs a restart.
    let mut agent = new.agent.clone();
    agent.services_dir.clone_from(&running.agent.services_dir);
    if agent != running.agent {
        changed.push("agent");
    }
    let sections = [
        ("etcd", running.etcd != new.etcd),
        ("dns", running.dns != new.dns),
        ("proxy", running.proxy != new.proxy),
        ("tls", running.tls.mode != new.tls.mode),
        ("policy", running.policy != new.policy),
        ("admin", running.admin != new.admin),
        ("log", running.log != new.log),
        ("tracing", running.tracing != new.tracing),
    ];
    changed.extend(sections.iter().filter(|(_, c)| *c).map(|(s, _)| *s));
    changed
}
