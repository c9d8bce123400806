//! The wire: what travels between an app, its agent and a peer agent, in one place for every
//! end. Pure: parsing and formatting only, no sockets; it needs only `http`'s types.
//!
//! - This module: the agent-to-agent protocol (docs/reference/http.md, "The peer protocol").
//! - [`headers`]: header hygiene on both hops (hop-by-hop, `x-hostmesh-*`, `Connection`).
//! - [`traceparent`]: W3C Trace Context, read and passed on across hops.
//! - [`duration`]: duration text (`"250ms"`, `"1m 30s"`), for deadlines and every setting.
//!
//! # The peer protocol
//! - HTTP: HTTP/2 to the peer's inbound port. The exact instance travels in `x-hostmesh-dst:
//!   <service>/<instance-id>`, the remaining deadline in `x-hostmesh-timeout`, and the calling
//!   host in `x-hostmesh-src`, which the peer reads only with TLS disabled (with mTLS the
//!   certificate says who calls). The peer resolves the instance
//!   only from its own definitions and never from an address on the wire.
//! - TCP: one line `HOSTMESH-TCP/1 <service> <instance-id> <deadline-ms> [<caller-host>]\n`,
//!   answered `OK\n` or `ERR <reason>\n` before any byte is relayed, so the caller can fail over
//!   or close at once. The calling host is optional on the wire (agents before access policy did
//!   not send it; the receiver then knows no caller) and, like `x-hostmesh-src`, stands in for
//!   the certificate's identity until mTLS.
//!
//! Versioned: a peer that does not know a version answers `ERR unsupported-version` (TCP) or 400
//! (HTTP), and old and new agents run side by side during a rollout.

use std::time::Duration;

use http::{HeaderMap, HeaderValue};

pub mod duration;
pub mod headers;
pub mod traceparent;

/// The longest deadline a hop accepts or passes on: a day, the longest `request_timeout` the
/// agent config allows. The deadline is added to the clock, and passed on in milliseconds that
/// the next hop must be able to read back.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// Names the instance a request is for: `<service>/<instance-id>`.
pub const DST: &str = "x-hostmesh-dst";
/// The calling host as the caller claims it: read only with `tls.mode = "disabled"`.
pub const SRC: &str = "x-hostmesh-src";
/// The wire protocol version of a forwarded HTTP request.
pub const VERSION_HEADER: &str = "x-hostmesh-v";
pub const VERSION: &str = "1";
/// Remaining deadline, from clients and between hops (`250ms`, `2s`).
pub const TIMEOUT: &str = "x-hostmesh-timeout";
/// A client's promise that a request is safe to repeat.
pub const RETRYABLE: &str = "x-hostmesh-retryable";
/// Why the agent answered instead of the app.
pub const ERROR: &str = "x-hostmesh-error";
/// The calling host, for the app.
pub const CALLER: &str = "x-hostmesh-caller";

/// The same names as [`http::HeaderName`]s, made at compile time: a `&str` key is parsed again
/// on every header map operation, and these are used on every proxied request.
pub mod names {
    use http::HeaderName;

    pub const DST: HeaderName = HeaderName::from_static(super::DST);
    pub const SRC: HeaderName = HeaderName::from_static(super::SRC);
    pub const VERSION_HEADER: HeaderName = HeaderName::from_static(super::VERSION_HEADER);
    pub const TIMEOUT: HeaderName = HeaderName::from_static(super::TIMEOUT);
    pub const RETRYABLE: HeaderName = HeaderName::from_static(super::RETRYABLE);
    pub const CALLER: HeaderName = HeaderName::from_static(super::CALLER);
    pub const ERROR: HeaderName = HeaderName::from_static(super::ERROR);
}

/// The agent's own fields of a request from a peer, found in one pass over its header map: a
/// lookup by name hashes the name every time, and the inbound side reads four or five of them
/// per request. Each is the field's first value, as [`http::HeaderMap::get`] gives it.
#[derive(Debug, Default, PartialEq)]
pub struct PeerFields<'a> {
    pub version: Option<&'a HeaderValue>,
    pub dst: Option<&'a HeaderValue>,
    pub src: Option<&'a HeaderValue>,
    pub timeout: Option<&'a HeaderValue>,
    pub retryable: Option<&'a HeaderValue>,
}

impl<'a> PeerFields<'a> {
    pub fn of(headers: &'a HeaderMap) -> PeerFields<'a> {
        let mut fields = PeerFields::default();
        // Values in the map's order: a name's first value comes before its others.
        for (name, value) in headers {
            let slot = match name.as_str() {
                VERSION_HEADER => &mut fields.version,
                DST => &mut fields.dst,
                SRC => &mut fields.src,
                TIMEOUT => &mut fields.timeout,
                RETRYABLE => &mut fields.retryable,
                _ => continue,
            };
            slot.get_or_insert(value);
        }
        fields
    }
}

/// The first bytes of an agent-to-agent TCP stream.
pub const TCP_MAGIC: &[u8] = b"HOSTMESH-TCP/";
/// The longest preface line accepted (service 63 + id 128 + numbers, with room).
pub const TCP_PREFACE_MAX: usize = 256;

/// A parsed TCP preface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpPreface {
    pub service: String,
    pub id: String,
    pub deadline: Duration,
    /// The calling host, as the caller claims it.
    pub caller: Option<String>,
}

impl TcpPreface {
    pub fn encode(&self) -> String {
        let caller = self
            .caller
            .as_deref()
            .map_or(String::new(), |c| format!(" {c}"));
        format!(
            "HOSTMESH-TCP/1 {} {} {}{caller}\n",
            self.service,
            self.id,
            self.deadline.as_millis()
        )
    }

    /// Parses one line (without the newline). Errors are the `ERR` reason to send back.
    pub fn parse(line: &[u8]) -> Result<TcpPreface, &'static str> {
        let line = std::str::from_utf8(line).map_err(|_| "bad-preface")?;
        let mut parts = line.trim_end_matches('\r').split(' ');
        match parts.next() {
            Some("HOSTMESH-TCP/1") => {}
            Some(v) if v.starts_with("HOSTMESH-TCP/") => return Err("unsupported-version"),
            _ => return Err("bad-preface"),
        }
        let (Some(service), Some(id), Some(ms), caller, None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err("bad-preface");
        };
        if caller.is_some_and(str::is_empty) {
            return Err("bad-preface");
        }
        let ms: u64 = ms.parse().map_err(|_| "bad-preface")?;
        if service.is_empty() || id.is_empty() {
            return Err("bad-preface");
        }
        Ok(TcpPreface {
            service: service.to_owned(),
            id: id.to_owned(),
            deadline: Duration::from_millis(ms),
            caller: caller.map(str::to_owned),
        })
    }
}

/// Parses a timeout header value: `250ms`, `2s`, `1m`, or a bare number of milliseconds.
///
/// At most [`MAX_TIMEOUT`]: `18446744073709551615` (ms) overflowed `Instant + deadline` and
/// panicked in a data path thread.
pub fn parse_timeout(value: &str) -> Option<Duration> {
    let v = value.trim();
    // Whole milliseconds, bare or in `ms` (what agents send), without the general parser.
    let whole_ms = |n: &str| {
        (!n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            .then(|| n.parse::<u64>().ok())
            .flatten()
    };
    let d = match whole_ms(v).or_else(|| v.strip_suffix("ms").and_then(whole_ms)) {
        Some(ms) => Duration::from_millis(ms),
        None => duration::parse(v).ok()?,
    };
    Some(d.min(MAX_TIMEOUT))
}

/// Formats a deadline for the next hop, in whole milliseconds (at least 1).
pub fn format_timeout(remaining: Duration) -> String {
    timeout_text(remaining, &mut [0; TEXT_MAX]).to_owned()
}

/// `x-hostmesh-timeout`'s value for `remaining`, as [`format_timeout`] writes it. Every request
/// to a peer or an app carries one: written with `itoa` into the stack, not with `format!`
/// (whose formatting machinery and allocation were 500 instructions per request).
pub fn timeout_value(remaining: Duration) -> http::HeaderValue {
    let mut text = [0; TEXT_MAX];
    let text = timeout_text(remaining, &mut text);
    // Digits and a unit are always a valid value.
    http::HeaderValue::from_str(text).unwrap_or(http::HeaderValue::from_static("1ms"))
}

/// The `x-hostmesh-timeout` line (`name: value\r\n`) for `remaining`, in `buf`, without
/// allocating (the lean HTTP/1 path writes one per request).
pub fn timeout_line(remaining: Duration, buf: &mut [u8; 64]) -> &[u8] {
    let mut text = [0; TEXT_MAX];
    let text = timeout_text(remaining, &mut text).as_bytes();
    let parts: [&[u8]; 4] = [TIMEOUT.as_bytes(), b": ", text, b"\r\n"];
    let mut n = 0;
    // Fits: the name (18 bytes), at most 23 digits (`Duration::MAX` in ms), the unit and CRLF.
    for p in parts {
        buf[n..n + p.len()].copy_from_slice(p);
        n += p.len();
    }
    &buf[..n]
}

/// Room for a timeout's text: the digits of a `u128` and the unit.
const TEXT_MAX: usize = 48;

/// The timeout's text (`1500ms`) in `buf`.
fn timeout_text(remaining: Duration, buf: &mut [u8; TEXT_MAX]) -> &str {
    let mut digits = itoa::Buffer::new();
    let digits = digits.format(timeout_millis(remaining)).as_bytes();
    let n = digits.len();
    buf[..n].copy_from_slice(digits);
    buf[n..n + 2].copy_from_slice(b"ms");
    // ASCII digits and "ms".
    std::str::from_utf8(&buf[..n + 2]).unwrap_or("1ms")
}

/// Whole milliseconds, at least 1: a deadline is never sent as already passed.
fn timeout_millis(remaining: Duration) -> u128 {
    remaining.as_millis().max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_fields_are_what_lookups_by_name_give() {
        let mut h = HeaderMap::new();
        for (name, value) in [
            ("host", "orders"),
            (DST, "orders/1"),
            (TIMEOUT, "250ms"),
            ("x-hostmesh-other", "x"),
            (DST, "orders/2"),
            (VERSION_HEADER, VERSION),
            (SRC, "web-01"),
        ] {
            h.append(name, HeaderValue::from_static(value));
        }
        let fields = PeerFields::of(&h);
        let by_name = PeerFields {
            version: h.get(VERSION_HEADER),
            dst: h.get(DST),
            src: h.get(SRC),
            timeout: h.get(TIMEOUT),
            retryable: h.get(RETRYABLE),
        };
        assert_eq!(fields, by_name);
        assert_eq!(
            fields.dst.map(HeaderValue::as_bytes),
            Some(&b"orders/1"[..])
        );
        assert_eq!(fields.retryable, None);
    }

    #[test]
    fn the_timeout_line_matches_the_header_value() {
        let mut buf = [0u8; 64];
        let d = Duration::from_micros(2_500_400);
        let line = timeout_line(d, &mut buf);
        assert_eq!(
            line,
            format!("{TIMEOUT}: {}\r\n", format_timeout(d)).as_bytes()
        );
        assert_eq!(
            timeout_line(Duration::ZERO, &mut buf),
            b"x-hostmesh-timeout: 1ms\r\n"
        );
        let long = timeout_line(Duration::MAX, &mut buf).to_vec();
        assert!(long.ends_with(b"ms\r\n"), "{long:?}");
    }

    #[test]
    fn preface_round_trips_and_rejects_junk() {
        let p = TcpPreface {
            service: "redis".into(),
            id: "redis-1".into(),
            deadline: Duration::from_millis(1500),
            caller: None,
        };
        let line = p.encode();
        assert_eq!(line, "HOSTMESH-TCP/1 redis redis-1 1500\n");
        assert_eq!(TcpPreface::parse(line.trim_end().as_bytes()), Ok(p.clone()));
        let p = TcpPreface {
            caller: Some("web-01".into()),
            ..p
        };
        let line = p.encode();
        assert_eq!(line, "HOSTMESH-TCP/1 redis redis-1 1500 web-01\n");
        assert_eq!(TcpPreface::parse(line.trim_end().as_bytes()), Ok(p));
        assert_eq!(
            TcpPreface::parse(b"HOSTMESH-TCP/2 a b 1"),
            Err("unsupported-version")
        );
        for bad in [
            &b"GET / HTTP/1.1"[..],
            b"HOSTMESH-TCP/1 a b",
            b"HOSTMESH-TCP/1 a b x",
            b"HOSTMESH-TCP/1 a b 1 host extra",
            b"HOSTMESH-TCP/1 a b 1 ",
            b"\xff",
        ] {
            assert_eq!(TcpPreface::parse(bad), Err("bad-preface"), "{bad:?}");
        }
    }

    #[test]
    fn timeouts_parse() {
        assert_eq!(parse_timeout("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_timeout("2s"), Some(Duration::from_secs(2)));
        assert_eq!(parse_timeout("300"), Some(Duration::from_millis(300)));
        assert_eq!(parse_timeout("soon"), None);
        // Only digits take the whole-milliseconds shortcut; the rest is the general parser's.
        assert_eq!(parse_timeout("1.5ms"), Some(Duration::from_micros(1500)));
        assert_eq!(parse_timeout("+5ms"), None);
        assert_eq!(parse_timeout("ms"), None);
        assert_eq!(
            parse_timeout("99999999999999999999999ms"),
            Some(Duration::from_secs(24 * 3600))
        );
        // Found by the peer_headers fuzz target: overflowed `Instant + deadline`.
        let day = Duration::from_secs(24 * 3600);
        assert_eq!(parse_timeout("18446744073709551615"), Some(day));
        assert_eq!(parse_timeout("18446744073709551615s"), Some(day));
        assert_eq!(parse_timeout(&format_timeout(day)), Some(day));
        assert_eq!(format_timeout(Duration::from_micros(10)), "1ms");
    }
}
