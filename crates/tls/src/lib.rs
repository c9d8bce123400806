//! Mutual TLS between agents: host identities (`spiffe://<trust_domain>/host/<host>`), the mesh
//! CA and host certificates (`hostmesh ca`), the rustls verifiers that enforce the identity
//! rules, the live material with its reload, and dialing and accepting peer connections.
//!
//! # Layout
//! - [`identity`]: the SPIFFE host identity and its name rules.
//! - [`issue`]: making the CA and host certificates (rcgen).
//! - [`verify`]: the client- and server-side certificate verifiers.
//! - [`material`]: the `[tls]` files, checked, as rustls configs.
//! - [`reload`]: the material in use, re-read on change and on SIGHUP.
//! - [`connector`], [`acceptor`]: the outbound and inbound handshakes.
//! - [`metrics`]: the `hostmesh_cert_expiry_seconds` gauge.

pub mod acceptor;
pub mod connector;
pub mod identity;
pub mod issue;
pub mod material;
pub mod metrics;
pub mod reload;
#[cfg(test)]
mod tests;
pub mod verify;

pub use acceptor::{Accepted, Alpn};
pub use connector::{PeerConnector, PeerStream, PeerTls};
pub use identity::HostIdentity;
pub use material::{FileProblem, Material, TlsFiles};
pub use metrics::CertMetrics;
pub use reload::TlsStore;

/// ALPN for HTTP/2 between agents.
pub const ALPN_H2: &[u8] = b"h2";
/// ALPN for one opaque TCP stream between agents (`HOSTMESH-TCP/1` preface inside).
pub const ALPN_TCP: &[u8] = b"hostmesh-tcp/1";
