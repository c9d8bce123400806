//! `hostmesh agent`: builds every component from a validated config, runs them, and shuts down
//! in order on a signal: deregister first, then drain, then stop.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use hostmesh_registrar::catalog::{Catalog, CatalogConfig};
use hostmesh_registrar::etcd::{AuthError, EtcdOptions, SettingNames};
use hostmesh_registrar::keys::Layout;
use hostmesh_registrar::record::HostInfo;
use hostmesh_registrar::register::{ClaimError, Registrar, RegistrarConfig};
use hostmesh_registrar::spec::InstanceSpec;

use crate::admin::{self, AdminState};
use crate::balance::EndpointTable;
use crate::capture::{Capture, Handoff};
use crate::config::AgentConfig;
use crate::dns::DnsServer;
use crate::inbound::Inbound;
use crate::local::LocalInstances;
use crate::metrics::Metrics;
use crate::outbound::{Outbound, Settings};
use crate::policy::Policies;
use crate::pool::Pools;
use crate::reload::Reloader;
use crate::signals::{Signal, Signals};
use crate::tls::{PeerTls, TlsStore};
use crate::trace::Tracer;

/// How long the start-up host-name check waits for etcd before carrying on without it (the
/// check runs again on every registration attempt).
const CLAIM_WAIT: Duration = Duration::from_secs(3);

/// A failure that stops the agent, with the exit code SPEC gives it.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Runtime(String),
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
    let mut signals = Signals::install().map_err(|e| RunError::Runtime(format!("signals: {e}")))?;
    let metrics = Arc::new(Metrics::new());
    let layout = Layout::new(&config.etcd.prefix);
    let advertise = config
        .agent
        .advertise_address
        .unwrap_or_else(|| pick_advertise_address(&config.etcd.endpoints));

    let (catalog, watcher) = Catalog::open(
        CatalogConfig::new(layout.clone(), config.agent.data_dir.clone()),
        metrics.registry_side.clone(),
        cancel.clone(),
    );

    let client = connect_etcd(&config, &cancel).await?;

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
    let policies = Arc::new(Policies::new(config.policy.default));
    let draining = CancellationToken::new();
    let shared = Shared {
        local: local.clone(),
        policies: policies.clone(),
        draining: draining.clone(),
        tls: tls.clone(),
        tracer: Tracer::start(&config.tracing, &config.agent.host, cancel.clone()),
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
    .await
    .map_err(|e| RunError::Runtime(format!("capture: {e}")))?;

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
        stats: outbound.clone(),
        listeners_up: Default::default(),
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
    if let Err(e) = capture.shutdown().await {
        tracing::warn!("capture shutdown: {e}");
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), admin_task).await;
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

/// The agent's own listeners, all bound before anything is announced, so a port conflict stops
/// the start with a clear message instead of a half-working agent.
struct Listeners {
    admin: TcpListener,
    dns: DnsServer,
    inbound: TcpListener,
}

impl Listeners {
    async fn bind(config: &AgentConfig, metrics: &Metrics) -> Result<Listeners, RunError> {
        let bind_error = |what: &str, addr: SocketAddr, e: std::io::Error| {
            RunError::Runtime(format!("{what} listen {addr}: {e}"))
        };
        let admin = TcpListener::bind(config.admin.listen)
            .await
            .map_err(|e| bind_error("admin", config.admin.listen, e))?;
        let dns = DnsServer::bind(&config.dns, metrics.dns.clone())
            .await
            .map_err(|e| bind_error("dns", config.dns.listen, e))?;
        let inbound = TcpListener::bind(config.proxy.inbound_listen)
            .await
            .map_err(|e| bind_error("inbound", config.proxy.inbound_listen, e))?;
        Ok(Listeners {
            admin,
            dns,
            inbound,
        })
    }
}

/// Builds the etcd client and logs in when `etcd.username` is set. Credentials etcd refuses stop
/// the start (naming the settings); an etcd that does not answer within [`CLAIM_WAIT`] does not:
/// the login carries on in the background while the agent serves its saved catalog.
async fn connect_etcd(
    config: &AgentConfig,
    cancel: &CancellationToken,
) -> Result<etcd_client::Client, RunError> {
    let (mut client, login) = etcd_options(config)
        .open()
        .await
        .map_err(|e| RunError::Runtime(e.to_string()))?;
    let Some(login) = login else {
        return Ok(client);
    };
    match tokio::time::timeout(CLAIM_WAIT, login.attempt(&mut client)).await {
        Ok(Ok(())) => {
            tracing::info!(user = login.user(), "authenticated to etcd");
            return Ok(client);
        }
        Ok(Err(e @ AuthError::Refused { .. })) => return Err(RunError::Runtime(e.to_string())),
        Ok(Err(e)) => tracing::warn!("{e}; retrying in the background"),
        Err(_) => tracing::warn!(
            user = login.user(),
            "etcd did not answer the login within {CLAIM_WAIT:?}; retrying in the background"
        ),
    }
    tokio::spawn(login.retry(client.clone(), cancel.clone()));
    Ok(client)
}

/// Refuses to start when another live agent holds this host's name; with etcd unreachable, starts
/// anyway (the registrar checks again before every registration).
async fn claim_host_name(registrar: &mut Registrar) -> Result<(), RunError> {
    match tokio::time::timeout(CLAIM_WAIT, registrar.claim()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e @ ClaimError::Conflict { .. })) => Err(RunError::Runtime(e.to_string())),
        Ok(Err(e)) => {
            tracing::warn!("could not check the host name in etcd yet: {e}");
            Ok(())
        }
        Err(_) => {
            tracing::warn!(
                "etcd did not answer within {CLAIM_WAIT:?}; serving the saved catalog meanwhile"
            );
            Ok(())
        }
    }
}

fn registrar_config(config: &AgentConfig, advertise: IpAddr, layout: Layout) -> RegistrarConfig {
    RegistrarConfig {
        host: config.agent.host.clone(),
        info: HostInfo {
            address: advertise,
            inbound_port: config.proxy.inbound_listen.port(),
            zone: config.agent.zone.clone(),
            version: crate::VERSION.to_owned(),
        },
        layout,
        lease_ttl: config.etcd.lease_ttl,
        vip_range: config.dns.vip_range,
        data_dir: config.agent.data_dir.clone(),
        anti_entropy_interval: Duration::from_secs(30),
    }
}

/// What the outbound and inbound proxies share besides the config and the pools.
struct Shared {
    local: Arc<LocalInstances>,
    policies: Arc<Policies>,
    draining: CancellationToken,
    tls: Option<Arc<TlsStore>>,
    tracer: Tracer,
}

/// The outbound and inbound proxies, sharing the connection pools and this host's instances.
fn data_path(
    config: &AgentConfig,
    advertise: IpAddr,
    shared: Shared,
    metrics: &Metrics,
) -> Result<(Arc<Outbound>, Arc<Inbound>), RunError> {
    let Shared {
        local,
        policies,
        draining,
        tls,
        tracer,
    } = shared;
    let settings = Settings {
        connect_timeout: config.proxy.connect_timeout,
        request_timeout: config.proxy.request_timeout,
        idle_timeout: config.proxy.idle_timeout,
        header_read_timeout: config.proxy.header_read_timeout,
        max_headers: config.proxy.max_headers,
        max_header_bytes: config.proxy.max_header_bytes,
    };
    // The handshake gets the connect timeout again: together they bound a connection's setup.
    let peer_tls = PeerTls::new(tls.clone(), config.proxy.connect_timeout);
    let pools = Pools::new(
        config.proxy.connect_timeout,
        config.proxy.idle_timeout,
        peer_tls,
    );
    let outbound = Arc::new(Outbound {
        self_host: config.agent.host.clone(),
        // The host name and address were validated by the config: always valid header values.
        wire_headers: crate::outbound::WireHeaders::new(&config.agent.host, advertise)
            .ok_or_else(|| RunError::Runtime("agent.host is not a valid header value".into()))?,
        routes: ArcSwap::default(),
        stats: EndpointTable::new(),
        breakers: crate::breaker::BreakerTable::new(),
        budgets: crate::outbound::retry::Budgets::default(),
        local: local.clone(),
        pools: pools.clone(),
        settings: settings.clone(),
        metrics: metrics.proxy.clone(),
        policies: policies.clone(),
        draining: draining.clone(),
        tracer: tracer.clone(),
    });
    let inbound = Arc::new(Inbound {
        tls,
        local,
        pools,
        settings,
        metrics: metrics.proxy.clone(),
        policies,
        draining,
        tracer,
    });
    Ok((outbound, inbound))
}

pub fn etcd_options(config: &AgentConfig) -> EtcdOptions {
    EtcdOptions {
        endpoints: config.etcd.endpoints.clone(),
        ca_file: config.etcd.ca_file.clone(),
        cert_file: config.etcd.cert_file.clone(),
        key_file: config.etcd.key_file.clone(),
        username: config.etcd.username.clone(),
        password_file: config.etcd.password_file.clone(),
        timeout: Duration::from_secs(5),
        names: SettingNames::CONFIG,
    }
}

/// Without `advertise_address`: the source address this host would use to reach etcd, which is
/// the interface peers most likely share. Connecting a UDP socket sends nothing.
fn pick_advertise_address(endpoints: &[String]) -> IpAddr {
    let fallback = IpAddr::from([127, 0, 0, 1]);
    let Some(target) = endpoints.iter().find_map(|e| endpoint_socket(e)) else {
        tracing::warn!(
            "advertise_address not set and no etcd endpoint to derive it from; using {fallback}"
        );
        return fallback;
    };
    let bind: SocketAddr = if target.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    match UdpSocket::bind(bind).and_then(|s| s.connect(target).and_then(|()| s.local_addr())) {
        Ok(local) => local.ip(),
        Err(e) => {
            tracing::warn!(
                "advertise_address not set and the route to etcd is unknown ({e}); using {fallback}"
            );
            fallback
        }
    }
}

fn endpoint_socket(endpoint: &str) -> Option<SocketAddr> {
    use std::net::ToSocketAddrs;
    let rest = endpoint.split_once("://").map_or(endpoint, |(_, r)| r);
    let authority = rest.split('/').next()?;
    authority.to_socket_addrs().ok()?.next()
}
