//! Who is calling: the one place the inbound side learns the calling host, once per request
//! (HTTP) or connection (TCP), for the access policy and the app's `x-hostmesh-caller`.
//!
//! With `tls.mode = "disabled"` this is what the peer agent claims (`x-hostmesh-src`, or the
//! TCP preface's last field): anyone who can reach the inbound port can claim any host, so policy
//! means little there. With mTLS the host named in the client certificate replaces the claim.

use http::HeaderMap;

use crate::config::names;
use crate::wire::{self, TcpPreface};

/// The calling host of an HTTP request from a peer agent; `None` when unknown.
pub(super) fn of_request(headers: &HeaderMap) -> Option<String> {
    valid(headers.get(wire::SRC)?.to_str().ok()?)
}

/// The calling host of a TCP connection from a peer agent; `None` when unknown.
pub(super) fn of_preface(preface: &TcpPreface) -> Option<String> {
    valid(preface.caller.as_deref()?)
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
        assert_eq!(of_request(&h), None);
        h.insert(wire::SRC, "web-01.eu".parse().expect("value"));
        assert_eq!(of_request(&h).as_deref(), Some("web-01.eu"));
        h.insert(wire::SRC, "Web 01".parse().expect("value"));
        assert_eq!(of_request(&h), None);
    }
}
