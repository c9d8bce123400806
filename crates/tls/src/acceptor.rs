//! The inbound handshake: TLS with a mandatory client certificate, the peer's host identity
//! taken from it, and the ALPN protocol saying what the connection carries. A client that
//! offers none of our protocols is refused.

use std::io;
use std::net::SocketAddr;

use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use super::identity::HostIdentity;
use super::reload::TlsStore;
use super::verify::LeafIdentityError;
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

/// Why an inbound connection is refused. The caller closes it and logs why; the peer must
/// connect again (with a certificate our CA signed, and ALPN `h2` or `hostmesh-tcp/1`).
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The TLS handshake failed: not TLS, a certificate the verifier refused, a reset.
    #[error("TLS handshake from {from}: {error}")]
    Tls { from: SocketAddr, error: io::Error },
    #[error("{from} negotiated no hostmesh protocol (ALPN h2 or hostmesh-tcp/1)")]
    NoProtocol { from: SocketAddr },
    #[error("{from} presented no certificate")]
    NoCertificate { from: SocketAddr },
    /// The certificate the verifier accepted proves no identity when read again: cannot happen
    /// unless the verifier and this check disagree.
    #[error(transparent)]
    Identity(#[from] LeafIdentityError),
}

/// Runs the server handshake on `tcp` with the current material. The caller bounds its time.
pub async fn accept(
    store: &TlsStore,
    tcp: TcpStream,
    from: SocketAddr,
) -> Result<Accepted, HandshakeError> {
    let material = store.current();
    let stream = TlsAcceptor::from(material.server())
        .accept(tcp)
        .await
        .map_err(|error| HandshakeError::Tls { from, error })?;
    let (_, conn) = stream.get_ref();
    let alpn = match conn.alpn_protocol() {
        Some(p) if p == ALPN_H2 => Alpn::H2,
        Some(p) if p == ALPN_TCP => Alpn::Tcp,
        _ => return Err(HandshakeError::NoProtocol { from }),
    };
    let leaf = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .ok_or(HandshakeError::NoCertificate { from })?;
    // The verifier already accepted this identity; parsing it again is cheap and keeps the
    // verifier free of per-connection state.
    let peer = super::verify::leaf_identity(leaf, material.identity.trust_domain())?;
    Ok(Accepted { stream, alpn, peer })
}
