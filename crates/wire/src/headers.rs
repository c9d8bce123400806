//! Header hygiene on both hops: hop-by-hop headers never cross a proxy (RFC 9110 §7.6.1), and
//! `x-hostmesh-*` headers are ours: a client may only set the ones docs/reference/http.md lets it set.

use http::HeaderMap;
use http::header::{
    CONNECTION, HeaderName, HeaderValue, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE, TRAILER,
    TRANSFER_ENCODING, UPGRADE,
};

use crate as wire;

/// Headers that describe one connection, not the message, as names made at compile time (a
/// `&str` key is parsed again on every map operation).
const HOP_BY_HOP: [HeaderName; 9] = [
    CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    PROXY_AUTHENTICATE,
    PROXY_AUTHORIZATION,
    TE,
    TRAILER,
    TRANSFER_ENCODING,
    UPGRADE,
];

/// Whether `name` (any case) is hop-by-hop by itself, whatever `Connection` says.
pub fn is_hop_by_hop(name: &[u8]) -> bool {
    HOP_BY_HOP
        .iter()
        .any(|h| h.as_str().as_bytes().eq_ignore_ascii_case(name))
}

/// The header names a `Connection` value makes hop-by-hop: its tokens other than the
/// connection options `close` and `keep-alive`, and other than the framing fields: the lean path
/// relays a body by its `Content-Length` or `Transfer-Encoding`, so dropping one because
/// `Connection` named it let the next hop read the body as the next message (found by the
/// http1_request_head and http1_response_head fuzz targets' round trips).
pub fn connection_named(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|t| {
        !t.is_empty()
            && !["close", "keep-alive", "content-length", "transfer-encoding"]
                .iter()
                .any(|option| t.eq_ignore_ascii_case(option))
    })
}

/// Whether a `TE` value asks for trailers: then `te: trailers` is passed on (gRPC needs it end
/// to end) while the rest of `TE` is hop-by-hop.
pub fn te_wants_trailers(value: &str) -> bool {
    has_token(value, "trailers")
}

/// Whether a comma-separated header value has `token` (any case).
pub fn has_token(value: &str, token: &str) -> bool {
    value
        .split(',')
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Whether a header name (any case) starts with `x-hostmesh-`: one of the agent's own.
pub fn is_ours(name: &[u8]) -> bool {
    name.len() >= PREFIX.len() && name[..PREFIX.len()].eq_ignore_ascii_case(PREFIX.as_bytes())
}

/// Whether a client-sent header is one of ours that clients may not set (docs/reference/http.md: only
/// `x-hostmesh-timeout` and `x-hostmesh-retryable` may come from a client).
pub fn is_client_internal(name: &[u8]) -> bool {
    name.len() > PREFIX.len()
        && is_ours(name)
        && !name.eq_ignore_ascii_case(wire::TIMEOUT.as_bytes())
        && !name.eq_ignore_ascii_case(wire::RETRYABLE.as_bytes())
}

const PREFIX: &str = "x-hostmesh-";

/// Removes hop-by-hop headers, including those the `Connection` header names. `te: trailers` is
/// kept: gRPC needs it end to end.
///
/// Called twice per proxied request; most messages carry none of these and most of the rest only
/// `connection: keep-alive`, so one pass over the (few) names present decides, and only names
/// that are there are removed.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let mut present = 0u16;
    for k in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| h == k) {
            present |= 1 << i;
        }
    }
    if present == 0 {
        return;
    }
    let has = |name: &HeaderName| {
        HOP_BY_HOP
            .iter()
            .position(|h| h == name)
            .is_some_and(|i| present & (1 << i) != 0)
    };
    // `close` and `keep-alive` are connection options; any other token names a header that is
    // hop-by-hop for this message.
    let named: Vec<HeaderName> = if has(&CONNECTION) {
        let values = headers.get_all(CONNECTION);
        named_by_connection(values.iter().map(HeaderValue::as_bytes))
            .into_iter()
            .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
            .collect()
    } else {
        Vec::new()
    };
    // Any `te` field asking for trailers keeps one `te: trailers`, as the lean path writes it.
    let keep_te = has(&TE)
        && headers
            .get_all(TE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(te_wants_trailers);
    for name in named {
        headers.remove(name);
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(name);
        }
    }
    if keep_te {
        headers.insert(TE, HeaderValue::from_static("trailers"));
    }
}

/// Removes every `x-hostmesh-*` header a client sent except the ones clients may set.
pub fn strip_client_internal(headers: &mut HeaderMap) {
    if !headers.keys().any(|k| k.as_str().starts_with(PREFIX)) {
        return;
    }
    let internal: Vec<HeaderName> = headers
        .keys()
        .filter(|k| is_client_internal(k.as_str().as_bytes()))
        .cloned()
        .collect();
    for name in internal {
        headers.remove(name);
    }
}

/// Read access to a request's headers, in a `HeaderMap` or still in the bytes of an HTTP/1
/// head (the lean path, `outbound::h1`), so that route rules and deadlines are decided by one
/// piece of code for both.
pub trait HeaderLookup {
    /// Whether some value of `name` (lowercase) satisfies `test`.
    fn any_value(&self, name: &str, test: &mut dyn FnMut(&[u8]) -> bool) -> bool;

    /// The first value of `name` (lowercase), if it is visible ASCII.
    fn first_str(&self, name: &str) -> Option<&str>;
}

impl HeaderLookup for HeaderMap {
    fn any_value(&self, name: &str, test: &mut dyn FnMut(&[u8]) -> bool) -> bool {
        self.get_all(name).iter().any(|v| test(v.as_bytes()))
    }

    fn first_str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| v.to_str().ok())
    }
}

/// The field names a message's `Connection` values make hop-by-hop ([`connection_named`]), from
/// each value in turn; a value that is not visible ASCII names none. Whether the values come from
/// a map or an HTTP/1 head, this decides.
pub fn named_by_connection<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Vec<&'a str> {
    values
        .into_iter()
        .filter_map(visible_ascii)
        .flat_map(connection_named)
        .collect()
}

/// What `HeaderValue::to_str` accepts: visible ASCII, spaces and tabs.
pub fn visible_ascii(value: &[u8]) -> Option<&str> {
    value
        .iter()
        .all(|&b| b == b'\t' || (0x20..0x7f).contains(&b))
        .then(|| std::str::from_utf8(value).ok())
        .flatten()
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
    fn a_plain_keep_alive_response_loses_only_its_connection_headers() {
        let mut h = map(&[
            ("connection", "keep-alive"),
            ("keep-alive", "timeout=5"),
            ("content-length", "3"),
            ("server", "nginx"),
        ]);
        strip_hop_by_hop(&mut h);
        let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        left.sort();
        assert_eq!(left, ["content-length", "server"]);
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
