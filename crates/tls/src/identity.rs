//! A host's identity in the mesh: the SPIFFE ID `spiffe://<trust_domain>/host/<host>` that its
//! certificate carries as its only URI SAN. Parsing, formatting and the name rules.

use std::fmt;

use rustls::pki_types::{DnsName, ServerName};
use x509_parser::prelude::{GeneralName, X509Certificate};

use hostmesh_config::names;

/// The URI scheme of every identity.
const SCHEME: &str = "spiffe://";

/// Every URI SAN of a certificate, where both a host's and the CA's identity live; an
/// unreadable subjectAltName extension is an error, not "none".
pub fn uri_sans<'a>(cert: &'a X509Certificate<'_>) -> Result<Vec<&'a str>, String> {
    let san = cert
        .subject_alternative_name()
        .map_err(|e| format!("bad subjectAltName: {e}"))?;
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
    pub fn new(trust_domain: &str, host: &str) -> Result<HostIdentity, String> {
        check_trust_domain(trust_domain)?;
        check_host(host)?;
        Ok(HostIdentity {
            trust_domain: trust_domain.to_owned(),
            host: host.to_owned(),
        })
    }

    /// Parses a URI SAN. Anything but exactly `spiffe://<td>/host/<host>` is refused: no port,
    /// query, fragment, user info, extra path segments or upper case.
    pub fn parse(uri: &str) -> Result<HostIdentity, String> {
        let rest = uri
            .strip_prefix(SCHEME)
            .ok_or_else(|| format!("{uri:?} is not a spiffe:// ID"))?;
        let (td, host) = rest.split_once(HOST_PATH).ok_or_else(|| {
            format!("{uri:?} does not name a host (spiffe://<domain>/host/<host>)")
        })?;
        HostIdentity::new(td, host).map_err(|e| format!("{uri:?}: {e}"))
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
    pub fn parse_trust_domain_uri(uri: &str) -> Result<String, String> {
        let td = uri
            .strip_prefix(SCHEME)
            .ok_or_else(|| format!("{uri:?} is not a spiffe:// trust domain"))?;
        check_trust_domain(td).map_err(|e| format!("{uri:?}: {e}"))?;
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
pub fn check_host(host: &str) -> Result<(), String> {
    names::host(host).map_err(|e| format!("host name {host:?} {e}"))?;
    server_name(host).map(|_| ())
}

/// `tls.trust_domain`'s rule.
pub fn check_trust_domain(td: &str) -> Result<(), String> {
    names::trust_domain(td).map_err(|e| format!("trust domain {td:?} {e}"))
}

/// The TLS server name a client sends when it connects to `host`'s agent.
pub fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    DnsName::try_from(host.to_owned())
        .map(ServerName::DnsName)
        .map_err(|_| {
            format!(
                "host name {host:?} is not a valid DNS name (labels of letters, digits and '-', \
                 not ending in '-', the last not all digits), so it cannot be a TLS server name"
            )
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
}
