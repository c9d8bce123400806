//! The inbound handshake: TLS with a mandatory client certificate, the peer's host identity
//! taken from it, and the ALPN protocol saying what the connection carries. A client that
//! offers none of our protocols is refused.

use std::net::SocketAddr;

use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use super::identity::HostIdentity;
use super::reload::TlsStore;
use super::{ALPN_H2, ALPN_TCP};

/// What an authenticated connection carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alpn {
    /// HTTP/2 for `http` and `grpc` services.
    H2,
    /// One `HOSTMESH-TCP/1` stream.
    Tcp,
}

/// A peer agent's connection after a successful handshake.
#[derive(Debug)]
pub struct Accepted {
    pub stream: TlsStream<TcpStream>,
    pub alpn: Alpn,
    /// The calling host, proven by its certificate.
    pub peer: HostIdentity,
}

/// Runs the server handshake on `tcp` with the current material. The caller bounds its time.
pub async fn accept(
    store: &TlsStore,
    tcp: TcpStream,
    from: SocketAddr,
) -> Result<Accepted, String> {
    let material = store.current();
    let stream = TlsAcceptor::from(material.server())
        .accept(tcp)
        .await
        .map_err(|e| format!("TLS handshake from {from}: {e}"))?;
    let (_, conn) = stream.get_ref();
    let alpn = match conn.alpn_protocol() {
        Some(p) if p == ALPN_H2 => Alpn::H2,
        Some(p) if p == ALPN_TCP => Alpn::Tcp,
        _ => {
            return Err(format!(
                "{from} negotiated no hostmesh protocol (ALPN h2 or hostmesh-tcp/1)"
            ));
        }
    };
    let leaf = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .ok_or_else(|| format!("{from} presented no certificate"))?;
    // The verifier already accepted this identity; parsing it again is cheap and keeps the
    // verifier free of per-connection state.
    let peer = super::verify::leaf_identity(leaf, material.identity.trust_domain())?;
    Ok(Accepted { stream, alpn, peer })
}
