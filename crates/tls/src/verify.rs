//! rustls verifiers for agent-to-agent connections. rustls' WebPki verifiers check the chain to
//! our CA bundle, the validity period and the extended key usage (serverAuth for the server the
//! client reaches, clientAuth for the client a server accepts); on top of that we check the
//! certificate's identity: exactly one URI SAN, a well-formed `spiffe://<td>/host/<host>` in our
//! trust domain, and CA=false. The client also checks that the server is the host it meant to
//! reach: the expected host name travels as the TLS server name (SNI), taken from the route.
//! There is no fallback: any failure aborts the handshake.

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, RootCertStore,
    SignatureScheme,
};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::identity::{HostIdentity, uri_sans};

/// Why a peer's certificate is refused beyond what WebPki checks.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct IdentityError(pub String);

fn refuse(message: String) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(
        IdentityError(message),
    ))))
}

/// The host identity a leaf certificate proves in `trust_domain`: its only URI SAN, well formed,
/// in our trust domain, on a certificate that is not a CA. The chain itself is WebPki's job.
pub fn leaf_identity(
    cert: &CertificateDer<'_>,
    trust_domain: &str,
) -> Result<HostIdentity, String> {
    let (_, x509) = X509Certificate::from_der(cert)
        .map_err(|e| format!("the certificate does not parse as X.509: {e}"))?;
    if x509
        .basic_constraints()
        .map_err(|e| format!("bad basicConstraints: {e}"))?
        .is_some_and(|bc| bc.value.ca)
    {
        return Err(
            "the certificate is a CA (basicConstraints CA=true), not a host certificate".into(),
        );
    }
    let uris = uri_sans(&x509)?;
    let [uri] = uris.as_slice() else {
        return Err(format!(
            "the certificate must carry exactly one URI SAN (spiffe://{trust_domain}/host/<host>); it has {}",
            uris.len()
        ));
    };
    let identity = HostIdentity::parse(uri)?;
    if identity.trust_domain() != trust_domain {
        return Err(format!(
            "{identity} is in trust domain {:?}, not ours ({trust_domain:?})",
            identity.trust_domain()
        ));
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
    ) -> Result<Self, String> {
        let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider)
            .build()
            .map_err(|e| format!("cannot build the server verifier: {e}"))?;
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
            return Err(refuse(format!(
                "peers are dialed by host name, not {server_name:?}"
            )));
        };
        if identity.host() != expected.as_ref() {
            return Err(refuse(format!(
                "the peer presents {identity}, but this connection is for host {:?}",
                expected.as_ref()
            )));
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
    ) -> Result<Self, String> {
        let webpki = WebPkiClientVerifier::builder_with_provider(roots, provider)
            .build()
            .map_err(|e| format!("cannot build the client verifier: {e}"))?;
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
