//! Making certificates with rcgen (ECDSA P-256): the mesh CA (`hostmesh ca init`) and host
//! certificates signed by it (`hostmesh ca issue`).
//!
//! The CA certificate carries its trust domain as its own URI SAN `spiffe://<trust_domain>`, so
//! issuing needs nothing but the CA directory: the trust domain cannot drift between `init` and
//! `issue`.

use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType,
};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::identity::{HostIdentity, IdentityError, uri_sans};

/// How long a mesh CA is valid. Rotating a CA means distributing a new bundle to every host, so
/// it is long; host certificates are the short-lived part.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 86_400);
/// Backdating of `not_before`, so a host whose clock is a little behind accepts a fresh cert.
const CLOCK_SKEW: Duration = Duration::from_secs(300);

/// Why a certificate could not be made.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// The trust domain or host name breaks the identity rules: fix the input.
    #[error("{0}")]
    Identity(IdentityError),
    /// rcgen refused to make a key or sign: not the input's fault.
    #[error("making the certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
}

/// Why a CA directory's `ca.pem` and `ca.key` cannot sign; each says which file and what is
/// wrong with it, so the operator knows which one to replace.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("ca.pem holds no PEM certificate: {0}")]
    NoCertificate(String),
    #[error("ca.pem does not parse as X.509: {0}")]
    NotX509(String),
    #[error("ca.pem is not a CA certificate (basicConstraints CA is not set)")]
    NotACa,
    #[error("ca.pem: {0}")]
    UnreadableSan(IdentityError),
    #[error(
        "ca.pem must carry exactly one URI SAN spiffe://<trust_domain> (made by `hostmesh ca init`); it has {0}"
    )]
    UriSanCount(usize),
    #[error("ca.pem: {0}")]
    TrustDomain(IdentityError),
    #[error("ca.key is not a usable private key: {0}")]
    UnusableKey(String),
    #[error("ca.key is not the key of ca.pem")]
    KeyMismatch,
    #[error("ca.pem cannot issue certificates: {0}")]
    CannotIssue(String),
}

/// A certificate and its private key, both PEM.
#[derive(Debug)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

/// Creates a self-signed mesh CA for `trust_domain`.
pub fn new_ca(trust_domain: &str) -> Result<Issued, IssueError> {
    super::identity::check_trust_domain(trust_domain).map_err(IssueError::Identity)?;
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    let now = OffsetDateTime::now_utc();
    // The creation time tells two CAs of one trust domain apart (old and new during a CA
    // rotation), in the name operators see and in the issuer that verifiers match on.
    params.distinguished_name.push(
        DnType::CommonName,
        format!("hostmesh CA {trust_domain} {}", now.unix_timestamp()),
    );
    params.subject_alt_names = vec![uri_san(&HostIdentity::trust_domain_uri(trust_domain))?];
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = now - CLOCK_SKEW;
    params.not_after = now + CA_VALIDITY;
    let cert = params.self_signed(&key)?;
    Ok(Issued {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// The parameters of a host certificate: one URI SAN (the identity), the host name as DNS SAN,
/// CA=false, EKU serverAuth + clientAuth (every agent is both a client and a server), valid for
/// `validity` from now. Public so that tests can derive deliberately wrong certificates.
pub fn host_params(
    identity: &HostIdentity,
    validity: Duration,
) -> Result<CertificateParams, IssueError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, identity.host());
    params.subject_alt_names = vec![
        uri_san(&identity.to_string())?,
        SanType::DnsName(identity.host().try_into()?),
    ];
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    let now = OffsetDateTime::now_utc();
    params.not_before = now - CLOCK_SKEW;
    params.not_after = now + validity;
    Ok(params)
}

fn uri_san(uri: &str) -> Result<SanType, IssueError> {
    Ok(SanType::URI(uri.try_into()?))
}

/// A loaded mesh CA that can sign host certificates.
#[derive(Debug)]
pub struct Ca {
    trust_domain: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    /// Loads the CA from its PEM files' contents, checking that the certificate is a CA with a
    /// `spiffe://<trust_domain>` URI SAN and that the key is the certificate's.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Ca, CaError> {
        let der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| CaError::NoCertificate(e.to_string()))?;
        let (_, cert) =
            X509Certificate::from_der(&der).map_err(|e| CaError::NotX509(e.to_string()))?;
        let is_ca = cert
            .basic_constraints()
            .ok()
            .flatten()
            .is_some_and(|bc| bc.value.ca);
        if !is_ca {
            return Err(CaError::NotACa);
        }
        let uris = uri_sans(&cert).map_err(CaError::UnreadableSan)?;
        let [uri] = uris.as_slice() else {
            return Err(CaError::UriSanCount(uris.len()));
        };
        let trust_domain =
            HostIdentity::parse_trust_domain_uri(uri).map_err(CaError::TrustDomain)?;
        let key = KeyPair::from_pem(key_pem).map_err(|e| CaError::UnusableKey(e.to_string()))?;
        if key.public_key_raw() != cert.public_key().subject_public_key.data.as_ref() {
            return Err(CaError::KeyMismatch);
        }
        let issuer =
            Issuer::from_ca_cert_der(&der, key).map_err(|e| CaError::CannotIssue(e.to_string()))?;
        Ok(Ca {
            trust_domain,
            issuer,
        })
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// Issues `host`'s certificate, valid for `validity`, with a fresh key.
    pub fn issue(&self, host: &str, validity: Duration) -> Result<Issued, IssueError> {
        let identity = HostIdentity::new(&self.trust_domain, host).map_err(IssueError::Identity)?;
        self.sign(&host_params(&identity, validity)?)
    }

    /// Signs arbitrary parameters with a fresh key (tests make wrong certificates with it).
    pub fn sign(&self, params: &CertificateParams) -> Result<Issued, IssueError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}
