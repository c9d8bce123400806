//! rustls verifiers for agent-to-agent connections. rustls' WebPki verifiers check the chain to
//! our CA bundle, the validity period and the extended key usage (serverAuth for the server the
//! client reaches, clientAuth for the client a server accepts); on top of that we check the
//! certificate's identity: exactly one URI SAN, a well-formed `spiffe://<td>/host/<host>` in our
//! trust domain, and CA=false. The client also checks that the server is the host it meant to
//! reach: the expected host name travels as the TLS server name (SNI), taken from the route.
//! There is no fallback: any failure aborts the handshake.

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{VerifierBuilderError, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, RootCertStore,
    SignatureScheme,
};
use x509_parser::error::X509Error;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::identity::{HostIdentity, IdentityError, uri_sans};

/// Why a certificate proves no host identity in our trust domain, beyond what WebPki checks.
/// A verifier refuses the handshake with it (as rustls' `CertificateError::Other`); for this
/// host's own certificate, the operator must issue a right one.
#[derive(Debug, thiserror::Error)]
pub enum LeafIdentityError {
    #[error("the certificate does not parse as X.509: {0}")]
    NotX509(x509_parser::nom::Err<X509Error>),
    #[error("bad basicConstraints: {0}")]
    BadBasicConstraints(X509Error),
    #[error("the certificate is a CA (basicConstraints CA=true), not a host certificate")]
    IsCa,
    /// Unreadable SANs, or a URI SAN that is not a well-formed host identity.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(
        "the certificate must carry exactly one URI SAN (spiffe://{trust_domain}/host/<host>); it has {count}"
    )]
    UriSanCount { trust_domain: String, count: usize },
    #[error("{identity} is in trust domain {:?}, not ours ({trust_domain:?})", identity.trust_domain())]
    OtherTrustDomain {
        identity: HostIdentity,
        trust_domain: String,
    },
    /// The client dialed a peer by something other than its host name (an IP address), so
    /// there is no host to hold the certificate to.
    #[error("peers are dialed by host name, not {server_name:?}")]
    NotDialedByName { server_name: ServerName<'static> },
    /// A valid identity, but of another host than the one this connection is for: an impostor
    /// or a misrouted connection.
    #[error("the peer presents {identity}, but this connection is for host {expected:?}")]
    OtherHost {
        identity: HostIdentity,
        expected: String,
    },
}

/// The CA bundle makes no verifier (no usable trust anchor in it): fix `tls.ca_file`.
#[derive(Debug, thiserror::Error)]
pub enum VerifierError {
    #[error("cannot build the server verifier: {0}")]
    Server(VerifierBuilderError),
    #[error("cannot build the client verifier: {0}")]
    Client(VerifierBuilderError),
}

/// A refusal as rustls carries it, in `CertificateError::Other`. rustls writes that variant with
/// Debug inside its own message (`invalid peer certificate: Other(OtherError(IdentityError("…")))`),
/// which handshake errors and logs show, so its Debug keeps that form.
struct Refusal(LeafIdentityError);

impl fmt::Debug for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("IdentityError")
            .field(&self.0.to_string())
            .finish()
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for Refusal {}

fn refuse(error: LeafIdentityError) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(Refusal(
        error,
    )))))
}

/// The host identity a leaf certificate proves in `trust_domain`: its only URI SAN, well formed,
/// in our trust domain, on a certificate that is not a CA. The chain itself is WebPki's job.
pub fn leaf_identity(
    cert: &CertificateDer<'_>,
    trust_domain: &str,
) -> Result<HostIdentity, LeafIdentityError> {
    let (_, x509) = X509Certificate::from_der(cert).map_err(LeafIdentityError::NotX509)?;
    if x509
        .basic_constraints()
        .map_err(LeafIdentityError::BadBasicConstraints)?
        .is_some_and(|bc| bc.value.ca)
    {
        return Err(LeafIdentityError::IsCa);
    }
    let uris = uri_sans(&x509)?;
    let [uri] = uris.as_slice() else {
        return Err(LeafIdentityError::UriSanCount {
            trust_domain: trust_domain.to_owned(),
            count: uris.len(),
        });
    };
    let identity = HostIdentity::parse(uri)?;
    if identity.trust_domain() != trust_domain {
        return Err(LeafIdentityError::OtherTrustDomain {
            identity,
            trust_domain: trust_domain.to_owned(),
        });
    }
    Ok(identity)
}

/// The client side: verifies the peer agent this host connects to.
#[derive(Debug)]
pub struct PeerServerVerifier {
    webpki: Arc<WebPkiServerVerifier>,
    trust_domain: String,
}

impl PeerServerVerifier {
    pub fn new(
        roots: Arc<RootCertStore>,
        trust_domain: &str,
        provider: Arc<CryptoProvider>,
    ) -> Result<Self, VerifierError> {
        let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider)
            .build()
            .map_err(VerifierError::Server)?;
        Ok(PeerServerVerifier {
            webpki,
            trust_domain: trust_domain.to_owned(),
        })
    }
}

impl ServerCertVerifier for PeerServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // Chain to our CA, validity, EKU serverAuth, and the DNS SAN matching the host we dialed.
        self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        let identity = leaf_identity(end_entity, &self.trust_domain).map_err(refuse)?;
        let ServerName::DnsName(expected) = server_name else {
            return Err(refuse(LeafIdentityError::NotDialedByName {
                server_name: server_name.to_owned(),
            }));
        };
        if identity.host() != expected.as_ref() {
            return Err(refuse(LeafIdentityError::OtherHost {
                identity,
                expected: expected.as_ref().to_owned(),
            }));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// The server side: verifies the peer agent connecting to this host's inbound port. A client
/// certificate is mandatory.
#[derive(Debug)]
pub struct PeerClientVerifier {
    webpki: Arc<dyn ClientCertVerifier>,
    trust_domain: String,
}

impl PeerClientVerifier {
    pub fn new(
        roots: Arc<RootCertStore>,
        trust_domain: &str,
        provider: Arc<CryptoProvider>,
    ) -> Result<Self, VerifierError> {
        let webpki = WebPkiClientVerifier::builder_with_provider(roots, provider)
            .build()
            .map_err(VerifierError::Client)?;
        Ok(PeerClientVerifier {
            webpki,
            trust_domain: trust_domain.to_owned(),
        })
    }
}

impl ClientCertVerifier for PeerClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.webpki.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // Chain to our CA, validity, EKU clientAuth.
        self.webpki
            .verify_client_cert(end_entity, intermediates, now)?;
        leaf_identity(end_entity, &self.trust_domain).map_err(refuse)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a refused peer sees in its handshake error and logs, as before the refusal was typed.
    #[test]
    fn a_refusal_reads_as_before_in_rustls_message() {
        assert_eq!(
            refuse(LeafIdentityError::IsCa).to_string(),
            "invalid peer certificate: Other(OtherError(IdentityError(\"the certificate is a CA \
             (basicConstraints CA=true), not a host certificate\")))"
        );
    }
}
