//! The agent's own listeners (admin, DNS, inbound), bound before anything is announced.

use std::net::SocketAddr;

use tokio::net::TcpListener;

use crate::metrics::Metrics;
use hostmesh_config::AgentConfig;
use hostmesh_dns::DnsServer;

use super::RunError;

/// The agent's own listeners, all bound before anything is announced, so a port conflict stops
/// the start with a clear message instead of a half-working agent.
pub(super) struct Listeners {
    pub(super) admin: TcpListener,
    pub(super) dns: DnsServer,
    pub(super) inbound: TcpListener,
}

impl Listeners {
    pub(super) async fn bind(
        config: &AgentConfig,
        metrics: &Metrics,
    ) -> Result<Listeners, RunError> {
        let bind_error = |what: &'static str, addr: SocketAddr, source: std::io::Error| {
            RunError::Listen { what, addr, source }
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
