//! Entry points for the fuzz targets in `fuzz/` and for the corpus replay test
//! (`agent/tests/fuzz_corpus.rs`): one function per target, each feeding arbitrary bytes to the
//! parser the agent really runs and asserting what can be checked without a network.
//!
//! They live in the library rather than in the fuzz crate so that they reach `pub(crate)`
//! parsers without widening them, and so that `cargo test` on stable replays every corpus file
//! and every fixed crash input through exactly the code the fuzzer ran.
//!
//! Each function panics when an assertion fails; on well-formed and malformed input alike it must
//! otherwise return quietly.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use hostmesh_registrar::catalog::{Persisted, State};
use hostmesh_registrar::keys::Layout;
use http::{HeaderMap, HeaderName, HeaderValue};
use ipnet::Ipv4Net;
use rustls::pki_types::CertificateDer;
use tokio::time::Instant;

use crate::outbound::decision::{self, DeadlineSource};
use crate::outbound::h1::request::{self, Request, TraceHeaders};
use crate::outbound::h1::response::{self, Response};
use crate::outbound::strict_h1::ChunkedBody;
use crate::outbound::strict_h1::framer::{Feed, Framer};
use crate::trace::TraceContext;
use hostmesh_config::{self as config, AgentConfig};
use hostmesh_policy::access::AccessPolicy;
use hostmesh_policy::route::RoutePolicy;
use hostmesh_tls::HostIdentity;
use hostmesh_wire::{self as wire, TcpPreface};

/// A DNS query packet through the shim (in the DNS crate, where its parsers are).
pub use hostmesh_dns::fuzzing::dns;

/// The lean path's limits as configured by default (`max_headers`, `max_header_bytes`), and
/// small ones so that inputs the fuzzer can reach also run into them.
const H1_LIMITS: [(usize, usize); 2] = [(100, 65_536), (8, 256)];

/// An app's request head as the lean HTTP/1 path reads it.
///
/// Asserts: a head the path takes lies within its limits, and once its body is all there, the
/// head written to the local app parses again as the same request (method, path, body length):
/// the app reads the body where the agent does.
pub fn http1_request_head(data: &[u8]) {
    for (max_fields, max_bytes) in H1_LIMITS {
        let request::Parsed::Lean(req) = Request::parse(data, max_fields, max_bytes) else {
            continue;
        };
        assert!(req.head_len <= max_bytes.min(data.len()));
        assert!(req.fields.len() <= max_fields);
        let _ = req.is_safe(data);
        // The request's deadline, as the lean path computes it and adds it to the clock.
        let deadline =
            decision::deadline_for(&req.lookup(data), None, Duration::from_secs(10), false);
        let _ = Instant::now() + deadline.after;
        // The lean path writes the request out only once all of its body was read; the head
        // it writes has one added field, so it must stay within the parser's slots.
        if data.len() < req.len() || req.fields.len() >= request::MAX_FIELDS {
            continue;
        }
        for trace in [
            TraceHeaders::Keep,
            TraceHeaders::Replace,
            TraceHeaders::ReplaceBoth,
        ] {
            let mut out = Vec::new();
            req.write_to_app(data, &[b"x-hostmesh-timeout: 5ms\r\n"], trace, &mut out);
            let request::Parsed::Lean(sent) = Request::parse(&out, request::MAX_FIELDS, usize::MAX)
            else {
                panic!(
                    "the head sent to the app does not parse: {:?}",
                    String::from_utf8_lossy(&out)
                );
            };
            assert_eq!(sent.method, req.method);
            assert_eq!(sent.path(&out), req.path(data));
            assert_eq!(
                sent.body_len,
                req.body_len,
                "the app would frame the body differently: {:?}",
                String::from_utf8_lossy(&out)
            );
            assert_eq!(sent.len(), out.len());
        }
    }
}

/// A local app's response head as the lean HTTP/1 path reads it, for a GET and a HEAD.
///
/// Asserts: the head the client gets parses again with the same status and the same body
/// framing (the agent relays the body by its framing, so the client must end it at the same
/// byte).
pub fn http1_response_head(data: &[u8]) {
    for head_request in [false, true] {
        for (_, max_bytes) in H1_LIMITS {
            let response::Parsed::Final(resp) = Response::parse(data, head_request, max_bytes)
            else {
                continue;
            };
            assert!(resp.head_len <= max_bytes.min(data.len()));
            let _ = resp.agent_error(data);
            for close in [false, true] {
                let mut out = Vec::new();
                resp.write_to_client(data, close, &mut out);
                // Our head's lines: the status line, its fields, the empty line.
                let fields = out.windows(2).filter(|w| w == b"\r\n").count() - 2;
                if fields > request::MAX_FIELDS {
                    continue;
                }
                let response::Parsed::Final(sent) = Response::parse(&out, head_request, usize::MAX)
                else {
                    panic!(
                        "the head sent to the client does not parse: {:?}",
                        String::from_utf8_lossy(&out)
                    );
                };
                assert_eq!(sent.status, resp.status);
                assert_eq!(sent.head_len, out.len());
                assert_eq!(
                    sent.framing,
                    resp.framing,
                    "the client would frame the body differently: {:?}",
                    String::from_utf8_lossy(&out)
                );
                if close {
                    assert!(!sent.reusable);
                }
            }
        }
    }
}

/// A request stream through the strict HTTP/1 guard, and the chunk walker the lean path uses on
/// response bodies.
///
/// Asserts: when the lean parser takes a request, the guard ends its head at the same byte and
/// frames the same body, or refuses it; the guard's verdict and what it releases do not depend on
/// how the stream is cut into reads; the chunk walker finds the same end fed at once or piece by
/// piece.
pub fn http1_guard(data: &[u8]) {
    for (max_fields, max_bytes) in H1_LIMITS {
        let request::Parsed::Lean(req) = Request::parse(data, max_fields, max_bytes) else {
            continue;
        };
        let mut framer = Framer::new(max_bytes);
        match framer.feed(data) {
            Feed::Malformed | Feed::TooLarge => {}
            Feed::Release(n) => {
                assert_eq!(
                    n, req.head_len,
                    "the guard and the lean parser end the head apart"
                );
                assert_eq!(
                    framer.in_body(),
                    req.body_len > 0,
                    "a body for one, none for the other"
                );
                if req.body_len > 0 {
                    let body = vec![b'x'; req.body_len + 1];
                    assert_eq!(
                        framer.feed(&body),
                        Feed::Release(req.body_len),
                        "the guard frames another body length"
                    );
                    assert!(!framer.in_body());
                }
            }
            other => panic!("the lean parser took a request the guard calls {other:?}"),
        }
    }

    for (_, max_head) in H1_LIMITS {
        let whole = guard_stream(data, max_head, &mut || usize::MAX);
        let mut pieces = Pieces::new(data);
        let cut = guard_stream(data, max_head, &mut || pieces.next());
        assert_eq!(
            whole.1, cut.1,
            "the guard's verdict depends on how the bytes arrive"
        );
        if whole.1 != GuardEnd::BadChunk {
            // A broken chunk ends the connection; how much of the body before it went to hyper
            // depends on the reads. Everything else must not.
            assert_eq!(whole.0, cut.0, "the guard releases other bytes");
        }
    }

    let mut whole = ChunkedBody::default();
    let at_once = whole.feed(data);
    let mut walker = ChunkedBody::default();
    let mut pieces = Pieces::new(data);
    let (mut at, mut end) = (0, None);
    while at < data.len() {
        let take = pieces.next().min(data.len() - at);
        match walker.feed(&data[at..at + take]) {
            None => break,
            Some((n, done)) => {
                assert!(n <= take);
                at += n;
                if done {
                    end = Some(at);
                    break;
                }
                // The lean path feeds what was not taken again with more bytes; the walker takes
                // everything short of the body's end.
                assert_eq!(n, take, "the chunk walker left bytes before the body's end");
            }
        }
    }
    match at_once {
        Some((n, true)) => assert_eq!(end, Some(n), "the chunked body ends elsewhere in pieces"),
        Some((n, false)) => {
            assert_eq!(n, data.len());
            assert_eq!(
                (at, end),
                (data.len(), None),
                "pieces end a body that has no end"
            );
        }
        None => assert!(
            at < data.len() && end.is_none(),
            "pieces accept a chunked body refused whole"
        ),
    }
}

/// How a simulated guarded connection ended.
#[derive(Debug, PartialEq, Eq)]
enum GuardEnd {
    /// The client's bytes ran out.
    Eof,
    /// A head was refused (400) or too large (431).
    Refused,
    /// A chunked body's framing broke.
    BadChunk,
}

/// Drives the guard's framer over `data` arriving in reads of `piece()` bytes, as
/// `StrictH1::poll_read` does: heads held until complete, body bytes passed through as they
/// come, the rest of a read held. Returns how many bytes went to hyper and how it ended.
fn guard_stream(
    data: &[u8],
    max_head: usize,
    piece: &mut dyn FnMut() -> usize,
) -> (usize, GuardEnd) {
    let mut framer = Framer::new(max_head);
    let mut held: Vec<u8> = Vec::new();
    let mut wants_more = false;
    let (mut read, mut released) = (0, 0);
    loop {
        if !held.is_empty() && !wants_more {
            match framer.feed(&held) {
                Feed::Release(n) => {
                    assert!(n > 0 && n <= held.len(), "released {n} of {}", held.len());
                    held.drain(..n);
                    released += n;
                }
                Feed::More => wants_more = true,
                Feed::Malformed | Feed::TooLarge => return (released, GuardEnd::Refused),
                Feed::BadChunk => return (released, GuardEnd::BadChunk),
            }
            continue;
        }
        if read == data.len() {
            return (released, GuardEnd::Eof);
        }
        let take = piece().clamp(1, data.len() - read);
        let bytes = &data[read..read + take];
        read += take;
        if held.is_empty() && framer.in_body() {
            match framer.feed(bytes) {
                Feed::Release(n) => {
                    assert!(n > 0 && n <= bytes.len());
                    released += n;
                    held.extend_from_slice(&bytes[n..]);
                }
                Feed::BadChunk => return (released, GuardEnd::BadChunk),
                other => panic!("body bytes answered {other:?}"),
            }
        } else {
            held.extend_from_slice(bytes);
            wants_more = false;
        }
    }
}

/// Read sizes from 1 to 16 bytes, drawn from the input itself so a crash replays the same way.
#[derive(Debug)]
struct Pieces(u32);

impl Pieces {
    fn new(data: &[u8]) -> Self {
        Pieces(data.iter().take(8).fold(data.len() as u32, |h, b| {
            h.wrapping_mul(31).wrapping_add(u32::from(*b))
        }))
    }

    fn next(&mut self) -> usize {
        self.0 = self.0.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        (self.0 >> 16) as usize % 16 + 1
    }
}

/// The `HOSTMESH-TCP/1` preface line a peer agent sends before a TCP stream, read as
/// `inbound::tcp` reads it (up to the first newline, at most `TCP_PREFACE_MAX` bytes).
///
/// Asserts: only the two documented reasons refuse a line; an accepted preface encodes to a
/// line that parses back to it, and its deadline and claimed caller are usable as `serve` uses
/// them.
pub fn tcp_preface(data: &[u8]) {
    let line = data
        .iter()
        .position(|b| *b == b'\n')
        .map_or(data, |i| &data[..i]);
    if line.len() > wire::TCP_PREFACE_MAX {
        return;
    }
    match TcpPreface::parse(line) {
        Ok(preface) => {
            let encoded = preface.encode();
            let again = encoded
                .strip_suffix('\n')
                .map(|l| TcpPreface::parse(l.as_bytes()));
            assert_eq!(again, Some(Ok(preface.clone())), "{encoded:?}");
            let _ = Duration::from_secs(5).min(preface.deadline.max(Duration::from_millis(1)));
            if let Some(caller) = crate::inbound::caller::of_preface(None, &preface) {
                assert!(HeaderValue::from_str(&caller).is_ok());
            }
        }
        Err(reason) => assert!(
            matches!(reason, "bad-preface" | "unsupported-version"),
            "{reason}"
        ),
    }
}

/// The request headers the agents read from each other and from apps: `x-hostmesh-*`,
/// `grpc-timeout` and `traceparent`. Each input line is the value of the next header of
/// [`PEER_HEADERS`] (in turn).
///
/// Asserts: the deadline they decide can be added to the clock, as both HTTP paths do; hyper's
/// header map and the lean path's fields decide the same deadline; the timeout the agent passes
/// on parses back at the next hop; a `traceparent` that parses is written back the same; a caller
/// taken from `x-hostmesh-src` can be passed on to the app.
pub fn peer_headers(data: &[u8]) {
    let mut map = HeaderMap::new();
    let mut head = b"GET / HTTP/1.1\r\n".to_vec();
    for (i, value) in data.split(|b| *b == b'\n').take(32).enumerate() {
        let name = PEER_HEADERS[i % PEER_HEADERS.len()];
        if let Ok(text) = std::str::from_utf8(value) {
            header_value(name, text);
        }
        let Ok(v) = HeaderValue::from_bytes(value) else {
            continue;
        };
        map.append(HeaderName::from_static(name), v);
        head.extend_from_slice(name.as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value);
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");

    let default = Duration::from_secs(10);
    for grpc in [false, true] {
        let deadline = decision::deadline_for(&map, None, default, grpc);
        // What outbound::http and the lean path do with it.
        let _ = Instant::now() + deadline.after;
        if let request::Parsed::Lean(req) = Request::parse(&head, request::MAX_FIELDS, usize::MAX) {
            let lean = decision::deadline_for(&req.lookup(&head), None, default, grpc);
            assert_eq!(lean, deadline, "the lean path decides another deadline");
        }
    }
    if let Some(caller) = crate::inbound::caller::of_request(None, &map) {
        assert!(HeaderValue::from_str(&caller).is_ok());
    }
}

/// The headers [`peer_headers`] sets, in turn.
const PEER_HEADERS: [&str; 7] = [
    wire::TIMEOUT,
    "grpc-timeout",
    crate::trace::TRACEPARENT,
    wire::SRC,
    wire::DST,
    wire::RETRYABLE,
    wire::VERSION_HEADER,
];

/// One header value's own parser, on any text.
fn header_value(name: &str, text: &str) {
    match name {
        wire::TIMEOUT => {
            if let Some(t) = wire::parse_timeout(text) {
                // The next hop gets the time left in whole milliseconds, at least one.
                let passed_on = wire::parse_timeout(&wire::format_timeout(t));
                let millis = t.as_millis().max(1);
                assert_eq!(
                    passed_on.map(|p| p.as_millis()),
                    Some(millis),
                    "the next hop reads another timeout"
                );
            }
        }
        "grpc-timeout" => {
            // At most 8 digits: the largest is 99999999H.
            if let Some(t) = decision::parse_grpc_timeout(text) {
                assert!(t <= Duration::from_secs(99_999_999 * 3600));
            }
        }
        crate::trace::TRACEPARENT => {
            if let Some(ctx) = TraceContext::parse(text) {
                let written = ctx.header();
                assert_eq!(TraceContext::parse(&written), Some(ctx));
                if text.starts_with("00-") {
                    assert_eq!(written, text);
                }
            }
        }
        _ => {}
    }
}

/// Agent config and service-file TOML, as `hostmesh check-config` and the agent's start read
/// them (the same text tried as both).
///
/// Asserts: a config that passes can be run: its durations can be added to the clock, its
/// connection limit fits a semaphore; a service file that passes names a non-zero port and a
/// health check whose durations can be added to the clock.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let env = [("HOSTMESH_FUZZ".to_owned(), "1".to_owned())];
    if let Ok(cfg) = AgentConfig::parse(text, Path::new("/etc/hostmesh/agent.toml"), env) {
        let p = &cfg.proxy;
        for d in [
            p.connect_timeout,
            p.request_timeout,
            p.idle_timeout,
            p.header_read_timeout,
        ] {
            assert!(Instant::now().checked_add(d).is_some(), "{d:?}");
        }
        assert!(p.max_connections <= tokio::sync::Semaphore::MAX_PERMITS);
        assert!(p.max_headers >= 1 && p.max_header_bytes >= 1);
    }
    if let Ok(spec) = config::parse_service(text, Path::new("/etc/hostmesh/services.d/web-1.toml"))
    {
        assert_ne!(spec.port, 0);
        assert_eq!(spec.id, "web-1");
        if let Some(check) = &spec.check {
            assert!(Instant::now().checked_add(check.interval).is_some());
            assert!(Instant::now().checked_add(check.timeout).is_some());
        }
    }
}

/// A route or access policy, as TOML (`route set`, `policy set`) and as the JSON stored in etcd.
///
/// Asserts: what passes writes out, as TOML and as JSON, to text that reads back as the same
/// policy; a route's timeouts can serve as a request's deadline on the clock.
pub fn route_policy(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let file = Path::new("orders.toml");
    let json = serde_json::from_str::<serde_json::Value>(text).ok();
    let routes = [
        RoutePolicy::parse_toml(text, file).ok(),
        json.as_ref().and_then(|j| RoutePolicy::from_json(j).ok()),
    ];
    for route in routes.into_iter().flatten() {
        assert_eq!(
            RoutePolicy::parse_toml(&route.to_toml(), file).as_ref(),
            Ok(&route),
            "{}",
            route.to_toml()
        );
        assert_eq!(
            RoutePolicy::from_json(&route.to_json()).as_ref(),
            Ok(&route)
        );
        let timeouts = route.rules.iter().map(|r| r.timeout).chain([route.timeout]);
        for timeout in timeouts.flatten() {
            let deadline = decision::deadline_for(
                &HeaderMap::new(),
                Some((timeout, DeadlineSource::RouteTimeout)),
                Duration::from_secs(10),
                false,
            );
            let _ = Instant::now() + deadline.after;
        }
    }
    let policies = [
        AccessPolicy::parse_toml(text, file).ok(),
        json.as_ref().and_then(|j| AccessPolicy::from_json(j).ok()),
    ];
    for policy in policies.into_iter().flatten() {
        assert_eq!(
            AccessPolicy::parse_toml(&policy.to_toml(), file).as_ref(),
            Ok(&policy)
        );
        assert_eq!(
            AccessPolicy::from_json(&policy.to_json()).as_ref(),
            Ok(&policy)
        );
    }
}

/// Catalog records as etcd delivers them into the registrar's catalog state, and `catalog.json`
/// as the agent reads it at start. The first byte chooses: even, the rest is a `catalog.json`;
/// odd, the rest is records separated by NUL, each a byte choosing the key (kind and name) and
/// then the value; kind 7 takes the key from the record, up to its first `=`.
///
/// Asserts: every VIP served lies in `vip_range` and belongs to one name, and a service's VIP is
/// its name's; the snapshot saved as `catalog.json` comes back as it was.
pub fn catalog(data: &[u8]) {
    let range: Ipv4Net = "127.77.0.0/16".parse().unwrap();
    let layout = Layout::new("/hm");
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let snapshot = if mode & 1 == 0 {
        let Ok(saved) = serde_json::from_slice::<Persisted>(rest) else {
            return;
        };
        let _ = saved.age();
        State::from_snapshot(layout.clone(), range, &saved.snapshot).1
    } else {
        const NAMES: [&str; 6] = [
            "orders",
            "v2.orders",
            "payments",
            "web-01",
            "Evil Name!",
            "",
        ];
        let mut state = State::new(layout.clone(), range);
        for (rev, record) in (1..).zip(rest.split(|b| *b == 0)) {
            let Some((&kind, value)) = record.split_first() else {
                continue;
            };
            let name = NAMES[usize::from(kind >> 3) % NAMES.len()];
            let (key, value) = match kind & 7 {
                0 => (layout.host_info(name), value),
                1 => (layout.instance("web-01", name, "i1"), value),
                2 => (layout.instance(name, "orders", "i2"), value),
                3 => (layout.vip(name), value),
                4 => (layout.route(name), value),
                5 => (layout.policy(name), value),
                6 => {
                    state.delete(&layout.vip(name), rev);
                    continue;
                }
                _ => {
                    let eq = value.iter().position(|b| *b == b'=').unwrap_or(value.len());
                    let key = format!("{}{}", layout.root(), String::from_utf8_lossy(&value[..eq]));
                    (key, value.get(eq + 1..).unwrap_or_default())
                }
            };
            state.put(&key, value, rev);
        }
        state.snapshot()
    };

    let mut holders: HashMap<Ipv4Addr, &str> = HashMap::new();
    for (name, vip) in &snapshot.vips {
        assert!(
            range.contains(vip),
            "{name} is served {vip}, outside {range}"
        );
        if let Some(other) = holders.insert(*vip, name) {
            panic!("{vip} is served for both {other} and {name}");
        }
    }
    for (name, service) in &snapshot.services {
        assert_eq!(&service.name, name);
        if let Some(vip) = service.vip {
            assert_eq!(snapshot.vips.get(name), Some(&vip), "{name}'s VIP");
        }
    }
    let (_, restored) = State::from_snapshot(layout, range, &snapshot);
    assert!(
        nearly_same(
            &serde_json::to_value(&restored).unwrap(),
            &serde_json::to_value(&snapshot).unwrap()
        ),
        "catalog.json does not restore what was saved:\n{restored:?}\n{snapshot:?}"
    );
}

/// Equal, but for floats within a rounding error: serde_json (without its `float_roundtrip`
/// feature) may read a float back one ULP off what it wrote, as the catalog target found with
/// numbers in stored policies. Recorded in fuzz/README.md; not the catalog's doing.
fn nearly_same(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() && y.is_f64() => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            x == y || ((x - y) / x).abs() < 1e-14
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| nearly_same(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| nearly_same(v, w)))
        }
        _ => a == b,
    }
}

/// A peer's leaf certificate (DER) through the identity check both TLS verifiers make, and the
/// same bytes as a URI SAN.
///
/// Asserts: an identity taken from a certificate is in our trust domain, prints as a URI that
/// parses back to it, and its host is a valid TLS server name; a URI that parses prints back as
/// it was written.
pub fn cert_identity(data: &[u8]) {
    const TRUST_DOMAIN: &str = "example.org";
    if let Ok(identity) =
        hostmesh_tls::verify::leaf_identity(&CertificateDer::from(data), TRUST_DOMAIN)
    {
        assert_eq!(identity.trust_domain(), TRUST_DOMAIN);
        assert_eq!(
            HostIdentity::parse(&identity.to_string()),
            Ok(identity.clone())
        );
        assert!(hostmesh_tls::identity::server_name(identity.host()).is_ok());
    }
    if let Ok(uri) = std::str::from_utf8(data)
        && let Ok(identity) = HostIdentity::parse(uri)
    {
        assert_eq!(identity.to_string(), uri);
    }
}
