//! A host's identity in the mesh: the SPIFFE ID `spiffe://<trust_domain>/host/<host>` that its
//! certificate carries as its only URI SAN. Parsing, formatting and the name rules.

use std::fmt;

use rustls::pki_types::{DnsName, ServerName};
use x509_parser::error::X509Error;
use x509_parser::prelude::{GeneralName, X509Certificate};

use hostmesh_config::names::{self, NameError};

/// The URI scheme of every identity.
const SCHEME: &str = "spiffe://";

/// Why a name, a URI or a certificate's SANs make no host identity. Nothing here is worth a
/// retry: the caller refuses the certificate, or reports the name to whoever must change it.
/// An inner error is part of the message, so it is not also a `source`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum IdentityError {
    /// The certificate's subjectAltName extension does not parse: the certificate is broken.
    #[error("bad subjectAltName: {0}")]
    BadSubjectAltName(X509Error),
    #[error("{uri:?} is not a spiffe:// ID")]
    NotSpiffeId { uri: String },
    /// A SPIFFE ID of something other than a host (`spiffe://<td>/workload/…`).
    #[error("{uri:?} does not name a host (spiffe://<domain>/host/<host>)")]
    NotAHost { uri: String },
    #[error("{uri:?} is not a spiffe:// trust domain")]
    NotSpiffeTrustDomain { uri: String },
    /// A URI of the right shape whose trust domain or host breaks its rule.
    #[error("{uri:?}: {error}")]
    InUri {
        uri: String,
        error: Box<IdentityError>,
    },
    /// The host name breaks `agent.host`'s rule.
    #[error("host name {host:?} {error}")]
    Host { host: String, error: NameError },
    /// The trust domain breaks `tls.trust_domain`'s rule.
    #[error("trust domain {trust_domain:?} {error}")]
    TrustDomain {
        trust_domain: String,
        error: NameError,
    },
    /// The host name passes `agent.host`'s rule but is no DNS name (`web-`, `a..b`, `1.2`), so
    /// it can be neither a certificate's DNS SAN nor the SNI a peer sends.
    #[error(
        "host name {host:?} is not a valid DNS name (labels of letters, digits and '-', not \
         ending in '-', the last not all digits), so it cannot be a TLS server name"
    )]
    NotDnsName { host: String },
}

impl IdentityError {
    /// Puts `uri` before an error about one of its parts.
    fn in_uri(uri: &str) -> impl FnOnce(IdentityError) -> IdentityError {
        move |error| IdentityError::InUri {
            uri: uri.to_owned(),
            error: Box::new(error),
        }
    }
}

/// Every URI SAN of a certificate, where both a host's and the CA's identity live; an
/// unreadable subjectAltName extension is an error, not "none".
pub fn uri_sans<'a>(cert: &'a X509Certificate<'_>) -> Result<Vec<&'a str>, IdentityError> {
    let san = cert
        .subject_alternative_name()
        .map_err(IdentityError::BadSubjectAltName)?;
    Ok(san
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::URI(u) => Some(*u),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default())
}
/// The path segment that says the ID names a host (other kinds may follow, e.g. workloads).
const HOST_PATH: &str = "/host/";

/// `spiffe://<trust_domain>/host/<host>`, both parts validated.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostIdentity {
    trust_domain: String,
    host: String,
}

impl HostIdentity {
    /// An identity from its parts, each checked with the config's rules plus the TLS rule that a
    /// host name must also be a DNS name (it is the certificate's DNS SAN and the SNI peers send).
    pub fn new(trust_domain: &str, host: &str) -> Result<HostIdentity, IdentityError> {
        check_trust_domain(trust_domain)?;
        check_host(host)?;
        Ok(HostIdentity {
            trust_domain: trust_domain.to_owned(),
            host: host.to_owned(),
        })
    }

    /// Parses a URI SAN. Anything but exactly `spiffe://<td>/host/<host>` is refused: no port,
    /// query, fragment, user info, extra path segments or upper case.
    pub fn parse(uri: &str) -> Result<HostIdentity, IdentityError> {
        let rest = uri
            .strip_prefix(SCHEME)
            .ok_or_else(|| IdentityError::NotSpiffeId {
                uri: uri.to_owned(),
            })?;
        let (td, host) = rest
            .split_once(HOST_PATH)
            .ok_or_else(|| IdentityError::NotAHost {
                uri: uri.to_owned(),
            })?;
        HostIdentity::new(td, host).map_err(IdentityError::in_uri(uri))
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    /// The URI SAN of the trust domain itself, `spiffe://<td>`, which the mesh CA certificate
    /// carries so that `ca issue` can recover the trust domain from the CA directory.
    pub fn trust_domain_uri(trust_domain: &str) -> String {
        format!("{SCHEME}{trust_domain}")
    }

    /// The trust domain named by a CA's `spiffe://<td>` URI SAN.
    pub fn parse_trust_domain_uri(uri: &str) -> Result<String, IdentityError> {
        let td = uri
            .strip_prefix(SCHEME)
            .ok_or_else(|| IdentityError::NotSpiffeTrustDomain {
                uri: uri.to_owned(),
            })?;
        check_trust_domain(td).map_err(IdentityError::in_uri(uri))?;
        Ok(td.to_owned())
    }
}

impl fmt::Display for HostIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME}{}{HOST_PATH}{}", self.trust_domain, self.host)
    }
}

/// `agent.host`'s rule, and a valid DNS name (`web-`, `a..b` or an all-numeric last label pass
/// the first but cannot be a certificate's DNS SAN or a TLS server name).
pub fn check_host(host: &str) -> Result<(), IdentityError> {
    names::host(host).map_err(|error| IdentityError::Host {
        host: host.to_owned(),
        error,
    })?;
    server_name(host).map(|_| ())
}

/// `tls.trust_domain`'s rule.
pub fn check_trust_domain(td: &str) -> Result<(), IdentityError> {
    names::trust_domain(td).map_err(|error| IdentityError::TrustDomain {
        trust_domain: td.to_owned(),
        error,
    })
}

/// The TLS server name a client sends when it connects to `host`'s agent.
pub fn server_name(host: &str) -> Result<ServerName<'static>, IdentityError> {
    DnsName::try_from(host.to_owned())
        .map(ServerName::DnsName)
        .map_err(|_| IdentityError::NotDnsName {
            host: host.to_owned(),
        })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn round_trips() {
        let id = HostIdentity::new("hostmesh.local", "web-01").unwrap();
        assert_eq!(id.to_string(), "spiffe://hostmesh.local/host/web-01");
        assert_eq!(HostIdentity::parse(&id.to_string()).unwrap(), id);
        assert_eq!(
            HostIdentity::parse_trust_domain_uri("spiffe://hostmesh.local").unwrap(),
            "hostmesh.local"
        );
    }

    #[test]
    fn refuses_malformed_ids() {
        for bad in [
            "https://hostmesh.local/host/web-01",
            "spiffe://hostmesh.local/web-01",
            "spiffe://hostmesh.local/host/web-01/x",
            "spiffe://hostmesh.local/host/Web-01",
            "spiffe://hostmesh.local/host/",
            "spiffe:///host/web-01",
            "spiffe://hostmesh.local:443/host/web-01",
            "spiffe://user@hostmesh.local/host/web-01",
            "spiffe://hostmesh.local/host/web-01?x=1",
            "spiffe://hostmesh.local/host/web-",
            "spiffe://hostmesh.local/host/1.2",
            "spiffe://hostmesh.local/workload/web-01",
        ] {
            assert!(HostIdentity::parse(bad).is_err(), "{bad}");
        }
        assert!(HostIdentity::parse_trust_domain_uri("spiffe://Mesh").is_err());
        assert!(HostIdentity::parse_trust_domain_uri("spiffe://mesh/x").is_err());
    }

    /// The messages end up in `check-config`, `hostmesh ca` errors and handshake logs.
    #[test]
    fn messages() {
        let parse = |uri: &str| HostIdentity::parse(uri).unwrap_err().to_string();
        assert_eq!(
            parse("https://a/host/b"),
            r#""https://a/host/b" is not a spiffe:// ID"#
        );
        assert_eq!(
            parse("spiffe://mesh/workload/b"),
            r#""spiffe://mesh/workload/b" does not name a host (spiffe://<domain>/host/<host>)"#
        );
        assert_eq!(
            parse("spiffe://mesh/host/Web"),
            r#""spiffe://mesh/host/Web": host name "Web" has the character 'W'; a host name is lowercase letters, digits, '.' and '-'"#
        );
        assert_eq!(
            parse("spiffe://me sh/host/web"),
            r#""spiffe://me sh/host/web": trust domain "me sh" has the character ' '; a trust domain is lowercase letters, digits, '.', '-' and '_'"#
        );
        assert_eq!(
            parse("spiffe://mesh/host/web-"),
            r#""spiffe://mesh/host/web-": host name "web-" is not a valid DNS name (labels of letters, digits and '-', not ending in '-', the last not all digits), so it cannot be a TLS server name"#
        );
        assert_eq!(
            HostIdentity::parse_trust_domain_uri("mesh")
                .unwrap_err()
                .to_string(),
            r#""mesh" is not a spiffe:// trust domain"#
        );
        assert_eq!(
            HostIdentity::parse_trust_domain_uri("spiffe://Mesh")
                .unwrap_err()
                .to_string(),
            r#""spiffe://Mesh": trust domain "Mesh" has the character 'M'; a trust domain is lowercase letters, digits, '.', '-' and '_'"#
        );
    }
}
