//! Opening a TCP connection for the data path: to a same-host app or to a peer agent, within a
//! timeout, with Nagle off (proxied bytes should leave as soon as they arrive). One function for
//! every place that connects, so that the error says the same thing everywhere.
//!
//! The connector of the shared clients ([`TimedConnector`]) notes when it last finished
//! connecting to each address, so the balancer can leave connection setup out of an endpoint's
//! latency: a request that had to wait for a new connection measures from when the connection
//! was ready, as Linkerd's balancer (which only sees established connections) does. Otherwise
//! one handshake would mark an endpoint slow for tens of seconds.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use http::Uri;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// No connection: nothing was sent, so the other side never saw a request.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect to {0}: {1}")]
    Failed(SocketAddr, io::Error),
    #[error("connect to {0}: timed out")]
    TimedOut(SocketAddr),
}

/// Connects to `target` within `timeout`.
pub async fn connect(target: SocketAddr, timeout: Duration) -> Result<TcpStream, ConnectError> {
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(target)).await {
        Err(_) => return Err(ConnectError::TimedOut(target)),
        Ok(Err(e)) => return Err(ConnectError::Failed(target, e)),
        Ok(Ok(s)) => s,
    };
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// When each address last got a new connection. Read for every request (foldhash: the
/// addresses are the catalog's, nothing to defend against).
#[derive(Debug, Clone, Default)]
pub struct ConnectTimes(Arc<Mutex<foldhash::HashMap<SocketAddr, Instant>>>);

impl ConnectTimes {
    /// When the latest connection to `addr` finished, if any.
    pub fn last(&self, addr: SocketAddr) -> Option<Instant> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&addr)
            .copied()
    }

    fn record(&self, addr: SocketAddr) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(addr, Instant::now());
    }
}

/// An [`HttpConnector`] that records [`ConnectTimes`].
#[derive(Debug, Clone)]
pub struct TimedConnector {
    inner: HttpConnector,
    times: ConnectTimes,
}

type ConnectFuture =
    Pin<Box<dyn Future<Output = Result<TokioIo<TcpStream>, BoxConnectError>> + Send>>;
type BoxConnectError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<Uri> for TimedConnector {
    type Response = TokioIo<TcpStream>;
    type Error = BoxConnectError;
    type Future = ConnectFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        tower_service::Service::<Uri>::poll_ready(&mut self.inner, cx).map_err(Into::into)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        // Peer URIs name the host in their user info (see `tls::connector`); the time is kept
        // by address, as the balancer looks it up.
        let addr = dst
            .authority()
            .and_then(|a| a.as_str().rsplit('@').next()?.parse::<SocketAddr>().ok());
        let times = self.times.clone();
        let connecting = tower_service::Service::<Uri>::call(&mut self.inner, dst);
        Box::pin(async move {
            let io = connecting.await?;
            if let Some(a) = addr {
                times.record(a);
            }
            Ok(io)
        })
    }
}

impl TimedConnector {
    /// Connects within `timeout`, Nagle off, recording into `times`.
    pub fn new(timeout: Duration, times: ConnectTimes) -> Self {
        let mut inner = HttpConnector::new();
        inner.set_connect_timeout(Some(timeout));
        inner.set_nodelay(true);
        inner.enforce_http(true);
        TimedConnector { inner, times }
    }
}
