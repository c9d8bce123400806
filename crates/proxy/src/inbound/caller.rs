//! Who is calling: the one place the inbound side learns the calling host, once per request
//! (HTTP) or connection (TCP), for the access policy and the app's `x-hostmesh-caller`.
//!
//! With `tls.mode = "disabled"` this is what the peer agent claims (`x-hostmesh-src`, or the
//! TCP preface's last field): anyone who can reach the inbound port can claim any host, so policy
//! means little there. With mTLS the host named in the client certificate replaces the claim.

use std::sync::Arc;

use http::HeaderMap;

use hostmesh_config::names;
use hostmesh_wire::{self as wire, TcpPreface};

/// The calling host of an HTTP request from a peer agent: the certificate's host (`proven`),
/// else (TLS disabled) the claimed `x-hostmesh-src`; `None` when unknown.
pub(crate) fn of_request(proven: Option<&Arc<str>>, headers: &HeaderMap) -> Option<String> {
    match proven {
        Some(host) => Some(host.to_string()),
        None => valid(headers.get(wire::names::SRC)?.to_str().ok()?),
    }
}

/// The calling host of a TCP connection from a peer agent, likewise from the certificate or
/// (TLS disabled) the preface; `None` when unknown.
pub(crate) fn of_preface(proven: Option<&Arc<str>>, preface: &TcpPreface) -> Option<String> {
    match proven {
        Some(host) => Some(host.to_string()),
        None => valid(preface.caller.as_deref()?),
    }
}

/// A claimed name that is not a valid host name is no identity at all.
fn valid(host: &str) -> Option<String> {
    names::host(host).ok().map(|()| host.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_valid_host_names_identify_a_caller() {
        let mut h = HeaderMap::new();
        assert_eq!(of_request(None, &h), None);
        h.insert(wire::SRC, "web-01.eu".parse().expect("value"));
        assert_eq!(of_request(None, &h).as_deref(), Some("web-01.eu"));
        h.insert(wire::SRC, "Web 01".parse().expect("value"));
        assert_eq!(of_request(None, &h), None);
    }

    #[test]
    fn a_certificate_overrides_what_the_peer_claims() {
        let mut h = HeaderMap::new();
        h.insert(wire::SRC, "admin".parse().expect("value"));
        let proven: Arc<str> = Arc::from("web-01");
        assert_eq!(of_request(Some(&proven), &h).as_deref(), Some("web-01"));
    }
}
