//! SIGHUP (docs/reference/lifecycle.md): re-read the agent config and `services_dir`, all or
//! nothing. A bad file is rejected with every problem logged and the old state kept; either way
//! the attempt is counted in `hostmesh_config_reloads_total{result}`.
//!
//! What a reload applies at once: the service definitions (registrar and the inbound side),
//! lockdown (`proxy.lockdown` and the ports it locks: one nft transaction, applied first, so
//! that a reload whose lockdown cannot be applied is rejected whole and the old rules stay) and
//! the TLS files. Other keys (listen addresses, etcd, timeouts) are read at start; each changed
//! one is named in a warning so the operator knows a restart is needed, and nothing that is
//! listening is closed. Which keys are which is declared with each key (`hostmesh_config::key`).

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::mpsc;

use hostmesh_config::spec::InstanceSpec;

use crate::metrics::Metrics;
use hostmesh_capture::lockdown::Lockdown;
use hostmesh_config::key::Reload;
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
    pub lockdown: Arc<Lockdown>,
    /// Reopened on every SIGHUP (log rotation).
    pub access_log: hostmesh_proxy::access_log::AccessLog,
}

impl Reloader {
    /// One reload; true when it was applied.
    pub async fn reload(&self) -> bool {
        if let Some(store) = &self.tls {
            store.reload("SIGHUP");
        }
        self.access_log.reopen();
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
        if let Err(e) = self.lockdown.set(&specs, config.proxy.lockdown).await {
            tracing::error!("reload rejected: {e}");
            tracing::error!(
                "reload rejected: keeping the running configuration and the lockdown rules in place"
            );
            self.metrics.config_reload("rejected");
            return false;
        }
        for key in needs_restart(&self.running, &config) {
            tracing::warn!("{key} changed; it takes effect when the agent restarts");
        }
        tracing::info!(instances = specs.len(), "reloaded service definitions");
        self.local.replace(&specs);
        let _ = self.registrar.send(specs).await;
        self.metrics.config_reload("ok");
        true
    }
}

/// The keys whose changes a reload does not apply, as each key declares.
fn needs_restart(running: &AgentConfig, new: &AgentConfig) -> Vec<&'static str> {
    running
        .changed_keys(new)
        .into_iter()
        .filter(|key| key.reload == Reload::Restart)
        .map(|key| key.name)
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::path::Path;

    use super::*;

    fn parse(text: &str) -> AgentConfig {
        let text = format!("[agent]\nhost = \"web-01\"\n{text}");
        AgentConfig::parse(&text, Path::new("agent.toml"), Vec::new()).unwrap()
    }

    /// The services directory is applied and not warned about; a new TLS file path (the files
    /// themselves are re-read, their paths are not) and a timeout are named one by one.
    #[test]
    fn a_reload_names_each_key_it_does_not_apply() {
        let running = parse("[tls]\nmode = \"disabled\"\n");
        let new = parse(
            "services_dir = \"/srv/services\"\n[tls]\nmode = \"disabled\"\ncert_file = \"/x.pem\"\n\
             [proxy]\nconnect_timeout = \"3s\"\n",
        );
        assert_eq!(
            needs_restart(&running, &new),
            ["proxy.connect_timeout", "tls.cert_file"]
        );
        assert!(needs_restart(&running, &running.clone()).is_empty());
    }
}
