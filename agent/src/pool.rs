//! Connections the agent opens: to peer agents (HTTP/2, one multiplexed connection per peer,
//! kept by hyper-util's pool) and to this host's apps (HTTP/1.1 for `http` apps, h2c for `grpc`
//! apps), with the configured connect and idle timeouts.

use std::time::Duration;

use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::body::{Lent, ProxyBody};

/// The clients, built once at start and shared by every request.
#[derive(Debug, Clone)]
pub struct Pools {
    /// Peer agents' inbound ports, HTTP/2 only.
    pub peers: Client<HttpConnector, Lent>,
    /// This host's `http` apps.
    pub local_http1: Client<HttpConnector, Lent>,
    /// This host's `grpc` apps (h2c).
    pub local_h2c: Client<HttpConnector, Lent>,
    /// The inbound side's view: requests whose bodies are already streams.
    pub local_http1_direct: Client<HttpConnector, ProxyBody>,
    pub local_h2c_direct: Client<HttpConnector, ProxyBody>,
}

impl Pools {
    pub fn new(connect_timeout: Duration, idle_timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(connect_timeout));
        connector.set_nodelay(true);
        connector.enforce_http(true);
        let builder = |h2: bool| {
            let mut b = Client::builder(TokioExecutor::new());
            b.pool_idle_timeout(idle_timeout)
                .pool_timer(TokioTimer::new())
                .timer(TokioTimer::new());
            if h2 {
                b.http2_only(true)
                    // Find a dead peer in seconds rather than at the next request's timeout.
                    .http2_keep_alive_interval(Some(Duration::from_secs(10)))
                    .http2_keep_alive_timeout(Duration::from_secs(5))
                    .http2_keep_alive_while_idle(false);
            }
            b
        };
        Pools {
            peers: builder(true).build(connector.clone()),
            local_http1: builder(false).build(connector.clone()),
            local_h2c: builder(true).build(connector.clone()),
            local_http1_direct: builder(false).build(connector.clone()),
            local_h2c_direct: builder(true).build(connector),
        }
    }
}
