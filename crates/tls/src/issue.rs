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

use super::identity::{HostIdentity, uri_sans};

/// How long a mesh CA is valid. Rotating a CA means distributing a new bundle to every host, so
/// it is long; host certificates are the short-lived part.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 86_400);
/// Backdating of `not_before`, so a host whose clock is a little behind accepts a fresh cert.
const CLOCK_SKEW: Duration = Duration::from_secs(300);

/// A certificate and its private key, both PEM.
#[derive(Debug)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

/// Creates a self-signed mesh CA for `trust_domain`.
pub fn new_ca(trust_domain: &str) -> Result<Issued, String> {
    super::identity::check_trust_domain(trust_domain)?;
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| e.to_string())?;
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
    let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
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
) -> Result<CertificateParams, String> {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, identity.host());
    params.subject_alt_names = vec![
        uri_san(&identity.to_string())?,
        SanType::DnsName(
            identity
                .host()
                .try_into()
                .map_err(|e: rcgen::Error| e.to_string())?,
        ),
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

fn uri_san(uri: &str) -> Result<SanType, String> {
    Ok(SanType::URI(
        uri.try_into().map_err(|e: rcgen::Error| e.to_string())?,
    ))
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
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Ca, String> {
        let der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| format!("ca.pem holds no PEM certificate: {e}"))?;
        let (_, cert) = X509Certificate::from_der(&der)
            .map_err(|e| format!("ca.pem does not parse as X.509: {e}"))?;
        let is_ca = cert
            .basic_constraints()
            .ok()
            .flatten()
            .is_some_and(|bc| bc.value.ca);
        if !is_ca {
            return Err("ca.pem is not a CA certificate (basicConstraints CA is not set)".into());
        }
        let uris = uri_sans(&cert).map_err(|e| format!("ca.pem: {e}"))?;
        let [uri] = uris.as_slice() else {
            return Err(format!(
                "ca.pem must carry exactly one URI SAN spiffe://<trust_domain> (made by `hostmesh ca init`); it has {}",
                uris.len()
            ));
        };
        let trust_domain = HostIdentity::parse_trust_domain_uri(uri)?;
        let key = KeyPair::from_pem(key_pem)
            .map_err(|e| format!("ca.key is not a usable private key: {e}"))?;
        if key.public_key_raw() != cert.public_key().subject_public_key.data.as_ref() {
            return Err("ca.key is not the key of ca.pem".into());
        }
        let issuer = Issuer::from_ca_cert_der(&der, key)
            .map_err(|e| format!("ca.pem cannot issue certificates: {e}"))?;
        Ok(Ca {
            trust_domain,
            issuer,
        })
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// Issues `host`'s certificate, valid for `validity`, with a fresh key.
    pub fn issue(&self, host: &str, validity: Duration) -> Result<Issued, String> {
        let identity = HostIdentity::new(&self.trust_domain, host)?;
        self.sign(&host_params(&identity, validity)?)
    }

    /// Signs arbitrary parameters with a fresh key (tests make wrong certificates with it).
    pub fn sign(&self, params: &CertificateParams) -> Result<Issued, String> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| e.to_string())?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| e.to_string())?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}
