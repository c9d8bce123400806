//! A simulated agent: the registrar's real code (host-name claim, lease and keep-alive, VIP
//! allocation, registration, anti-entropy, catalog list and watch, snapshots) with its own etcd
//! client, as a few tasks instead of a process. What it leaves out is the data path, DNS and the
//! admin server, which do not talk to etcd, and saving the catalog to disk (a thousand agents
//! share this machine's disk; real ones each write to their own).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hostmesh_config::spec::{InstanceSpec, Protocol};
use hostmesh_registrar::catalog::{Catalog, CatalogConfig, CatalogStatus, Snapshots};
use hostmesh_registrar::etcd::EtcdOptions;
use hostmesh_registrar::keys::Layout;
use hostmesh_registrar::metrics::RegistryMetrics;
use hostmesh_registrar::record::HostInfo;
use hostmesh_registrar::register::{Registrar, RegistrarConfig, RegistrarStatus};
use tempfile::TempDir;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How many services the simulated hosts run between them: host `i` runs one instance of
/// `app-{i % APPS}`, so each app service has instances on many hosts.
pub const APPS: usize = 100;

#[derive(Debug)]
pub struct Sim {
    pub host: String,
    pub snapshots: Snapshots,
    pub metrics: RegistryMetrics,
    pub status: Arc<RegistrarStatus>,
    catalog_status: Arc<CatalogStatus>,
    specs: Vec<InstanceSpec>,
    reload: mpsc::Sender<Vec<InstanceSpec>>,
    /// Ends the registrar (which deregisters first).
    stop_registrar: CancellationToken,
    /// Ends the watch and the endpoint probes.
    stop_rest: CancellationToken,
    registrar: JoinHandle<()>,
    watcher: JoinHandle<()>,
    _dir: TempDir,
}

/// What every simulated agent shares.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub endpoints: Vec<String>,
    pub lease_ttl: Duration,
}

fn spec(service: &str, id: &str) -> InstanceSpec {
    InstanceSpec {
        service: service.to_owned(),
        id: id.to_owned(),
        port: 8080,
        // Never published (peers resolve targets from their own definitions); nothing listens.
        target: SocketAddr::from(([127, 0, 0, 1], 9)),
        protocol: Protocol::Http,
        tags: Vec::new(),
        weight: 100,
        check: None,
        allow_direct: Vec::new(),
        lockdown: false,
    }
}

impl Sim {
    /// Connects, claims the host name `sim-{index}` and starts registering and watching.
    pub async fn start(index: usize, config: &SimConfig, root: &Path) -> Result<Sim, String> {
        let host = format!("sim-{index}");
        let dir = tempfile::Builder::new()
            .prefix(&host)
            .tempdir_in(root)
            .map_err(|e| format!("data dir: {e}"))?;
        let layout = Layout::new("/hostmesh");
        let vip_range = hostmesh_config::default_vip_range();
        let metrics = RegistryMetrics::default();
        let stop_registrar = CancellationToken::new();
        let stop_rest = CancellationToken::new();

        let mut catalog_config =
            CatalogConfig::new(layout.clone(), vip_range, dir.path().to_owned());
        catalog_config.save = false;
        let (catalog, watcher) = Catalog::open(catalog_config, metrics.clone(), stop_rest.clone());

        let (client, _) = EtcdOptions::with_endpoints(config.endpoints.clone())
            .open_with_probes(stop_rest.clone())
            .await
            .map_err(|e| e.to_string())?;
        let specs = vec![spec(&format!("app-{}", index % APPS), &host)];
        let address = Ipv4Addr::from(0x0a00_0000 | u32::try_from(index).unwrap_or(0));
        let mut registrar = Registrar::new(
            client.clone(),
            RegistrarConfig {
                host: host.clone(),
                info: HostInfo {
                    address: IpAddr::V4(address),
                    inbound_port: 4143,
                    zone: None,
                    version: "fleet-bench".into(),
                },
                layout,
                lease_ttl: config.lease_ttl,
                vip_range,
                data_dir: dir.path().to_owned(),
                anti_entropy_interval: Duration::from_secs(30),
            },
            specs.clone(),
            metrics.clone(),
        );
        // As the agent does: a claim etcd cannot answer yet is checked again before registering.
        let _ = tokio::time::timeout(Duration::from_secs(5), registrar.claim()).await;
        let status = registrar.status();
        let (reload, reload_rx) = mpsc::channel(1);
        let registrar = tokio::spawn(registrar.run(stop_registrar.clone(), reload_rx));
        let watcher = tokio::spawn(watcher.run(client, stop_rest.clone()));
        Ok(Sim {
            host,
            snapshots: catalog.snapshots(),
            catalog_status: catalog.status().clone(),
            metrics,
            status,
            specs,
            reload,
            stop_registrar,
            stop_rest,
            registrar,
            watcher,
            _dir: dir,
        })
    }

    /// Registered under a live lease, with a catalog from etcd that has every service of
    /// `names` (the app services the simulated hosts run between them).
    pub fn settled(&self, names: &[String]) -> bool {
        self.snapshots
            .borrow()
            .as_ref()
            .is_some_and(|s| names.iter().all(|n| s.services.contains_key(n)))
            && self.status.report().registered
    }

    /// Why [`Self::settled`] is false: the registration's state and error, and the catalog's.
    pub fn unsettled(&self, names: &[String]) -> String {
        let reg = self.status.report();
        let cat = self.catalog_status.report();
        let missing: Vec<&String> = match self.snapshots.borrow().as_ref() {
            Some(s) => names
                .iter()
                .filter(|n| !s.services.contains_key(*n))
                .collect(),
            None => names.iter().collect(),
        };
        format!(
            "{}: registered {}, lease {:?}, error {:?}, VIP errors {:?}; catalog revision {}, \
             connected {}, stale {}, error {:?}, {} services missing (first {:?})",
            self.host,
            reg.registered,
            reg.lease.map(|l| format!("{l:x}")),
            reg.last_error,
            reg.vip_errors,
            cat.revision,
            cat.connected,
            cat.stale,
            cat.last_error,
            missing.len(),
            missing.first(),
        )
    }

    /// Starts one more instance on this host (a new file and SIGHUP).
    pub async fn add(&mut self, service: &str) {
        self.specs
            .push(spec(service, &format!("{}-{service}", self.host)));
        let _ = self.reload.send(self.specs.clone()).await;
    }

    /// Stops the instance of `service` on this host (its file removed and SIGHUP).
    pub async fn remove(&mut self, service: &str) {
        self.specs.retain(|s| s.service != service);
        let _ = self.reload.send(self.specs.clone()).await;
    }

    /// A clean stop (`systemctl stop`): deregisters, then ends.
    pub async fn stop(self) {
        self.stop_registrar.cancel();
        let _ = self.registrar.await;
        self.stop_rest.cancel();
        let _ = self.watcher.await;
    }

    /// The host dies: nothing is deregistered, its lease runs out.
    pub fn kill(self) {
        self.registrar.abort();
        self.watcher.abort();
        self.stop_rest.cancel();
    }
}

/// The app services hosts `0..n` run between them.
pub fn app_names(n: usize) -> Vec<String> {
    (0..n.min(APPS)).map(|a| format!("app-{a}")).collect()
}
