//! The inbound side: peer agents reaching this host's apps through `inbound_listen`. The first
//! bytes say what a connection carries: the HTTP/2 preface (multiplexed HTTP for `http` and
//! `grpc` apps) or `HOSTMESH-TCP/` (one opaque TCP stream). The instance is always looked up in
//! this host's own definitions; an address from the wire is never dialed.

mod caller;
mod http;
mod prefixed;
mod tcp;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::local::LocalInstances;
use crate::metrics::ProxyMetrics;
use crate::outbound::Settings;
use crate::policy::Policies;
use crate::pool::Pools;
use crate::wire;
pub(crate) use prefixed::Prefixed;

/// How long a new connection may take to say what it is.
const SNIFF_TIMEOUT: Duration = Duration::from_secs(5);
/// Enough bytes to tell the HTTP/2 preface ("PRI * HTTP/2.") from `HOSTMESH-TCP/`.
const SNIFF_LEN: usize = 13;

#[derive(Debug)]
pub struct Inbound {
    pub local: Arc<LocalInstances>,
    pub pools: Pools,
    pub settings: Settings,
    pub metrics: ProxyMetrics,
    pub policies: Arc<Policies>,
    /// Fired when the agent starts draining (see `shutdown`).
    pub draining: CancellationToken,
}

impl Inbound {
    /// Accepts peers' connections until `cancel`, at most `limit` at once.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        limit: Arc<Semaphore>,
        cancel: CancellationToken,
    ) {
        loop {
            let permit = tokio::select! {
                () = cancel.cancelled() => return,
                p = limit.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => return,
                },
            };
            let (stream, peer) = tokio::select! {
                () = cancel.cancelled() => return,
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!("inbound accept: {e}");
                        // Out of file descriptors and the like: do not spin.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let ctx = self.clone();
            tokio::spawn(async move {
                ctx.connection(stream, peer).await;
                drop(permit);
            });
        }
    }

    async fn connection(self: Arc<Self>, mut stream: TcpStream, peer: SocketAddr) {
        let _ = stream.set_nodelay(true);
        let mut head = [0u8; SNIFF_LEN];
        match tokio::time::timeout(SNIFF_TIMEOUT, stream.read_exact(&mut head)).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        let stream = Prefixed::new(head.to_vec(), stream);
        if head.starts_with(wire::TCP_MAGIC) {
            tcp::serve(self, stream, peer).await;
        } else if head.starts_with(b"PRI * HTTP/2.") {
            http::serve(self, stream, peer).await;
        } else {
            tracing::debug!(%peer, "inbound: neither HTTP/2 nor HOSTMESH-TCP; closing");
        }
    }
}
