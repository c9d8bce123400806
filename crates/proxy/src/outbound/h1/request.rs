//! A client's request head as the lean path reads it: parsed in place (httparse), kept as
//! offsets into the connection's buffer, and written on to the app with the agent's header
//! changes. Anything out of the ordinary is not the lean path's: it says so ([`Parsed::Handover`])
//! before a byte is consumed, and hyper's path, with its strict guard and its error answers,
//! takes the connection from that request on.

use std::mem::MaybeUninit;
use std::ops::Range;

use http::Method;
use memchr::memchr_iter;

use super::fields::{self, Field};
use crate::outbound::retry;
use crate::trace::{TRACEPARENT, TRACESTATE};
use hostmesh_wire::headers::{self, HeaderLookup};

/// At most this many header fields are parsed in place; more go to hyper (which enforces
/// `max_headers` and answers 431).
pub const MAX_FIELDS: usize = 64;

/// What the start of the buffer holds.
#[derive(Debug)]
pub enum Parsed {
    /// Not a whole head yet.
    Partial,
    Lean(Request),
    /// A request for hyper's path: another HTTP version, a streamed or chunked body,
    /// `Expect`, `Upgrade`, an absolute URI, anything malformed or over a limit.
    Handover,
}

/// One request head, as offsets into the buffer it was parsed from.
#[derive(Debug)]
pub struct Request {
    /// Bytes of the head, CRLF CRLF included.
    pub head_len: usize,
    pub method: Method,
    method_at: Range<usize>,
    path_at: Range<usize>,
    pub fields: Vec<Field>,
    /// The body's length (`Content-Length`, else 0).
    pub body_len: usize,
    /// The client said `connection: close`.
    pub close: bool,
    /// A `Connection` field names other fields (not just `keep-alive` or `close`): only then
    /// are its tokens worked out again as the head is written on.
    names_fields: bool,
}

impl Request {
    /// Parses the head at the start of `buf`, whose heads may have `max_fields` fields and
    /// `max_bytes` bytes.
    pub fn parse(buf: &[u8], max_fields: usize, max_bytes: usize) -> Parsed {
        // Uninitialised: httparse fills only the slots it uses, not all 64 (2 KiB) per request.
        let mut slots = [const { MaybeUninit::<httparse::Header>::uninit() }; MAX_FIELDS];
        let slots = &mut slots[..max_fields.min(MAX_FIELDS)];
        let mut req = httparse::Request::new(&mut []);
        let head_len = match req.parse_with_uninit_headers(buf, slots) {
            Ok(httparse::Status::Complete(n)) if n <= max_bytes => n,
            Ok(httparse::Status::Partial) if buf.len() < max_bytes => return Parsed::Partial,
            _ => return Parsed::Handover,
        };
        // httparse accepts lines ending in a bare LF; the strict guard on hyper's path refuses
        // them (request smuggling), so they go there.
        if memchr_iter(b'\n', &buf[..head_len]).any(|i| i == 0 || buf[i - 1] != b'\r') {
            return Parsed::Handover;
        }
        let (Some(method), Some(path), Some(1)) = (req.method, req.path, req.version) else {
            return Parsed::Handover;
        };
        if !path.starts_with('/') {
            return Parsed::Handover;
        }
        let Ok(method_parsed) = Method::from_bytes(method.as_bytes()) else {
            return Parsed::Handover;
        };
        let mut body_len = None;
        let mut close = false;
        let mut names_fields = false;
        let mut fields = Vec::with_capacity(req.headers.len());
        for h in req.headers.iter() {
            let name = h.name.as_bytes();
            if name.eq_ignore_ascii_case(b"transfer-encoding")
                || name.eq_ignore_ascii_case(b"expect")
                || name.eq_ignore_ascii_case(b"upgrade")
            {
                return Parsed::Handover;
            }
            if name.eq_ignore_ascii_case(b"content-length") {
                match (body_len, fields::digits(h.value)) {
                    (None, Some(n)) if n <= retry::MAX_REPLAY_BODY => {
                        body_len = usize::try_from(n).ok();
                    }
                    // A second length, a bad one, or a body that streams: hyper's.
                    _ => return Parsed::Handover,
                }
            }
            if name.eq_ignore_ascii_case(b"connection") {
                close |= fields::has_token(h.value, "close");
                names_fields |= fields::names_fields(h.value);
            }
            fields.push(Field::of(buf, h.name, h.value));
        }
        Parsed::Lean(Request {
            head_len,
            method: method_parsed,
            method_at: fields::range_of(buf, method.as_bytes()),
            path_at: fields::range_of(buf, path.as_bytes()),
            fields,
            body_len: body_len.unwrap_or(0),
            close,
            names_fields,
        })
    }

    pub fn path<'b>(&self, buf: &'b [u8]) -> &'b str {
        // httparse checked the path's bytes are visible ASCII.
        std::str::from_utf8(&buf[self.path_at.clone()]).unwrap_or("/")
    }

    /// The head and body's bytes together.
    pub fn len(&self) -> usize {
        self.head_len + self.body_len
    }

    /// The headers, for route rules and deadlines.
    pub fn lookup<'a>(&'a self, buf: &'a [u8]) -> Lookup<'a> {
        Lookup { req: self, buf }
    }

    /// Whether it may be sent again once it may have reached an app.
    pub fn is_safe(&self, buf: &[u8]) -> bool {
        retry::is_safe_with(
            &self.method,
            self.lookup(buf).first_str(hostmesh_wire::RETRYABLE),
        )
    }

    /// The field names its `Connection` fields make hop-by-hop ([`fields::connection_named`]);
    /// worked out only when the parse saw a value naming any.
    pub fn connection_named<'b>(&'b self, buf: &'b [u8]) -> Vec<&'b str> {
        if self.names_fields {
            fields::connection_named(buf, &self.fields)
        } else {
            Vec::new()
        }
    }

    /// Writes the request as the app gets it: the client's fields as `app_request` decides them
    /// (and without `traceparent`/`tracestate` when the hop has its own), then `added` (complete
    /// header lines), then the body.
    pub fn write_to_app(
        &self,
        buf: &[u8],
        added: &[&[u8]],
        drop_trace: TraceHeaders,
        out: &mut Vec<u8>,
    ) {
        out.clear();
        out.extend_from_slice(&buf[self.method_at.clone()]);
        out.push(b' ');
        out.extend_from_slice(&buf[self.path_at.clone()]);
        out.extend_from_slice(b" HTTP/1.1\r\n");
        fields::write_for_app(
            self.fields.iter().map(|f| (f.name(buf), f.value(buf))),
            &self.connection_named(buf),
            |name| drop_trace.drops(name),
            out,
        );
        for line in added {
            out.extend_from_slice(line);
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&buf[self.head_len..self.len()]);
    }
}

/// Which trace headers the hop replaces.
#[derive(Debug, Clone, Copy)]
pub enum TraceHeaders {
    /// Tracing is off: both pass as they are.
    Keep,
    /// The hop sends its own `traceparent`; the client's `tracestate` stays.
    Replace,
    /// The hop sends its own `traceparent` and starts a trace: `tracestate` goes too.
    ReplaceBoth,
}

impl TraceHeaders {
    fn drops(self, name: &[u8]) -> bool {
        match self {
            TraceHeaders::Keep => false,
            TraceHeaders::Replace => name.eq_ignore_ascii_case(TRACEPARENT.as_bytes()),
            TraceHeaders::ReplaceBoth => {
                name.eq_ignore_ascii_case(TRACEPARENT.as_bytes())
                    || name.eq_ignore_ascii_case(TRACESTATE.as_bytes())
            }
        }
    }
}

/// A request's headers in its buffer.
#[derive(Debug)]
pub struct Lookup<'a> {
    req: &'a Request,
    buf: &'a [u8],
}

impl HeaderLookup for Lookup<'_> {
    fn any_value(&self, name: &str, test: &mut dyn FnMut(&[u8]) -> bool) -> bool {
        fields::values(self.buf, &self.req.fields, name).any(test)
    }

    fn first_str(&self, name: &str) -> Option<&str> {
        let buf = self.buf;
        self.req
            .fields
            .iter()
            .find(|f| f.name(buf).eq_ignore_ascii_case(name.as_bytes()))
            .and_then(|f| headers::visible_ascii(f.value(buf)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lean(head: &str) -> Request {
        match Request::parse(head.as_bytes(), 100, 65536) {
            Parsed::Lean(r) => r,
            other => panic!("not lean: {other:?}"),
        }
    }

    fn handover(head: &str) -> bool {
        matches!(
            Request::parse(head.as_bytes(), 100, 65536),
            Parsed::Handover
        )
    }

    #[test]
    fn a_plain_request_is_lean_and_rewritten_for_the_app() {
        let head = "GET /a?b=1 HTTP/1.1\r\nHost: orders.mesh\r\nConnection: keep-alive, X-Private\r\n\
                    X-Private: 1\r\nKeep-Alive: 5\r\nTE: trailers, gzip\r\nX-Hostmesh-Timeout: 1s\r\n\
                    X-Hostmesh-Dst: evil/1\r\nForwarded: for=evil\r\nAccept: */*\r\n\r\n";
        let req = lean(head);
        assert_eq!(req.head_len, head.len());
        assert_eq!(req.path(head.as_bytes()), "/a?b=1");
        assert!(!req.close);
        let mut out = Vec::new();
        req.write_to_app(
            head.as_bytes(),
            &[b"x-hostmesh-caller: a\r\n"],
            TraceHeaders::Keep,
            &mut out,
        );
        assert_eq!(
            String::from_utf8(out).expect("ascii"),
            "GET /a?b=1 HTTP/1.1\r\nHost: orders.mesh\r\nte: trailers\r\nAccept: */*\r\n\
             x-hostmesh-caller: a\r\n\r\n"
        );
    }

    #[test]
    fn a_small_body_is_lean_and_follows_the_head() {
        let msg =
            "POST /p HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\nconnection: close\r\n\r\nabc";
        let req = lean(msg);
        assert_eq!((req.body_len, req.len(), req.close), (3, msg.len(), true));
        assert!(!req.is_safe(msg.as_bytes()));
        let mut out = Vec::new();
        req.write_to_app(msg.as_bytes(), &[], TraceHeaders::Keep, &mut out);
        assert!(out.ends_with(b"content-length: 3\r\n\r\nabc"), "{out:?}");
    }

    #[test]
    fn the_retryable_header_and_safe_methods() {
        let post = "POST / HTTP/1.1\r\nx-hostmesh-retryable: true\r\ncontent-length: 0\r\n\r\n";
        assert!(lean(post).is_safe(post.as_bytes()));
        let put = "PUT / HTTP/1.1\r\n\r\n";
        assert!(lean(put).is_safe(put.as_bytes()));
    }

    #[test]
    fn anything_unusual_goes_to_hyper() {
        for head in [
            "GET / HTTP/1.0\r\n\r\n",
            "GET http://x/ HTTP/1.1\r\n\r\n",
            "POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\ncontent-length: 3\r\ncontent-length: 3\r\n\r\n",
            "POST / HTTP/1.1\r\ncontent-length: +3\r\n\r\n",
            "POST / HTTP/1.1\r\ncontent-length: 65537\r\n\r\n",
            "PUT / HTTP/1.1\r\nexpect: 100-continue\r\ncontent-length: 1\r\n\r\n",
            "GET / HTTP/1.1\r\nupgrade: websocket\r\n\r\n",
            "GET / HTTP/1.1\nhost: x\r\n\r\n",
            "GET / HTTP/1.1\r\nbad header\r\n\r\n",
        ] {
            assert!(handover(head), "{head:?}");
        }
        // Over the limits hyper enforces (and answers 431 for).
        let many: String = (0..5).map(|i| format!("h{i}: v\r\n")).collect();
        let head = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert!(matches!(
            Request::parse(head.as_bytes(), 4, 65536),
            Parsed::Handover
        ));
        assert!(matches!(
            Request::parse(head.as_bytes(), 100, 20),
            Parsed::Handover
        ));
        assert!(matches!(
            Request::parse(b"GET / HTTP/1.1\r\nhost:", 100, 65536),
            Parsed::Partial
        ));
    }

    #[test]
    fn route_rules_read_the_headers_in_place() {
        let head = "GET / HTTP/1.1\r\nX-Canary: 1\r\nx-canary: 2\r\n\r\n";
        let req = lean(head);
        let l = req.lookup(head.as_bytes());
        assert_eq!(l.first_str("x-canary"), Some("1"));
        assert!(l.any_value("x-canary", &mut |v| v == b"2"));
        assert!(!l.any_value("x-other", &mut |_| true));
    }
}
