//! Dialing peer agents: plain TCP with `tls.mode = "disabled"`, else a TLS handshake on the new
//! connection with ALPN `h2` (HTTP, through hyper's pool) or `hostmesh-tcp/1` (opaque TCP),
//! verifying that the server is the host the route names.
//!
//! hyper's pool only hands the connector a URI, so the outbound side names the peer host in the
//! URI's user info (`http://web-02@10.0.0.6:4143/...`): the pool then keys connections by host
//! and address, and the connector knows which identity to demand.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::identity;
use super::reload::TlsStore;

/// A connection to a peer agent.
#[derive(Debug)]
pub enum PeerStream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// Dials peers: TLS when a store is set (mtls), else plain.
#[derive(Debug, Clone)]
pub struct PeerTls {
    store: Option<Arc<TlsStore>>,
    handshake_timeout: Duration,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl PeerTls {
    pub fn new(store: Option<Arc<TlsStore>>, handshake_timeout: Duration) -> PeerTls {
        PeerTls {
            store,
            handshake_timeout,
        }
    }

    /// Plain TCP between agents (`tls.mode = "disabled"`).
    pub fn disabled() -> PeerTls {
        PeerTls::new(None, Duration::from_secs(1))
    }

    /// Secures a new connection to `host`'s agent for opaque TCP.
    pub async fn tcp(&self, stream: TcpStream, host: &str) -> io::Result<PeerStream> {
        self.secure(stream, host, false).await
    }

    /// Secures a new connection to `host`'s agent for HTTP/2.
    pub async fn h2(&self, stream: TcpStream, host: &str) -> io::Result<PeerStream> {
        self.secure(stream, host, true).await
    }

    async fn secure(&self, stream: TcpStream, host: &str, h2: bool) -> io::Result<PeerStream> {
        let Some(store) = &self.store else {
            return Ok(PeerStream::Plain(stream));
        };
        let name = identity::server_name(host).map_err(io::Error::other)?;
        let material = store.current();
        let config = if h2 {
            material.client_h2()
        } else {
            material.client_tcp()
        };
        let handshake = TlsConnector::from(config).connect(name, stream);
        let tls = match tokio::time::timeout(self.handshake_timeout, handshake).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                // Said here, where the reason is known: hyper reports only "Connect". A refused
                // identity (an impostor, a wrong CA) is worth an operator's attention.
                tracing::warn!(peer = host, "TLS handshake with the peer agent failed: {e}");
                return Err(io::Error::new(
                    e.kind(),
                    format!("TLS handshake with {host}: {e}"),
                ));
            }
            Err(_) => {
                tracing::warn!(peer = host, "TLS handshake with the peer agent timed out");
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("TLS handshake with {host}: timed out"),
                ));
            }
        };
        Ok(PeerStream::Tls(Box::new(tls)))
    }
}

/// hyper's connector for peer agents: `inner` makes the TCP connection, then [`PeerTls`] secures
/// it for the host named in the URI's user info.
#[derive(Debug, Clone)]
pub struct PeerConnector<C> {
    inner: C,
    tls: PeerTls,
}

impl<C> PeerConnector<C> {
    pub fn new(inner: C, tls: PeerTls) -> Self {
        PeerConnector { inner, tls }
    }
}

/// The peer host a pooled URI names: the user info before `@`.
pub fn uri_host(uri: &Uri) -> Option<&str> {
    let authority = uri.authority()?.as_str();
    authority.split_once('@').map(|(host, _)| host)
}

impl<C> tower_service::Service<Uri> for PeerConnector<C>
where
    C: tower_service::Service<Uri, Response = TokioIo<TcpStream>, Error = BoxError>
        + Clone
        + Send
        + 'static,
    C::Future: Send,
{
    type Response = TokioIo<PeerStream>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let host = uri_host(&dst).map(str::to_owned);
        let tls = self.tls.clone();
        let connecting = self.inner.call(dst);
        Box::pin(async move {
            let tcp = connecting.await?.into_inner();
            if tls.store.is_none() {
                return Ok(TokioIo::new(PeerStream::Plain(tcp)));
            }
            let host = host.ok_or("no peer host name in the request URI (a bug)")?;
            Ok(TokioIo::new(tls.h2(tcp, &host).await?))
        })
    }
}

impl Connection for PeerStream {
    fn connected(&self) -> Connected {
        match self {
            PeerStream::Plain(s) => s.connected(),
            PeerStream::Tls(s) => {
                let connected = s.get_ref().0.connected();
                if s.get_ref().1.alpn_protocol() == Some(super::ALPN_H2) {
                    connected.negotiated_h2()
                } else {
                    connected
                }
            }
        }
    }
}

impl AsyncRead for PeerStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PeerStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            PeerStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for PeerStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            PeerStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            PeerStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PeerStream::Plain(s) => Pin::new(s).poll_flush(cx),
            PeerStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PeerStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            PeerStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            PeerStream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            PeerStream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            PeerStream::Plain(s) => s.is_write_vectored(),
            PeerStream::Tls(s) => s.is_write_vectored(),
        }
    }
}
