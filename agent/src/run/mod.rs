//! `hostmesh agent`: builds every component from a validated config, runs them, and shuts down
//! in order on a signal: deregister first, then drain, then stop.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use hostmesh_config::spec::InstanceSpec;
use hostmesh_registrar::catalog::{Catalog, CatalogConfig};
use hostmesh_registrar::keys::Layout;
use hostmesh_registrar::register::Registrar;

use crate::admin::{self, AdminState};
use crate::metrics::Metrics;
use crate::reload::Reloader;
use crate::signals::{Signal, Signals};
use hostmesh_capture::lockdown::{Lockdown, TABLE_CHECK_INTERVAL};
use hostmesh_capture::{Capture, Handoff};
use hostmesh_config::AgentConfig;
use hostmesh_proxy::access_table::Policies;
use hostmesh_proxy::local::LocalInstances;
use hostmesh_proxy::trace::Tracer;
use hostmesh_tls::TlsStore;

mod advertise;
mod data_path;
mod etcd;
mod listeners;

use advertise::pick_advertise_address;
use data_path::{Shared, data_path};
pub use etcd::etcd_options;
use etcd::{claim_host_name, connect_etcd, registrar_config};
use listeners::Listeners;

/// How long the start-up host-name check waits for etcd before carrying on without it (the
/// check runs again on every registration attempt).
const CLAIM_WAIT: Duration = Duration::from_secs(3);

/// Raises `nofile` to its hard limit and checks the connection caps fit in it; the problem, if
/// any, for `/status` (the agent runs anyway: past the limit, new connections fail and are
/// counted in `hostmesh_descriptors_exhausted_total`).
fn descriptor_budget(max_connections: usize) -> Option<String> {
    match hostmesh_listen::descriptors::raise_limit() {
        Ok(limit) => {
            tracing::info!(
                soft = limit.soft,
                hard = limit.hard,
                "file descriptor limit"
            );
            let problem = hostmesh_listen::descriptors::budget(
                limit,
                max_connections,
                crate::admin::MAX_CONNECTIONS + hostmesh_dns::MAX_TCP_CONNECTIONS,
            );
            if let Some(p) = &problem {
                tracing::warn!("{p}");
            }
            problem
        }
        Err(e) => {
            tracing::warn!("cannot read or raise the file descriptor limit: {e}");
            None
        }
    }
}

/// A failure that stops the agent at start (exit 1, docs/reference/lifecycle.md); each says
/// what to do about it. Once the agent runs, nothing stops it but a signal.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A listener's address is taken or not this host's: free it or change the setting.
    #[error("{what} listen {addr}: {source}")]
    Listen {
        what: &'static str,
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot install the signal handlers: {0}")]
    Signals(std::io::Error),
    /// nftables or the VIP listeners could not be set up: the message names which.
    #[error("capture: {0}")]
    Capture(#[from] hostmesh_capture::CaptureError),
    /// `proxy.lockdown = true` and the lockdown table could not be installed: running without
    /// it would leave the apps open while the config says they are not.
    #[error(transparent)]
    Lockdown(#[from] hostmesh_capture::lockdown::LockdownError),
    /// The etcd settings or files are unusable (a bad endpoint, an unreadable certificate).
    #[error(transparent)]
    Etcd(#[from] hostmesh_registrar::etcd::ConnectError),
    /// etcd refused `etcd.username`'s credentials: fix the user or its password file.
    #[error(transparent)]
    EtcdLogin(hostmesh_registrar::etcd::AuthError),
    /// Another live agent holds `agent.host`: give this host another name, or stop the other.
    #[error(transparent)]
    HostNameTaken(hostmesh_registrar::register::ClaimError),
    #[error("cannot start the data path threads: {0}")]
    Threads(std::io::Error),
    /// `access_log.path` cannot be opened for appending: fix the path or its permissions.
    #[error("access_log.path {path}: {source}")]
    AccessLog {
        path: String,
        source: std::io::Error,
    },
}

/// The access log `[access_log]` asks for, its writer started.
fn access_log(
    config: &AgentConfig,
    metrics: &Metrics,
) -> Result<hostmesh_proxy::access_log::AccessLog, RunError> {
    use hostmesh_proxy::access_log::{AccessLog, Format, Settings};
    let c = &config.access_log;
    if !c.enabled {
        return Ok(AccessLog::off());
    }
    let settings = Settings {
        format: match c.format {
            hostmesh_config::AccessLogFormat::Json => Format::Json,
            hostmesh_config::AccessLogFormat::Haproxy => Format::Haproxy,
        },
        path: c.path.clone(),
        journal: crate::telemetry::under_journald(),
    };
    AccessLog::start(&settings, metrics.proxy.access_log_dropped.clone()).map_err(|source| {
        RunError::AccessLog {
            path: c.path.as_ref().map_or_else(
                || "(the journal or stderr)".to_owned(),
                |p| p.display().to_string(),
            ),
            source,
        }
    })
}

/// Runs the agent until SIGTERM/SIGINT. `config_path` is re-read on SIGHUP. `tls` is the
/// checked TLS material when `tls.mode = "mtls"` (re-read on change and on SIGHUP).
pub async fn run(
    config_path: PathBuf,
    config: AgentConfig,
    specs: Vec<InstanceSpec>,
    tls: Option<Arc<TlsStore>>,
) -> Result<(), RunError> {
    let cancel = CancellationToken::new();
    let mut signals = Signals::install().map_err(RunError::Signals)?;
    let metrics = Arc::new(Metrics::new());
    let descriptors = descriptor_budget(config.proxy.max_connections);
    let layout = Layout::new(&config.etcd.prefix);
    let advertise = config
        .agent
        .advertise_address
        .unwrap_or_else(|| pick_advertise_address(&config.etcd.endpoints));

    let (catalog, watcher) = Catalog::open(
        CatalogConfig::new(
            layout.clone(),
            config.dns.vip_range,
            config.agent.data_dir.clone(),
        ),
        metrics.registry_side.clone(),
        cancel.clone(),
    );

    let client = connect_etcd(&config, &cancel).await?;

    // Before anything is registered: a record says `lockdown: true` only once it is so.
    let lockdown = Lockdown::new(metrics.lockdown.clone());
    if config.proxy.lockdown {
        lockdown.set(&specs, true).await?;
    } else {
        lockdown.remove_leftover().await;
    }
    tokio::spawn(lockdown.clone().keep(TABLE_CHECK_INTERVAL, cancel.clone()));

    let local = Arc::new(LocalInstances::new(&specs));
    let mut registrar = Registrar::new(
        client.clone(),
        registrar_config(&config, advertise, layout),
        specs,
        metrics.registry_side.clone(),
    );
    let listeners = Listeners::bind(&config, &metrics).await?;
    if let Some(store) = &tls {
        metrics.tls.follow(store.clone());
        tokio::spawn(store.clone().watch(cancel.clone()));
    }
    let policies =
        Arc::new(Policies::new(config.policy.default).with_metrics(metrics.proxy.clone()));
    let draining = CancellationToken::new();
    let access_log = access_log(&config, &metrics)?;
    let shared = Shared {
        local: local.clone(),
        policies: policies.clone(),
        draining: draining.clone(),
        tls: tls.clone(),
        tracer: Tracer::start(&config.tracing, &config.agent.host, cancel.clone()),
        access_log: access_log.clone(),
    };
    let (outbound, inbound) = data_path(&config, advertise, shared, &metrics)?;
    let outbound_limit = Arc::new(Semaphore::new(config.proxy.max_connections));
    let inbound_limit = Arc::new(Semaphore::new(config.proxy.max_connections));
    let handler_ctx = outbound.clone();
    let handoff = Handoff::new(
        Arc::new(move |stream, dst, permit| handler_ctx.accept(stream, dst, permit)),
        outbound_limit,
        metrics.capture.clone(),
    );
    let capture = Capture::start(
        config.proxy.capture,
        config.dns.vip_range,
        config.proxy.outbound_listen,
        catalog.snapshots(),
        handoff,
        &cancel,
    )
    .await?;

    let admin_state = Arc::new(AdminState {
        host: config.agent.host.clone(),
        domain: config.dns.domain.clone(),
        etcd_endpoints: config.etcd.endpoints.clone(),
        catalog: catalog.clone(),
        registrar: registrar.status(),
        maintenance: registrar.maintenance(),
        local: local.clone(),
        metrics: metrics.clone(),
        capture: capture.status(),
        lockdown: lockdown.clone(),
        stats: outbound.clone(),
        policies: policies.clone(),
        listeners_up: Default::default(),
        descriptors,
        traffic: Default::default(),
    });

    let admin_task = tokio::spawn(admin::serve(
        listeners.admin,
        admin_state.clone(),
        cancel.clone(),
    ));
    if let Err(e) = claim_host_name(&mut registrar).await {
        cancel.cancel();
        return Err(e);
    }

    let registrar_cancel = CancellationToken::new();
    let (reload_tx, reload_rx) = mpsc::channel(1);
    let registrar_task = tokio::spawn(registrar.run(registrar_cancel.clone(), reload_rx));
    tokio::spawn(watcher.run(client, cancel.clone()));
    tokio::spawn(outbound.clone().follow(catalog.snapshots(), cancel.clone()));
    tokio::spawn(policies.follow(catalog.snapshots(), cancel.clone()));
    tokio::spawn(listeners.dns.run(catalog.snapshots(), cancel.clone()));
    tokio::spawn(inbound.serve(listeners.inbound, inbound_limit, cancel.clone()));
    admin_state.listeners_up.store(true, Ordering::Release);
    notify_ready_once_loaded(catalog.snapshots());
    crate::notify::spawn_watchdog(cancel.clone());
    tracing::info!(
        host = config.agent.host,
        advertise = %advertise,
        admin = %config.admin.listen,
        "agent started"
    );

    let reloader = Reloader {
        config_path,
        running: config.clone(),
        registrar: reload_tx,
        local: local.clone(),
        metrics: metrics.clone(),
        tls: tls.clone(),
        lockdown,
        access_log: access_log.clone(),
    };
    while signals.next().await == Signal::Reload {
        crate::notify::reloading();
        reloader.reload().await;
        crate::notify::ready();
    }

    crate::notify::stopping();
    tracing::info!("stopping: deregistering first");
    registrar_cancel.cancel();
    // The registrar bounds its own wait for etcd; this only guards against a bug there.
    let _ = tokio::time::timeout(Duration::from_secs(3), registrar_task).await;
    // Peers stop routing here once they see the deregistration; until then (and for whatever
    // is in flight) the agent keeps serving, with every connection told to wind down.
    draining.cancel();
    if !config.agent.drain.is_zero() {
        tracing::info!(drain = ?config.agent.drain, "draining");
        tokio::select! {
            () = tokio::time::sleep(config.agent.drain) => {}
            Signal::Stop = signals.next_stop() => tracing::info!("second stop signal: not waiting for the drain"),
        }
    }
    cancel.cancel();
    // The nftables table goes with the agent: apps must not be redirected to a closed port.
    // The lockdown table stays (fail closed; docs/lockdown.md).
    if let Err(e) = capture.shutdown().await {
        tracing::warn!("capture shutdown: {e}");
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), admin_task).await;
    // The writer's last batch: the requests served while draining.
    tokio::task::block_in_place(|| access_log.flush(Duration::from_secs(1)));
    tracing::info!("stopped");
    Ok(())
}

/// Tells systemd the agent is ready when `/ready` would say so: listeners are up (the caller
/// made sure) and a catalog is loaded, from etcd or from `data_dir`.
fn notify_ready_once_loaded(mut snapshots: hostmesh_registrar::catalog::Snapshots) {
    tokio::spawn(async move {
        if snapshots.wait_for(Option::is_some).await.is_ok() {
            tracing::info!("ready");
            crate::notify::ready();
        }
    });
}
