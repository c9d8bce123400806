//! Real rustls handshakes (over in-memory pipes) between our configs and certificates made with
//! rcgen: the good pair is accepted; every certificate the identity rules forbid is refused, by
//! the side that verifies it.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, SanType};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, ServerConfig, SignatureScheme};
use time::OffsetDateTime;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::acceptor::HandshakeError;
use super::identity::{self, HostIdentity};
use super::issue::{self, Ca, Issued};
use super::material::{Material, TlsFiles};
use super::reload::TlsStore;
use super::{ALPN_H2, ALPN_TCP, Alpn};

const TD: &str = "hostmesh.local";
const YEAR: Duration = Duration::from_secs(365 * 86_400);

fn new_ca(td: &str) -> (Ca, String) {
    let made = issue::new_ca(td).unwrap();
    (
        Ca::from_pem(&made.cert_pem, &made.key_pem).unwrap(),
        made.cert_pem,
    )
}

/// Writes a host's files and loads them as its material.
fn material(dir: &Path, host: &str, ca_pem: &str, issued: &Issued) -> Material {
    Material::load(&write_files(dir, host, ca_pem, issued)).unwrap()
}

fn write_files(dir: &Path, host: &str, ca_pem: &str, issued: &Issued) -> TlsFiles {
    let files = TlsFiles {
        ca_file: dir.join(format!("{host}-ca.pem")),
        cert_file: dir.join(format!("{host}.pem")),
        key_file: dir.join(format!("{host}.key")),
        trust_domain: TD.to_owned(),
        host: host.to_owned(),
    };
    std::fs::write(&files.ca_file, ca_pem).unwrap();
    std::fs::write(&files.cert_file, &issued.cert_pem).unwrap();
    std::fs::write(&files.key_file, &issued.key_pem).unwrap();
    files
}

fn params(td: &str, host: &str) -> CertificateParams {
    issue::host_params(&HostIdentity::new(td, host).unwrap(), YEAR).unwrap()
}

fn chain_and_key(issued: &Issued) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    (
        vec![CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).unwrap()],
        PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes()).unwrap(),
    )
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client presenting `issued` that trusts any server: for testing what servers refuse.
fn raw_client(issued: &Issued, alpn: &[u8]) -> Arc<ClientConfig> {
    let (chain, key) = chain_and_key(issued);
    let mut c = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(DangerAcceptAnyServer))
        .with_client_auth_cert(chain, key)
        .unwrap();
    if !alpn.is_empty() {
        c.alpn_protocols = vec![alpn.to_vec()];
    }
    Arc::new(c)
}

/// A server presenting `issued` that asks for no client certificate: for testing what clients
/// refuse.
fn raw_server(issued: &Issued) -> Arc<ServerConfig> {
    let (chain, key) = chain_and_key(issued);
    let mut s = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    s.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_TCP.to_vec()];
    Arc::new(s)
}

#[derive(Debug)]
struct DangerAcceptAnyServer;

impl ServerCertVerifier for DangerAcceptAnyServer {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            m,
            c,
            d,
            &provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            m,
            c,
            d,
            &provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Runs one handshake over an in-memory pipe; returns each side's result (the server's with the
/// client's proven identity).
async fn handshake(
    client: Arc<ClientConfig>,
    server_host: &str,
    server: Arc<ServerConfig>,
) -> (Result<(), String>, Result<HostIdentity, String>) {
    let (c_io, s_io) = tokio::io::duplex(64 * 1024);
    let name = identity::server_name(server_host).unwrap();
    let client_side = async move {
        let mut s = TlsConnector::from(client)
            .connect(name, c_io)
            .await
            .map_err(|e| e.to_string())?;
        // TLS 1.3: the server checks the client's certificate after the client is done; a read
        // surfaces the server's alert.
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        s.write_all(b"x").await.map_err(|e| e.to_string())?;
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await.map_err(|e| e.to_string())?;
        Ok(())
    };
    let server_side = async move {
        let mut s = TlsAcceptor::from(server)
            .accept(s_io)
            .await
            .map_err(|e| e.to_string())?;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await.map_err(|e| e.to_string())?;
        s.write_all(b"y").await.map_err(|e| e.to_string())?;
        s.flush().await.map_err(|e| e.to_string())?;
        let leaf = s
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first().cloned());
        match leaf {
            Some(leaf) => super::verify::leaf_identity(&leaf, TD).map_err(|e| e.to_string()),
            None => Err("no client certificate".into()),
        }
    };
    let (c, s) = tokio::time::timeout(Duration::from_secs(10), async {
        tokio::join!(client_side, server_side)
    })
    .await
    .unwrap();
    (c, s)
}

struct Mesh {
    _dir: tempfile::TempDir,
    ca: Ca,
    ca_pem: String,
    /// The server host `a`, and a client host `b`, both good.
    a: Material,
    b: Material,
}

fn mesh() -> Mesh {
    let dir = tempfile::tempdir().unwrap();
    let (ca, ca_pem) = new_ca(TD);
    let a = material(dir.path(), "a", &ca_pem, &ca.issue("a", YEAR).unwrap());
    let b = material(dir.path(), "b", &ca_pem, &ca.issue("b", YEAR).unwrap());
    Mesh {
        _dir: dir,
        ca,
        ca_pem,
        a,
        b,
    }
}

/// The wrong certificates, each as a client `b` would present it or a server `a` would.
fn bad_certs(m: &Mesh, host: &str) -> Vec<(&'static str, Issued)> {
    let (other_ca, _) = new_ca(TD);
    let now = OffsetDateTime::now_utc();
    let mut expired = params(TD, host);
    expired.not_before = now - time::Duration::days(10);
    expired.not_after = now - time::Duration::days(1);
    let mut not_yet = params(TD, host);
    not_yet.not_before = now + time::Duration::days(1);
    not_yet.not_after = now + time::Duration::days(10);
    let mut two_uris = params(TD, host);
    two_uris.subject_alt_names.push(SanType::URI(
        format!("spiffe://{TD}/host/other")
            .as_str()
            .try_into()
            .unwrap(),
    ));
    let mut ca_leaf = params(TD, host);
    ca_leaf.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let mut no_uri = params(TD, host);
    no_uri
        .subject_alt_names
        .retain(|s| !matches!(s, SanType::URI(_)));
    // Right DNS SAN, but the SPIFFE ID names another host: only our check catches this one.
    let mut other_identity = params(TD, "c");
    other_identity
        .subject_alt_names
        .push(SanType::DnsName(host.try_into().unwrap()));
    vec![
        ("another CA", other_ca.issue(host, YEAR).unwrap()),
        ("expired", m.ca.sign(&expired).unwrap()),
        ("not yet valid", m.ca.sign(&not_yet).unwrap()),
        ("two URI SANs", m.ca.sign(&two_uris).unwrap()),
        ("CA=true leaf", m.ca.sign(&ca_leaf).unwrap()),
        ("no URI SAN", m.ca.sign(&no_uri).unwrap()),
        (
            "wrong trust domain",
            m.ca.sign(&params("other.td", host)).unwrap(),
        ),
        (
            "another host's identity",
            m.ca.sign(&other_identity).unwrap(),
        ),
    ]
}

#[tokio::test]
async fn the_good_pair_is_accepted_and_the_caller_identified() {
    let m = mesh();
    let (c, s) = handshake(m.b.client_h2(), "a", m.a.server()).await;
    assert_eq!(c, Ok(()));
    assert_eq!(s.unwrap().to_string(), "spiffe://hostmesh.local/host/b");
    let (c, s) = handshake(m.b.client_tcp(), "a", m.a.server()).await;
    assert_eq!(c, Ok(()));
    assert!(s.is_ok());
}

#[tokio::test]
async fn servers_refuse_bad_client_certificates() {
    let m = mesh();
    let mut no_client_auth = params(TD, "b");
    no_client_auth.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let mut cases = bad_certs(&m, "b");
    // A client is whoever its certificate says: "another host's identity" is that host, which
    // the next test shows; the server does not refuse it.
    cases.retain(|(what, _)| *what != "another host's identity");
    cases.push(("no clientAuth EKU", m.ca.sign(&no_client_auth).unwrap()));
    for (what, cert) in cases {
        let (c, s) = handshake(raw_client(&cert, ALPN_H2), "a", m.a.server()).await;
        assert!(s.is_err(), "{what}: the server accepted it");
        assert!(c.is_err(), "{what}: the client got through");
    }
    // The control: the same raw client with a good certificate gets in.
    let good = m.ca.issue("b", YEAR).unwrap();
    let (c, s) = handshake(raw_client(&good, ALPN_H2), "a", m.a.server()).await;
    assert_eq!(c, Ok(()));
    assert!(s.is_ok());
}

#[tokio::test]
async fn the_caller_is_the_host_its_certificate_names() {
    let m = mesh();
    let c_cert = m.ca.issue("c", YEAR).unwrap();
    let (c, s) = handshake(raw_client(&c_cert, ALPN_H2), "a", m.a.server()).await;
    assert_eq!(c, Ok(()));
    assert_eq!(s.unwrap().host(), "c");
}

#[tokio::test]
async fn clients_refuse_bad_server_certificates() {
    let m = mesh();
    let mut no_server_auth = params(TD, "a");
    no_server_auth.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let mut cases = bad_certs(&m, "a");
    cases.push(("no serverAuth EKU", m.ca.sign(&no_server_auth).unwrap()));
    // A good certificate of host b, when the client meant to reach a.
    cases.push(("the wrong host", m.ca.issue("b", YEAR).unwrap()));
    for (what, cert) in cases {
        let (c, _) = handshake(m.b.client_h2(), "a", raw_server(&cert)).await;
        assert!(c.is_err(), "{what}: the client accepted it");
    }
    let good = m.ca.issue("a", YEAR).unwrap();
    let (c, _) = handshake(m.b.client_h2(), "a", raw_server(&good)).await;
    assert_eq!(c, Ok(()));
}

#[tokio::test]
async fn unknown_alpn_is_refused_and_none_is_not_ours() {
    let m = mesh();
    let good = m.ca.issue("b", YEAR).unwrap();
    let (c, s) = handshake(raw_client(&good, b"http/1.1"), "a", m.a.server()).await;
    assert!(c.is_err() && s.is_err());

    // Without ALPN the TLS handshake completes, but the acceptor refuses the connection.
    let dir = tempfile::tempdir().unwrap();
    let files = write_files(dir.path(), "a", &m.ca_pem, &m.ca.issue("a", YEAR).unwrap());
    let store = TlsStore::load(files).unwrap();
    for (alpn, want) in [
        (&b""[..], None),
        (ALPN_H2, Some(Alpn::H2)),
        (ALPN_TCP, Some(Alpn::Tcp)),
    ] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = raw_client(&good, alpn);
        let dial = tokio::spawn(async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let name = identity::server_name("a").unwrap();
            let s = TlsConnector::from(client).connect(name, tcp).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            drop(s);
        });
        let (tcp, from) = listener.accept().await.unwrap();
        let got = super::acceptor::accept(&store, tcp, from).await;
        match want {
            None => assert!(matches!(
                got.unwrap_err(),
                HandshakeError::NoProtocol { from: f } if f == from
            )),
            Some(a) => {
                let got = got.unwrap();
                assert_eq!(got.alpn, a);
                assert_eq!(got.peer.host(), "b");
            }
        }
        dial.await.unwrap();
    }
}

#[test]
fn own_files_are_checked_with_clear_problems() {
    let m = mesh();
    let dir = tempfile::tempdir().unwrap();
    let good = m.ca.issue("a", YEAR).unwrap();
    let files = write_files(dir.path(), "a", &m.ca_pem, &good);
    assert!(Material::load(&files).is_ok());
    let problems = |f: &TlsFiles| {
        Material::load(f)
            .unwrap_err()
            .into_iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    };

    let mut missing = files.clone();
    missing.key_file = dir.path().join("nope.key");
    missing.ca_file = dir.path().join("nope.pem");
    let text = problems(&missing);
    assert!(text.contains("tls.ca_file: cannot read"), "{text}");
    assert!(text.contains("tls.key_file: cannot read"), "{text}");

    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not pem at all\n").unwrap();
    let mut unparsable = files.clone();
    unparsable.cert_file = garbage.clone();
    assert!(
        problems(&unparsable).contains("tls.cert_file: "),
        "no PEM certificate"
    );

    let other_key = dir.path().join("other.key");
    std::fs::write(&other_key, m.ca.issue("a", YEAR).unwrap().key_pem).unwrap();
    let mut mismatched = files.clone();
    mismatched.key_file = other_key;
    assert!(problems(&mismatched).contains("is not the key of"));

    let (_, other_ca_pem) = new_ca(TD);
    let other_ca = dir.path().join("other-ca.pem");
    std::fs::write(&other_ca, other_ca_pem).unwrap();
    let mut foreign = files.clone();
    foreign.ca_file = other_ca;
    let text = problems(&foreign);
    assert!(text.contains("is not issued by a CA in"), "{text}");

    let mut wrong_host = files.clone();
    wrong_host.host = "b".into();
    assert!(problems(&wrong_host).contains("but agent.host is \"b\""));

    let mut wrong_td = files.clone();
    wrong_td.trust_domain = "other.td".into();
    assert!(problems(&wrong_td).contains("not ours"));
}

#[tokio::test]
async fn reload_takes_good_files_and_keeps_the_old_on_bad_ones() {
    let m = mesh();
    let dir = tempfile::tempdir().unwrap();
    let first = m.ca.issue("a", YEAR).unwrap();
    let files = write_files(dir.path(), "a", &m.ca_pem, &first);
    let store = TlsStore::load(files.clone()).unwrap();
    let before = store.expiry_seconds();
    assert!((before - YEAR.as_secs_f64()).abs() < 60.0);

    std::fs::write(&files.cert_file, "garbage").unwrap();
    assert!(!store.reload("test"));
    assert_eq!(store.current().not_after, store.current().not_after);
    assert!((store.expiry_seconds() - before).abs() < 5.0);

    let shorter = m.ca.issue("a", Duration::from_secs(86_400)).unwrap();
    write_files(dir.path(), "a", &m.ca_pem, &shorter);
    assert!(store.reload("test"));
    assert!(store.expiry_seconds() < 86_401.0);
    // The new material serves handshakes.
    let (c, s) = handshake(m.b.client_h2(), "a", store.current().server()).await;
    assert_eq!(c, Ok(()));
    assert!(s.is_ok());
}

#[test]
fn issued_certificates_have_the_promised_shape() {
    let (ca, _) = new_ca("example.org");
    assert_eq!(ca.trust_domain(), "example.org");
    let issued = ca.issue("web-01", YEAR).unwrap();
    let der = CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).unwrap();
    assert_eq!(
        super::verify::leaf_identity(&der, "example.org")
            .unwrap()
            .to_string(),
        "spiffe://example.org/host/web-01"
    );
    assert!(ca.issue("Web", YEAR).is_err());
    assert!(ca.issue("web-", YEAR).is_err());
    // A CA directory whose key is not the certificate's is refused.
    let other = issue::new_ca("example.org").unwrap();
    let made = issue::new_ca("example.org").unwrap();
    assert!(matches!(
        Ca::from_pem(&made.cert_pem, &other.key_pem),
        Err(issue::CaError::KeyMismatch)
    ));
    assert!(matches!(
        ca.issue("Web", YEAR),
        Err(issue::IssueError::Identity(_))
    ));
}
