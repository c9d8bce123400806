//! The outbound and inbound proxies, built from the config and what they share.

use std::net::IpAddr;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use hostmesh_config::AgentConfig;
use hostmesh_proxy::access_log::AccessLog;
use hostmesh_proxy::access_table::Policies;
use hostmesh_proxy::inbound::Inbound;
use hostmesh_proxy::local::LocalInstances;
use hostmesh_proxy::outbound::{Outbound, OutboundParts};
use hostmesh_proxy::pool::WorkerPools;
use hostmesh_proxy::settings::Settings;
use hostmesh_proxy::trace::Tracer;
use hostmesh_tls::{PeerTls, TlsStore};

use super::RunError;

/// What the outbound and inbound proxies share besides the config and the pools.
pub(super) struct Shared {
    pub(super) local: Arc<LocalInstances>,
    pub(super) policies: Arc<Policies>,
    pub(super) draining: CancellationToken,
    pub(super) tls: Option<Arc<TlsStore>>,
    pub(super) tracer: Tracer,
    pub(super) access_log: AccessLog,
}

/// The outbound and inbound proxies, sharing the connection pools and this host's instances.
pub(super) fn data_path(
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
        access_log,
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
    let workers = Arc::new(
        hostmesh_proxy::workers::Workers::start(config.proxy.workers, config.proxy.pin_workers)
            .map_err(RunError::Threads)?,
    );
    let pools = WorkerPools::new(
        workers.len(),
        config.proxy.connect_timeout,
        config.proxy.idle_timeout,
        peer_tls,
    );
    let outbound = Arc::new(Outbound::new(OutboundParts {
        self_host: config.agent.host.clone(),
        self_zone: config.agent.zone.clone(),
        // The config's name rules make agent.host a valid header value, and an address always is.
        wire_headers: hostmesh_proxy::outbound::WireHeaders::new(&config.agent.host, advertise)
            .expect("agent.host passed the host-name rules"),
        local: local.clone(),
        pools: pools.clone(),
        settings: settings.clone(),
        metrics: metrics.proxy.clone(),
        policies: policies.clone(),
        draining: draining.clone(),
        tracer: tracer.clone(),
        access_log: access_log.clone(),
        workers: workers.clone(),
    }));
    let inbound = Arc::new(Inbound {
        host: config.agent.host.clone(),
        tls,
        local,
        pools,
        settings,
        metrics: metrics.proxy.clone(),
        policies,
        draining,
        tracer,
        access_log,
        workers,
    });
    Ok((outbound, inbound))
}
