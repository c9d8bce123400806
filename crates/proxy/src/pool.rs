//! Connections the agent opens: to peer agents (HTTP/2, one multiplexed connection per peer) and
//! to this host's `grpc` apps (h2c), kept by `h2_client`; to `http` apps (HTTP/1.1), kept by
//! hyper-util's pool; with the configured connect and idle timeouts.
//!
//! Each data path worker has pools of its own ([`WorkerPools`]): hyper-util runs every
//! connection on a task of the runtime that opened it, so with one pool for all workers a
//! request served on one worker went through a connection driven by another, two cross-thread
//! wake-ups per request. With a pool per worker a request stays on its thread end to end, as in
//! HAProxy's per-thread idle connection lists; the price is a connection per worker per peer.
//!
//! The connector records when each address last got a new connection (`connect::ConnectTimes`).

use std::sync::Arc;
use std::time::Duration;

use http::Uri;
use http::uri::{Authority, PathAndQuery, Scheme};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::body::{Lent, ProxyBody};
use crate::connect::{ConnectTimes, TimedConnector};
use crate::h2_client::H2Client;
use hostmesh_tls::{PeerConnector, PeerTls};

/// The path (and query) of `uri`, `/` when it has none, for the request passed on.
pub fn path_of(uri: &Uri) -> PathAndQuery {
    uri.path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"))
}

/// The absolute `http://` URI a request sent through these clients carries: they pick (and the
/// peer connector authenticates) the connection by its `authority`. Built from parts already
/// parsed, so nothing is formatted or parsed per request.
pub fn absolute_uri(authority: Authority, path: PathAndQuery) -> Option<Uri> {
    let mut uri = http::uri::Parts::default();
    uri.scheme = Some(Scheme::HTTP);
    uri.authority = Some(authority);
    uri.path_and_query = Some(path);
    Uri::from_parts(uri).ok()
}

/// One [`Pools`] per data path worker, each used only by connections its worker serves.
#[derive(Debug, Clone)]
pub struct WorkerPools {
    each: Arc<[Pools]>,
}

impl WorkerPools {
    /// Pools for `workers` workers, sharing the peer TLS settings and the connect times.
    pub fn new(
        workers: usize,
        connect_timeout: Duration,
        idle_timeout: Duration,
        peer_tls: PeerTls,
    ) -> Self {
        let connect_times = ConnectTimes::default();
        let each = (0..workers.max(1))
            .map(|_| {
                Pools::new(
                    connect_timeout,
                    idle_timeout,
                    peer_tls.clone(),
                    &connect_times,
                )
            })
            .collect();
        WorkerPools { each }
    }

    /// The calling worker's pools; off the workers' threads, the first worker's.
    pub fn get(&self) -> &Pools {
        let i = crate::workers::current().unwrap_or(0);
        &self.each[i % self.each.len()]
    }
}

/// The clients of one worker, built at start.
#[derive(Debug, Clone)]
pub struct Pools {
    /// Peer agents' inbound ports, HTTP/2 only (over mTLS unless `tls.mode = "disabled"`).
    pub peers: H2Client,
    /// Dials peers for opaque TCP the same way.
    pub peer_tls: PeerTls,
    /// This host's `http` apps.
    pub local_http1: Client<TimedConnector, Lent>,
    /// This host's `grpc` apps (h2c), for both sides.
    pub local_h2c: H2Client,
    /// The inbound side's view: requests whose bodies are already streams.
    pub local_http1_direct: Client<TimedConnector, ProxyBody>,
    /// When each address last got a new connection (see the module docs), shared by all
    /// workers' pools: the balancer's view of an endpoint is one.
    pub connect_times: ConnectTimes,
}

impl Pools {
    fn new(
        connect_timeout: Duration,
        idle_timeout: Duration,
        peer_tls: PeerTls,
        connect_times: &ConnectTimes,
    ) -> Self {
        let connect_times = connect_times.clone();
        let connector = TimedConnector::new(connect_timeout, connect_times.clone());
        let mut http1 = Client::builder(TokioExecutor::new());
        http1
            .pool_idle_timeout(idle_timeout)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new());
        Pools {
            peers: H2Client::new(
                PeerConnector::new(connector.clone(), peer_tls.clone()),
                idle_timeout,
            ),
            local_h2c: H2Client::new(
                PeerConnector::new(connector.clone(), PeerTls::disabled()),
                idle_timeout,
            ),
            peer_tls,
            local_http1: http1.build(connector.clone()),
            local_http1_direct: http1.build(connector),
            connect_times,
        }
    }
}
