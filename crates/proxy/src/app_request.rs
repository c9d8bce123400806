//! What an app receives (docs/reference/http.md, "What the app receives"), decided in one place.
//! Four writers hand a request to an app: the lean HTTP/1 path and the inbound side's HTTP/1.1
//! leg write bytes (`outbound::h1::fields::write_for_app`, from the client's head or the peer's
//! fields), hyper's path to a same-host app and the inbound side's other legs edit a
//! `HeaderMap` ([`write_map`], whose hop-by-hop half is `headers::strip_hop_by_hop`, the same
//! rules in a map's form). All of them keep or drop fields as [`drops`] and [`te_for_app`] say,
//! and add the fields of [`Added`]; `tests/e2e/app_request.rs` checks they agree.

use http::HeaderMap;
use http::header::{FORWARDED, HOST, HeaderValue};

use hostmesh_wire::{self as wire, headers};

/// Whether a field of the incoming request stays behind: hop-by-hop by itself or because
/// `Connection` names it (`named_by_connection`), one of the agent's own `x-hostmesh-*` (the
/// agent writes the ones an app gets), or `forwarded` (the agent writes its own). `te` is
/// hop-by-hop too; [`te_for_app`] says what replaces it.
pub fn drops(name: &[u8], named_by_connection: bool) -> bool {
    headers::is_hop_by_hop(name)
        || named_by_connection
        || headers::is_ours(name)
        || name.eq_ignore_ascii_case(b"forwarded")
}

/// Whether a `te` value asks for trailers: then the app gets `te: trailers` (once, whatever the
/// client sent), which gRPC needs end to end.
pub fn te_for_app(value: &[u8]) -> bool {
    headers::visible_ascii(value).is_some_and(headers::te_wants_trailers)
}

/// The fields the agent adds for the app: who called, from where, and what is left of the
/// deadline (`x-hostmesh-timeout`, as `hostmesh_wire::timeout_value` writes it or as the peer
/// sent it). A gRPC app gets no `host`.
#[derive(Debug)]
pub struct Added<'a> {
    pub caller: &'a HeaderValue,
    pub forwarded: &'a HeaderValue,
    pub timeout: &'a HeaderValue,
    pub grpc: bool,
}

/// The lines the lean HTTP/1 path adds for `caller` and `forwarded` (made once per agent, as
/// [`write_map`] inserts the same two fields); the deadline follows per request as
/// `hostmesh_wire::timeout_line`.
pub fn h1_lines(caller: &HeaderValue, forwarded: &HeaderValue) -> Vec<u8> {
    let mut lines = Vec::new();
    for (name, value) in [(wire::CALLER, caller), (FORWARDED.as_str(), forwarded)] {
        lines.extend_from_slice(name.as_bytes());
        lines.extend_from_slice(b": ");
        lines.extend_from_slice(value.as_bytes());
        lines.extend_from_slice(b"\r\n");
    }
    lines
}

/// Makes `h` what the app receives: the incoming fields by the same rules as [`drops`] and
/// [`te_for_app`] (hop-by-hop ones by `headers::strip_hop_by_hop`, their form for a map), then
/// the fields of `added`, which replace any the request brought.
pub fn write_map(h: &mut HeaderMap, added: &Added<'_>) {
    headers::strip_hop_by_hop(h);
    // The rest of `drops`: every `x-hostmesh-*` (`forwarded` and the agent's own are replaced
    // below). A map cannot lose keys while they are iterated; a request carries a handful of
    // fields and a few to drop, so finding them one at a time costs less than collecting them.
    while let Some(name) = h
        .keys()
        .find(|k| headers::is_ours(k.as_str().as_bytes()))
        .cloned()
    {
        h.remove(name);
    }
    h.insert(wire::names::CALLER, added.caller.clone());
    h.insert(FORWARDED, added.forwarded.clone());
    h.insert(wire::names::TIMEOUT, added.timeout.clone());
    if added.grpc {
        h.remove(HOST);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use http::header::HeaderName;

    use super::*;

    fn map(fields: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in fields {
            h.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn the_app_gets_the_agents_fields_and_none_of_the_connections() {
        let mut h = map(&[
            ("host", "orders.mesh:8080"),
            ("connection", "x-drop, close"),
            ("x-drop", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers, deflate"),
            ("te", "trailers"),
            ("x-hostmesh-dst", "orders/1"),
            ("x-hostmesh-caller", "evil"),
            ("forwarded", "for=192.0.2.1"),
            ("x-forwarded-for", "192.0.2.1"),
            ("x-keep", "1"),
        ]);
        let caller = HeaderValue::from_static("web-01");
        let forwarded = HeaderValue::from_static("for=198.18.0.11");
        let timeout = wire::timeout_value(Duration::from_millis(1500));
        let added = Added {
            caller: &caller,
            forwarded: &forwarded,
            timeout: &timeout,
            grpc: false,
        };
        write_map(&mut h, &added);
        let fields: Vec<(String, String)> = h
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_owned()))
            .collect();
        let mut fields = fields;
        fields.sort();
        assert_eq!(
            fields,
            [
                ("forwarded", "for=198.18.0.11"),
                ("host", "orders.mesh:8080"),
                ("te", "trailers"),
                ("x-forwarded-for", "192.0.2.1"),
                ("x-hostmesh-caller", "web-01"),
                ("x-hostmesh-timeout", "1500ms"),
                ("x-keep", "1"),
            ]
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
        );
        let added = Added {
            grpc: true,
            ..added
        };
        write_map(&mut h, &added);
        assert!(h.get(HOST).is_none());
    }

    #[test]
    fn the_lean_lines_are_the_maps_fields() {
        let lines = h1_lines(
            &HeaderValue::from_static("web-01"),
            &HeaderValue::from_static("for=198.18.0.11"),
        );
        assert_eq!(
            lines,
            b"x-hostmesh-caller: web-01\r\nforwarded: for=198.18.0.11\r\n"
        );
    }
}
