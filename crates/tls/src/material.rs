//! The TLS material of one moment: the CA bundle, this host's certificate chain and key, read
//! from the `[tls]` files, checked, and turned into the rustls configs that every new handshake
//! uses. A reload builds a new `Material` and swaps it in whole (see `reload`).
//!
//! Session resumption is off on both sides: agents keep one long-lived connection per peer, so
//! resumption saves little, and it would let a session from before a trust-bundle change skip
//! the new bundle's checks.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::client::Resumption;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::NoServerSessionStorage;
use rustls::server::danger::ClientCertVerifier;
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, ClientConfig, RootCertStore, ServerConfig};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::identity::{self, HostIdentity};
use super::verify::{PeerClientVerifier, PeerServerVerifier};
use super::{ALPN_H2, ALPN_TCP};
use hostmesh_config::TlsSection;

/// Where the material comes from: the `[tls]` files, the trust domain and this host's name.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub trust_domain: String,
    pub host: String,
}

impl TlsFiles {
    pub fn new(tls: &TlsSection, host: &str) -> TlsFiles {
        TlsFiles {
            ca_file: tls.ca_file.clone(),
            cert_file: tls.cert_file.clone(),
            key_file: tls.key_file.clone(),
            trust_domain: tls.trust_domain.clone(),
            host: host.to_owned(),
        }
    }
}

/// One thing wrong with the TLS files, at the config key that names the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileProblem {
    /// `tls.ca_file`, `tls.cert_file` or `tls.key_file`.
    pub key: &'static str,
    pub message: String,
}

impl std::fmt::Display for FileProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Checked material and the configs built from it.
#[derive(Debug)]
pub struct Material {
    pub identity: HostIdentity,
    /// When this host's certificate expires.
    pub not_after: SystemTime,
    client_h2: Arc<ClientConfig>,
    client_tcp: Arc<ClientConfig>,
    server: Arc<ServerConfig>,
}

impl Material {
    /// Reads and checks the files: each readable, with PEM of the right kind; the key matching
    /// the certificate; the certificate chaining to `ca_file`, currently valid, usable as both
    /// client and server, and naming `spiffe://<trust_domain>/host/<host>`. Every problem found
    /// is returned.
    pub fn load(files: &TlsFiles) -> Result<Material, Vec<FileProblem>> {
        let mut problems = Vec::new();
        let mut problem = |key, message: String| problems.push(FileProblem { key, message });
        let ca = read(&files.ca_file).and_then(|pem| certs(&files.ca_file, &pem));
        let chain = read(&files.cert_file).and_then(|pem| certs(&files.cert_file, &pem));
        let key = read(&files.key_file).and_then(|pem| {
            PrivateKeyDer::from_pem_slice(&pem)
                .map_err(|e| format!("{}: no PEM private key: {e}", files.key_file.display()))
        });
        let (ca, chain, key) = match (ca, chain, key) {
            (Ok(ca), Ok(chain), Ok(key)) => (ca, chain, key),
            (ca, chain, key) => {
                for (k, r) in [
                    ("tls.ca_file", ca.err()),
                    ("tls.cert_file", chain.err()),
                    ("tls.key_file", key.err()),
                ] {
                    if let Some(m) = r {
                        problem(k, m);
                    }
                }
                return Err(problems);
            }
        };
        match Self::build(files, ca, chain, key) {
            Ok(m) => Ok(m),
            Err(p) => {
                problems.push(p);
                Err(problems)
            }
        }
    }

    fn build(
        files: &TlsFiles,
        ca: Vec<CertificateDer<'static>>,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Material, FileProblem> {
        let at = |key: &'static str| move |message: String| FileProblem { key, message };
        let ca_path = files.ca_file.display();
        let cert_path = files.cert_file.display();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        for (i, c) in ca.into_iter().enumerate() {
            roots
                .add(c)
                .map_err(|e| format!("{ca_path}: certificate {} is not a usable CA: {e}", i + 1))
                .map_err(at("tls.ca_file"))?;
        }
        let roots = Arc::new(roots);
        let signing_key = provider
            .key_provider
            .load_private_key(key.clone_key())
            .map_err(|e| {
                format!(
                    "{}: not a usable private key: {e}",
                    files.key_file.display()
                )
            })
            .map_err(at("tls.key_file"))?;
        // A key whose public half rustls cannot derive (`Unknown`) is checked by the first
        // handshake instead.
        if let Err(e) = CertifiedKey::new(chain.clone(), signing_key).keys_match()
            && !matches!(
                e,
                rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)
            )
        {
            return Err(at("tls.key_file")(format!(
                "{} is not the key of {cert_path} ({e})",
                files.key_file.display()
            )));
        }
        let server_verifier =
            PeerServerVerifier::new(roots.clone(), &files.trust_domain, provider.clone())
                .map_err(|e| e.to_string())
                .map_err(at("tls.ca_file"))?;
        let client_verifier = PeerClientVerifier::new(roots, &files.trust_domain, provider.clone())
            .map_err(|e| e.to_string())
            .map_err(at("tls.ca_file"))?;
        // Our own certificate must pass exactly what peers will check, both ways.
        let (leaf, intermediates) = chain
            .split_first()
            .ok_or_else(|| format!("{cert_path}: no certificate"))
            .map_err(at("tls.cert_file"))?;
        let identity = super::verify::leaf_identity(leaf, &files.trust_domain)
            .map_err(|e| format!("{cert_path}: {e}"))
            .map_err(at("tls.cert_file"))?;
        if identity.host() != files.host {
            return Err(at("tls.cert_file")(format!(
                "{cert_path} is {identity}, but agent.host is {:?}",
                files.host
            )));
        }
        let name = identity::server_name(&files.host)
            .map_err(|e| e.to_string())
            .map_err(at("tls.cert_file"))?;
        let now = UnixTime::now();
        server_verifier
            .verify_server_cert(leaf, intermediates, &name, &[], now)
            .and_then(|_| client_verifier.verify_client_cert(leaf, intermediates, now))
            .map_err(|e| describe(&e, files))
            .map_err(at("tls.cert_file"))?;
        let not_after = not_after(leaf).map_err(at("tls.cert_file"))?;

        let server_verifier = Arc::new(server_verifier);
        let client = |alpn: &[u8]| -> Result<Arc<ClientConfig>, FileProblem> {
            let mut c = ClientConfig::builder_with_provider(provider.clone())
                .with_protocol_versions(&[&rustls::version::TLS13])
                .map_err(|e| e.to_string())
                .map_err(at("tls.cert_file"))?
                .dangerous()
                .with_custom_certificate_verifier(server_verifier.clone())
                .with_client_auth_cert(chain.clone(), key.clone_key())
                .map_err(|e| format!("{cert_path}: {e}"))
                .map_err(at("tls.cert_file"))?;
            c.alpn_protocols = vec![alpn.to_vec()];
            c.resumption = Resumption::disabled();
            Ok(Arc::new(c))
        };
        let client_h2 = client(ALPN_H2)?;
        let client_tcp = client(ALPN_TCP)?;
        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| e.to_string())
            .map_err(at("tls.cert_file"))?
            .with_client_cert_verifier(Arc::new(client_verifier))
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|e| format!("{cert_path}: {e}"))
            .map_err(at("tls.cert_file"))?;
        server.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_TCP.to_vec()];
        server.session_storage = Arc::new(NoServerSessionStorage {});
        server.send_tls13_tickets = 0;
        Ok(Material {
            identity,
            not_after,
            client_h2,
            client_tcp,
            server: Arc::new(server),
        })
    }

    /// The client config for HTTP/2 to peers (ALPN `h2`).
    pub fn client_h2(&self) -> Arc<ClientConfig> {
        self.client_h2.clone()
    }

    /// The client config for opaque TCP to peers (ALPN `hostmesh-tcp/1`).
    pub fn client_tcp(&self) -> Arc<ClientConfig> {
        self.client_tcp.clone()
    }

    /// The inbound side's config: client certificates required, ALPN `h2` or `hostmesh-tcp/1`.
    pub fn server(&self) -> Arc<ServerConfig> {
        self.server.clone()
    }

    /// Seconds until this host's certificate expires (negative once it has).
    pub fn expiry_seconds(&self) -> f64 {
        match self.not_after.duration_since(SystemTime::now()) {
            Ok(left) => left.as_secs_f64(),
            Err(past) => -past.duration().as_secs_f64(),
        }
    }
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn certs(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: unparsable PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{}: no PEM certificate in the file",
            path.display()
        ));
    }
    Ok(certs)
}

fn not_after(leaf: &CertificateDer<'_>) -> Result<SystemTime, String> {
    let (_, x509) = X509Certificate::from_der(leaf).map_err(|e| e.to_string())?;
    let secs = x509.validity().not_after.timestamp();
    Ok(SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap_or(0)))
}

/// Says in the operator's terms why our own certificate would be refused by peers.
fn describe(e: &rustls::Error, files: &TlsFiles) -> String {
    let cert = files.cert_file.display();
    let ca = files.ca_file.display();
    match e {
        // BadSignature: an anchor with the issuer's name exists but did not sign it (another CA
        // of the same trust domain).
        rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer | CertificateError::BadSignature,
        ) => {
            format!("{cert} is not issued by a CA in {ca}")
        }
        rustls::Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        ) => format!("{cert} has expired; issue a new one (hostmesh ca issue)"),
        rustls::Error::InvalidCertificate(
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. },
        ) => format!("{cert} is not valid yet (check this host's clock)"),
        rustls::Error::InvalidCertificate(CertificateError::NotValidForName)
        | rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext { .. }) => {
            format!(
                "{cert} is not for host {:?} (its DNS SAN does not name agent.host)",
                files.host
            )
        }
        rustls::Error::InvalidCertificate(CertificateError::Other(other)) => {
            format!(
                "{cert}: {} (this host is spiffe://{}/host/{})",
                other.0, files.trust_domain, files.host
            )
        }
        other => format!("{cert} would be refused by peers: {other}"),
    }
}
