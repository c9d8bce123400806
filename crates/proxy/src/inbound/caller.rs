//! Who is calling: the one place the inbound side learns the calling host, once per request
//! (HTTP) or connection (TCP), for the access policy and the app's `x-hostmesh-caller`.
//!
//! With `tls.mode = "disabled"` this is what the peer agent claims (`x-hostmesh-src`, or the
//! TCP preface's last field): anyone who can reach the inbound port can claim any host, so policy
//! means little there. With mTLS the host named in the client certificate replaces the claim.

use std::net::IpAddr;
use std::sync::Arc;

use http::header::HeaderValue;

use hostmesh_config::names;
use hostmesh_wire::TcpPreface;

/// The caller of the requests on one peer connection, as far as it is fixed by the connection:
/// the host its certificate proves (mTLS) and the peer's address, each already the app's
/// `x-hostmesh-caller` value, so that a request costs no more than checking a claim.
#[derive(Debug)]
pub(crate) struct Callers {
    proven: Option<HeaderValue>,
    address: HeaderValue,
}

/// The caller of one request: `value` is what the app is told, `known` whether it names a host
/// (else it is the peer's address).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Caller {
    value: HeaderValue,
    known: bool,
}

impl Caller {
    /// The calling host, as the access policy checks it; `None` when unknown.
    pub(crate) fn host(&self) -> Option<&str> {
        self.known.then(|| self.value.to_str().ok()).flatten()
    }

    /// The app's `x-hostmesh-caller`: the host, else the peer's address.
    pub(crate) fn value(&self) -> &HeaderValue {
        &self.value
    }
}

impl Callers {
    pub(crate) fn new(proven: Option<&str>, peer: IpAddr) -> Callers {
        let address =
            HeaderValue::from_str(&peer.to_string()).unwrap_or(HeaderValue::from_static("unknown"));
        // A proven name is a checked host name, so always a valid value; were it not, the
        // connection still has a proven caller (never a claim), just an unnamed one.
        let proven = proven
            .map(|host| HeaderValue::from_str(host).unwrap_or(HeaderValue::from_static("unknown")));
        Callers { proven, address }
    }

    /// The caller of a request that `claimed` an `x-hostmesh-src`: the certificate's host, else
    /// (TLS disabled) the claim when it is a host name, else unknown.
    pub(crate) fn of_request(&self, claimed: Option<&HeaderValue>) -> Caller {
        let host = self
            .proven
            .as_ref()
            .or_else(|| claimed.filter(|v| v.to_str().ok().and_then(valid).is_some()));
        match host {
            Some(value) => Caller {
                value: value.clone(),
                known: true,
            },
            None => Caller {
                value: self.address.clone(),
                known: false,
            },
        }
    }
}

/// The calling host of a TCP connection from a peer agent, likewise from the certificate or
/// (TLS disabled) the preface; `None` when unknown.
pub(crate) fn of_preface(proven: Option<&Arc<str>>, preface: &TcpPreface) -> Option<String> {
    match proven {
        Some(host) => Some(host.to_string()),
        None => valid(preface.caller.as_deref()?).map(str::to_owned),
    }
}

/// A claimed name that is not a valid host name is no identity at all.
fn valid(host: &str) -> Option<&str> {
    names::host(host).ok().map(|()| host)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(198, 18, 0, 12));

    #[test]
    fn only_valid_host_names_identify_a_caller() {
        let callers = Callers::new(None, PEER);
        let unknown = callers.of_request(None);
        assert_eq!(
            (unknown.host(), unknown.value().as_bytes()),
            (None, &b"198.18.0.12"[..])
        );
        let claimed = callers.of_request(Some(&HeaderValue::from_static("web-01.eu")));
        assert_eq!(
            (claimed.host(), claimed.value().as_bytes()),
            (Some("web-01.eu"), &b"web-01.eu"[..])
        );
        let refused = callers.of_request(Some(&HeaderValue::from_static("Web 01")));
        assert_eq!(refused, unknown);
    }

    #[test]
    fn a_certificate_overrides_what_the_peer_claims() {
        let callers = Callers::new(Some("web-01"), PEER);
        let caller = callers.of_request(Some(&HeaderValue::from_static("admin")));
        assert_eq!(
            (caller.host(), caller.value().as_bytes()),
            (Some("web-01"), &b"web-01"[..])
        );
    }
}
