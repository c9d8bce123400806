//! Header hygiene on both hops: hop-by-hop headers never cross a proxy (RFC 9110 §7.6.1), and
//! `x-hostmesh-*` headers are ours: a client may only set the ones SPEC lets it set.

use http::HeaderMap;
use http::header::{CONNECTION, HeaderName, HeaderValue, TE, TRANSFER_ENCODING, UPGRADE};

use crate::wire;

/// Headers that describe one connection, not the message.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
];

/// Removes hop-by-hop headers, including those the `Connection` header names. `te: trailers` is
/// kept: gRPC needs it end to end.
///
/// Called twice per proxied request; most messages carry none of these, so one pass over the
/// (few) names present decides, instead of a hashed removal per hop-by-hop name.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let present = headers
        .keys()
        .any(|k| HOP_BY_HOP.contains(&k.as_str()) || *k == UPGRADE);
    if !present {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    let keep_te = headers
        .get(TE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
        });
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    headers.remove(UPGRADE);
    headers.remove(TRANSFER_ENCODING);
    if keep_te {
        headers.insert(TE, HeaderValue::from_static("trailers"));
    }
}

/// Removes every `x-hostmesh-*` header a client sent except the ones clients may set.
pub fn strip_client_internal(headers: &mut HeaderMap) {
    if !headers
        .keys()
        .any(|k| k.as_str().starts_with("x-hostmesh-"))
    {
        return;
    }
    let internal: Vec<HeaderName> = headers
        .keys()
        .filter(|k| {
            let k = k.as_str();
            k.starts_with("x-hostmesh-") && k != wire::TIMEOUT && k != wire::RETRYABLE
        })
        .cloned()
        .collect();
    for name in internal {
        headers.remove(name);
    }
}

/// Removes the agent-to-agent headers before a request reaches the app.
pub fn strip_wire(headers: &mut HeaderMap) {
    for name in [wire::DST, wire::SRC, wire::VERSION_HEADER, wire::RETRYABLE] {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let mut h = map(&[
            ("connection", "close, x-private"),
            ("x-private", "1"),
            ("keep-alive", "5"),
            ("te", "trailers, gzip"),
            ("upgrade", "h2c"),
            ("accept", "*/*"),
        ]);
        strip_hop_by_hop(&mut h);
        let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["accept", "te"]);
        assert_eq!(h["te"], "trailers");
    }

    #[test]
    fn only_allowed_internal_headers_survive_from_clients() {
        let mut h = map(&[
            ("x-hostmesh-timeout", "250ms"),
            ("x-hostmesh-retryable", "true"),
            ("x-hostmesh-dst", "evil/1"),
            ("x-hostmesh-caller", "admin"),
            ("x-other", "1"),
        ]);
        strip_client_internal(&mut h);
        let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        left.sort();
        assert_eq!(
            left,
            ["x-hostmesh-retryable", "x-hostmesh-timeout", "x-other"]
        );
    }
}
