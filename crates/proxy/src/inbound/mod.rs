//! The inbound side: peer agents reaching this host's apps through `inbound_listen`.
//!
//! With mTLS (the default) every connection starts with a TLS handshake (bounded in time, under
//! the listener's connection cap) that requires a client certificate of our mesh; the ALPN
//! protocol says what it carries (`h2`: multiplexed HTTP for `http` and `grpc` apps;
//! `hostmesh-tcp/1`: one opaque TCP stream), and the caller is the host its certificate names.
//! Anything else, plain TCP included, reaches no app. With `tls.mode = "disabled"` the first
//! bytes tell the HTTP/2 preface from `HOSTMESH-TCP/`, and the caller is what the peer claims
//! (`x-hostmesh-src`): tests and dev only.
//!
//! The instance is always looked up in this host's own definitions; an address from the wire is
//! never dialed.

mod app_h1;
pub(crate) mod caller;
mod http;
mod tcp;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::access_table::Policies;
use crate::local::LocalInstances;
use crate::metrics::ProxyMetrics;
use crate::pool::WorkerPools;
use crate::prefixed::Prefixed;
use crate::settings::Settings;
use hostmesh_tls::{Alpn, TlsStore};
use hostmesh_wire as wire;

/// How long a new connection may take to say what it is (or to finish its TLS handshake).
const SNIFF_TIMEOUT: Duration = Duration::from_secs(5);
/// Enough bytes to tell the HTTP/2 preface ("PRI * HTTP/2.") from `HOSTMESH-TCP/`.
const SNIFF_LEN: usize = 13;

#[derive(Debug)]
pub struct Inbound {
    /// This host's name (`agent.host`), for access log lines.
    pub host: String,
    /// The TLS material with mTLS; `None` with `tls.mode = "disabled"`.
    pub tls: Option<Arc<TlsStore>>,
    pub local: Arc<LocalInstances>,
    pub pools: WorkerPools,
    pub settings: Settings,
    pub metrics: ProxyMetrics,
    pub policies: Arc<Policies>,
    /// Fired when the agent starts draining (see `shutdown`).
    pub draining: CancellationToken,
    /// Spans per hop (off without an OTLP endpoint).
    pub tracer: crate::trace::Tracer,
    /// A line per request or connection (`[access_log]`).
    pub access_log: crate::access_log::AccessLog,
    /// The threads connections are served on.
    pub workers: Arc<crate::workers::Workers>,
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
                    Err(e) if hostmesh_listen::descriptors::out_of_resources(&e) => {
                        hostmesh_listen::descriptors::exhaustion().record("inbound", &e);
                        // Do not spin while short of descriptors.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                    // One connection's own problem (reset before it was accepted).
                    Err(e) => {
                        tracing::debug!("inbound accept: {e}");
                        continue;
                    }
                },
            };
            let ctx = self.clone();
            self.workers.run(stream, move |stream| async move {
                ctx.connection(stream, peer).await;
                drop(permit);
            });
        }
    }

    async fn connection(self: Arc<Self>, stream: TcpStream, peer: SocketAddr) {
        let _ = stream.set_nodelay(true);
        if let Some(tls) = &self.tls {
            let accepted = tokio::time::timeout(
                SNIFF_TIMEOUT,
                hostmesh_tls::acceptor::accept(tls, stream, peer),
            )
            .await;
            let accepted = match accepted {
                Ok(Ok(a)) => a,
                Ok(Err(e)) => {
                    tracing::info!(%peer, "inbound connection refused: {e}");
                    return;
                }
                Err(_) => {
                    tracing::info!(%peer, "inbound connection refused: TLS handshake timed out");
                    return;
                }
            };
            let caller: Arc<str> = accepted.peer.host().into();
            tracing::trace!(%peer, caller = &*caller, alpn = ?accepted.alpn, "inbound mTLS connection");
            // A peer that completes the handshake must then say something, like any other: an
            // idle one would hold a connection slot (and hyper's h2 server waits for the
            // preface without a limit).
            let Some(stream) = first_bytes(accepted.stream, peer).await else {
                return;
            };
            match accepted.alpn {
                Alpn::H2 => http::serve(self, stream, peer, Some(caller)).await,
                Alpn::Tcp => tcp::serve(self, stream, peer, Some(caller)).await,
            }
            return;
        }
        let Some(stream) = first_bytes(stream, peer).await else {
            return;
        };
        let (tcp, h2) = {
            let head = stream.prefix();
            (
                head.starts_with(wire::TCP_MAGIC),
                head.starts_with(b"PRI * HTTP/2."),
            )
        };
        if tcp {
            tcp::serve(self, stream, peer, None).await;
        } else if h2 {
            http::serve(self, stream, peer, None).await;
        } else {
            tracing::debug!(%peer, "inbound: neither HTTP/2 nor HOSTMESH-TCP; closing");
        }
    }
}

/// The connection's first [`SNIFF_LEN`] bytes, read within [`SNIFF_TIMEOUT`] and put back in
/// front of the stream; `None` (logged) when the peer says nothing in time or goes away.
async fn first_bytes<S: PeerIo>(mut stream: S, peer: SocketAddr) -> Option<Prefixed<S>> {
    let mut head = [0u8; SNIFF_LEN];
    match tokio::time::timeout(SNIFF_TIMEOUT, stream.read_exact(&mut head)).await {
        Ok(Ok(_)) => Some(Prefixed::new(head.to_vec(), stream)),
        Ok(Err(e)) => {
            tracing::debug!(%peer, "inbound connection closed before its first request: {e}");
            None
        }
        Err(_) => {
            tracing::info!(%peer, "inbound connection closed: nothing sent within {SNIFF_TIMEOUT:?}");
            None
        }
    }
}

/// What the inbound protocols run on: a TLS stream, or (TLS disabled) the sniffed TCP stream.
pub trait PeerIo: AsyncRead + AsyncWrite + Unpin + Send + 'static {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> PeerIo for T {}
