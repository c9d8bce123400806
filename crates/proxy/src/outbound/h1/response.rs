//! An app's response head as the lean path reads it, how its body is framed, and the head the
//! client gets. The body is relayed as it came, chunked framing included; only where it ends is
//! worked out (hyper's path decodes and re-encodes it instead).

use std::mem::MaybeUninit;
use std::ops::Range;

use http::StatusCode;

use super::fields::{self, Field};
use hostmesh_wire::headers;

/// How the response body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (HEAD, 204, 304).
    Empty,
    Length(u64),
    Chunked,
    /// Read until the app closes; the client's connection closes after it.
    UntilClose,
}

/// The fields a response head may have: as many as hyper's HTTP/1 client takes (its default),
/// so that a response hyper's path passes on is not refused here.
pub const MAX_RESPONSE_FIELDS: usize = 100;

/// What becomes of a chunked body's framing on the way on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    /// The body goes on as it came (HTTP/1.1 to HTTP/1.1): `Transfer-Encoding` with it.
    Relayed,
    /// The body is decoded (passed on as HTTP/2 DATA): `Transfer-Encoding` stays behind.
    Decoded,
}

/// What the start of the buffer holds.
#[derive(Debug)]
pub enum Parsed {
    Partial,
    /// A 1xx head of this many bytes: skipped (the client asked for nothing interim).
    Interim(usize),
    Final(Response),
    /// Not a response the agent can pass on: the attempt failed.
    Invalid(&'static str),
}

/// A final response head, as offsets into the buffer it was parsed from.
#[derive(Debug)]
pub struct Response {
    pub head_len: usize,
    pub status: StatusCode,
    reason_at: Range<usize>,
    fields: Vec<Field>,
    pub framing: Framing,
    /// A `Transfer-Encoding` came with the head: any `Content-Length` beside it is dropped.
    coded: bool,
    /// The app lets the connection be used again after this response.
    pub reusable: bool,
    /// The `x-hostmesh-error` value, when it is visible ASCII.
    error_at: Option<Range<usize>>,
    /// A `Connection` field names other fields (not just `keep-alive` or `close`): only then
    /// are its tokens worked out again as the fields are passed on.
    names_fields: bool,
    /// The app sent a `Date` (else the client gets the agent's).
    dated: bool,
}

impl Response {
    /// Parses the response head at the start of `buf`, answering a `head_request` (no body
    /// whatever the head says).
    pub fn parse(buf: &[u8], head_request: bool, max_bytes: usize) -> Parsed {
        // Uninitialised: httparse fills only the slots it uses, not all 100 (3 KiB) per response
        // (callgrind, one hop: 1,000 of the agent's 13,900 instructions per request).
        let mut slots = [const { MaybeUninit::<httparse::Header>::uninit() }; MAX_RESPONSE_FIELDS];
        let mut resp = httparse::Response::new(&mut []);
        let parsed = httparse::ParserConfig::default()
            .parse_response_with_uninit_headers(&mut resp, buf, &mut slots);
        let head_len = match parsed {
            Ok(httparse::Status::Complete(n)) if n <= max_bytes => n,
            Ok(httparse::Status::Partial) if buf.len() < max_bytes => return Parsed::Partial,
            Ok(_) => return Parsed::Invalid("response head too large"),
            Err(_) => return Parsed::Invalid("malformed response head"),
        };
        let (Some(code), Some(version)) = (resp.code, resp.version) else {
            return Parsed::Invalid("malformed response head");
        };
        let Ok(status) = StatusCode::from_u16(code) else {
            return Parsed::Invalid("bad response status");
        };
        if status == StatusCode::SWITCHING_PROTOCOLS {
            // Nothing asked to switch (upgrades are hyper's path).
            return Parsed::Invalid("unasked protocol switch");
        }
        if status.is_informational() {
            return Parsed::Interim(head_len);
        }
        let mut length = None;
        let mut chunked = None;
        let mut close = version == 0;
        let mut error_at = None;
        let mut names_fields = false;
        let mut dated = false;
        let mut fields = Vec::with_capacity(resp.headers.len());
        for h in resp.headers.iter() {
            let name = h.name.as_bytes();
            if name.eq_ignore_ascii_case(b"content-length") {
                match (length, fields::digits(h.value)) {
                    (None, Some(n)) => length = Some(n),
                    (Some(a), Some(b)) if a == b => {}
                    _ => return Parsed::Invalid("bad content-length"),
                }
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                // Only the last coding says whether the body is chunked.
                chunked = Some(
                    headers::visible_ascii(h.value)
                        .and_then(|v| v.rsplit(',').next())
                        .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked")),
                );
            } else if name.eq_ignore_ascii_case(b"connection") {
                if version == 0 {
                    close = !fields::has_token(h.value, "keep-alive");
                } else {
                    close |= fields::has_token(h.value, "close");
                }
                names_fields |= fields::names_fields(h.value);
            } else if name.eq_ignore_ascii_case(hostmesh_wire::ERROR.as_bytes())
                && headers::visible_ascii(h.value).is_some()
            {
                error_at = Some(fields::range_of(buf, h.value));
            } else if name.eq_ignore_ascii_case(b"date") {
                dated = true;
            }
            fields.push(Field::of(buf, h.name, h.value));
        }
        let no_body =
            head_request || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
        // RFC 9112 §6.3: a transfer coding overrides any length; one not ending in chunked is
        // read until the connection closes.
        let framing = match (no_body, chunked, length) {
            (true, _, _) => Framing::Empty,
            (false, Some(true), _) => Framing::Chunked,
            (false, Some(false), _) | (false, None, None) => Framing::UntilClose,
            (false, None, Some(n)) => Framing::Length(n),
        };
        Parsed::Final(Response {
            head_len,
            status,
            reason_at: fields::range_of(buf, resp.reason.unwrap_or("").as_bytes()),
            fields,
            framing,
            coded: chunked.is_some(),
            reusable: !close && framing != Framing::UntilClose,
            error_at,
            names_fields,
            dated,
        })
    }

    pub fn agent_error<'b>(&self, buf: &'b [u8]) -> Option<&'b str> {
        let at = self.error_at.clone()?;
        std::str::from_utf8(&buf[at]).ok()
    }

    /// The fields that go on with the response: the app's less the hop-by-hop ones (by name or
    /// because `Connection` names them) and less a `Content-Length` beside a `Transfer-Encoding`
    /// (RFC 9112 §6.3 asks a proxy to drop it). `Transfer-Encoding` itself goes on only when
    /// the body is relayed as it came (`coding`).
    pub fn passed_on<'a>(
        &'a self,
        buf: &'a [u8],
        coding: Coding,
    ) -> impl Iterator<Item = &'a Field> + 'a {
        let connection = if self.names_fields {
            fields::connection_named(buf, &self.fields)
        } else {
            Vec::new()
        };
        self.fields.iter().filter(move |f| {
            let name = f.name(buf);
            let framing = name.eq_ignore_ascii_case(b"transfer-encoding");
            let overridden = self.coded && name.eq_ignore_ascii_case(b"content-length");
            let hop = headers::is_hop_by_hop(name)
                || connection
                    .iter()
                    .any(|c| c.as_bytes().eq_ignore_ascii_case(name));
            (framing && coding == Coding::Relayed) || !(hop || overridden)
        })
    }

    /// Writes the head the client gets: the app's status and fields less the hop-by-hop ones
    /// (the framing fields stay: the body is relayed as it is; but a `Content-Length` beside a
    /// `Transfer-Encoding` goes, as RFC 9112 §6.3 asks of a proxy), the agent's `date` when the
    /// app sent none, and `connection: close` when the client's connection ends after this
    /// response.
    pub fn write_to_client(&self, buf: &[u8], close: bool, out: &mut Vec<u8>) {
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(self.status.as_str().as_bytes());
        out.push(b' ');
        let reason = &buf[self.reason_at.clone()];
        if reason.is_empty() {
            out.extend_from_slice(
                self.status
                    .canonical_reason()
                    .unwrap_or_default()
                    .as_bytes(),
            );
        } else {
            out.extend_from_slice(reason);
        }
        out.extend_from_slice(b"\r\n");
        for f in self.passed_on(buf, Coding::Relayed) {
            f.write(buf, out);
        }
        if !self.dated {
            crate::date::write_line(out);
        }
        if close {
            out.extend_from_slice(b"connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(head: &str, head_request: bool) -> Response {
        match Response::parse(head.as_bytes(), head_request, 65536) {
            Parsed::Final(r) => r,
            other => panic!("not final: {other:?}"),
        }
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let cl = "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n";
        assert_eq!(parse(cl, false).framing, Framing::Length(5));
        assert_eq!(parse(cl, true).framing, Framing::Empty);
        let te = "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: gzip, chunked\r\n\r\n";
        assert_eq!(parse(te, false).framing, Framing::Chunked);
        let gz = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, gzip\r\n\r\n";
        let r = parse(gz, false);
        assert_eq!((r.framing, r.reusable), (Framing::UntilClose, false));
        let none = "HTTP/1.1 200 OK\r\n\r\n";
        assert_eq!(parse(none, false).framing, Framing::UntilClose);
        let nc = "HTTP/1.1 304 Not Modified\r\ncontent-length: 5\r\n\r\n";
        assert_eq!(parse(nc, false).framing, Framing::Empty);
        let old = "HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n";
        assert!(!parse(old, false).reusable);
        let old_ka = "HTTP/1.0 200 OK\r\ncontent-length: 0\r\nconnection: keep-alive\r\n\r\n";
        assert!(parse(old_ka, false).reusable);
        let closing = "HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
        assert!(!parse(closing, false).reusable);
    }

    #[test]
    fn a_length_beside_a_coding_is_dropped_and_a_missing_reason_is_filled_in() {
        let both = "HTTP/1.1 200\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\
                    DATE: Sun, 06 Dec 2026 08:00:00 GMT\r\n\r\n";
        let r = parse(both, false);
        let mut out = Vec::new();
        r.write_to_client(both.as_bytes(), false, &mut out);
        assert_eq!(
            String::from_utf8(out).expect("ascii"),
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\
             DATE: Sun, 06 Dec 2026 08:00:00 GMT\r\n\r\n"
        );
        let odd = "HTTP/1.1 200 Ça va\r\ncontent-length: 0\r\n\r\n";
        let r = parse(odd, false);
        let mut out = Vec::new();
        r.write_to_client(odd.as_bytes(), false, &mut out);
        assert!(out.starts_with(b"HTTP/1.1 200 "), "{out:?}");
    }

    #[test]
    fn odd_heads_fail_the_attempt() {
        for head in [
            "HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
            "HTTP/1.1 101 Switching Protocols\r\n\r\n",
            "HTTP/1.1 2000 OK\r\n\r\n",
            "HTTP/1.1 200 OK\r\nbad\r\n\r\n",
        ] {
            assert!(
                matches!(
                    Response::parse(head.as_bytes(), false, 65536),
                    Parsed::Invalid(_)
                ),
                "{head:?}"
            );
        }
        assert!(matches!(
            Response::parse(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1", false, 65536),
            Parsed::Interim(25)
        ));
    }

    #[test]
    fn the_client_gets_the_head_less_hop_by_hop_fields() {
        let head = "HTTP/1.1 503 Busy\r\nConnection: keep-alive, X-Private\r\nKeep-Alive: timeout=5\r\n\
                    X-Private: 1\r\nTransfer-Encoding: chunked\r\nX-Hostmesh-Error: upstream-reset\r\n\
                    Server: app\r\nDate: Sun, 06 Dec 2026 08:00:00 GMT\r\n\r\n";
        let r = parse(head, false);
        assert_eq!(r.agent_error(head.as_bytes()), Some("upstream-reset"));
        let mut out = Vec::new();
        r.write_to_client(head.as_bytes(), true, &mut out);
        assert_eq!(
            String::from_utf8(out).expect("ascii"),
            "HTTP/1.1 503 Busy\r\nTransfer-Encoding: chunked\r\nX-Hostmesh-Error: upstream-reset\r\n\
             Server: app\r\nDate: Sun, 06 Dec 2026 08:00:00 GMT\r\nconnection: close\r\n\r\n"
        );
    }

    /// RFC 9110 §6.6.1: a response forwarded without a `Date` gets the agent's, once.
    #[test]
    fn a_head_without_a_date_gets_the_agents() {
        let head = "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
        let mut out = Vec::new();
        parse(head, false).write_to_client(head.as_bytes(), false, &mut out);
        let text = String::from_utf8(out).expect("ascii");
        let dates: Vec<&str> = text.lines().filter(|l| l.starts_with("date: ")).collect();
        assert_eq!(dates.len(), 1, "{text:?}");
        assert!(
            text.starts_with("HTTP/1.1 200 OK\r\ncontent-length: 0\r\ndate: "),
            "{text:?}"
        );
        assert!(text.ends_with(" GMT\r\n\r\n"), "{text:?}");
    }
}
