//! The fuzz entry points for the data path's parsers (`fuzz/fuzz_targets/`, through the agent's
//! `hostmesh::fuzzing`): the lean HTTP/1 request and response heads, the strict HTTP/1 guard and
//! its chunk walker, the `HOSTMESH-TCP/1` preface and the peer headers. Here so that they reach
//! those parsers without making them part of this crate's API. Not an API.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};
use tokio::time::Instant;

use crate::outbound::decision;
use crate::outbound::h1::request::{self, Request, TraceHeaders};
use crate::outbound::h1::response::{self, Response};
use crate::outbound::strict_h1::ChunkedBody;
use crate::outbound::strict_h1::framer::{Feed, Framer};
use crate::trace::TraceContext;
use hostmesh_wire::{self as wire, TcpPreface};

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
    // A claim is the caller only as a host name, and then the app is told it as it came.
    let callers = crate::inbound::caller::Callers::new(None, std::net::Ipv4Addr::LOCALHOST.into());
    let caller = callers.of_request(wire::PeerFields::of(&map).src);
    if let Some(host) = caller.host() {
        assert!(hostmesh_config::names::host(host).is_ok(), "{host:?}");
        assert_eq!(host.as_bytes(), caller.value().as_bytes());
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
