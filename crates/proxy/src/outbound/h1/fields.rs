//! Header fields kept as offsets into the buffer they were parsed from, so a head is parsed once
//! and copied once (into the head written on), with no map and no allocation per field.

use std::ops::Range;

use crate::app_request;
use hostmesh_wire::headers;

/// One header field: where its name and value are in the buffer.
#[derive(Debug, Clone)]
pub struct Field {
    name: Range<usize>,
    value: Range<usize>,
}

impl Field {
    /// The field whose name and value are these slices of `buf`.
    pub fn of(buf: &[u8], name: &str, value: &[u8]) -> Field {
        Field {
            name: range_of(buf, name.as_bytes()),
            value: range_of(buf, value),
        }
    }

    pub fn name<'b>(&self, buf: &'b [u8]) -> &'b [u8] {
        &buf[self.name.clone()]
    }

    pub fn value<'b>(&self, buf: &'b [u8]) -> &'b [u8] {
        &buf[self.value.clone()]
    }

    /// Where the value is in the buffer.
    pub fn value_range(&self) -> Range<usize> {
        self.value.clone()
    }

    /// Writes the field as a header line.
    pub fn write(&self, buf: &[u8], out: &mut Vec<u8>) {
        write_line(out, self.name(buf), self.value(buf));
    }
}

/// Writes `name: value` and CRLF: a header line of a head the agent writes.
pub fn write_line(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Writes the header lines an app gets of a request's `fields` (names and values), by
/// `app_request`'s rules: a field stays unless `app_request::drops` it (`named`: the names the
/// request's `Connection` lists) or `also_drops` does, and the first `te` asking for trailers
/// becomes `te: trailers`, where it was. The lean path (from the client's head) and the inbound
/// leg to apps (from a peer's fields) both write by it.
pub fn write_for_app<'a>(
    fields: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
    named: &[&str],
    also_drops: impl Fn(&[u8]) -> bool,
    out: &mut Vec<u8>,
) {
    let mut trailers = false;
    for (name, value) in fields {
        if !app_request::drops(name, is_named(named, name)) && !also_drops(name) {
            write_line(out, name, value);
        } else if !trailers && name.eq_ignore_ascii_case(b"te") && app_request::te_for_app(value) {
            out.extend_from_slice(b"te: trailers\r\n");
            trailers = true;
        }
    }
}

/// Where `part`, a slice of `buf`, sits in it. An empty `part` may come from elsewhere (httparse
/// answers a missing reason phrase with a `""` of its own): any empty range stands for it.
pub fn range_of(buf: &[u8], part: &[u8]) -> Range<usize> {
    if part.is_empty() {
        return 0..0;
    }
    let start = (part.as_ptr() as usize).wrapping_sub(buf.as_ptr() as usize);
    assert!(
        start
            .checked_add(part.len())
            .is_some_and(|end| end <= buf.len()),
        "not a slice of the buffer"
    );
    start..start + part.len()
}

/// The values of the fields named `name` (lowercase), in order.
pub fn values<'b>(
    buf: &'b [u8],
    fields: &'b [Field],
    name: &'b str,
) -> impl Iterator<Item = &'b [u8]> + 'b {
    fields
        .iter()
        .filter(move |f| f.name(buf).eq_ignore_ascii_case(name.as_bytes()))
        .map(move |f| f.value(buf))
}

/// The header names the `Connection` fields make hop-by-hop (see
/// [`headers::named_by_connection`]). Empty, and unallocated, for the usual `keep-alive`.
pub fn connection_named<'b>(buf: &'b [u8], fields: &'b [Field]) -> Vec<&'b str> {
    headers::named_by_connection(values(buf, fields, "connection"))
}

/// Whether `name` (any case) is one of the names a `Connection` field listed (`named`).
pub fn is_named(named: &[&str], name: &[u8]) -> bool {
    named
        .iter()
        .any(|c| c.as_bytes().eq_ignore_ascii_case(name))
}

/// Whether a `Connection` value names any field ([`headers::connection_named`]): most say only
/// `keep-alive` or `close`.
pub fn names_fields(value: &[u8]) -> bool {
    // The usual values, without splitting them into tokens.
    if value.eq_ignore_ascii_case(b"keep-alive") || value.eq_ignore_ascii_case(b"close") {
        return false;
    }
    headers::visible_ascii(value).is_some_and(|v| headers::connection_named(v).next().is_some())
}

/// Whether a comma-separated value has `token` (any case).
pub fn has_token(value: &[u8], token: &str) -> bool {
    headers::visible_ascii(value).is_some_and(|v| headers::has_token(v, token))
}

/// A `Content-Length` value: digits only (no sign, no spaces inside), as the strict guard reads
/// it, and at most 19 of them.
pub fn digits(value: &[u8]) -> Option<u64> {
    if value.len() > 19 {
        return None;
    }
    crate::outbound::strict_h1::digits(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_are_digits_only() {
        assert_eq!(digits(b"0"), Some(0));
        assert_eq!(digits(b"65536"), Some(65536));
        for bad in [
            &b""[..],
            b"+1",
            b"-1",
            b"1 ",
            b"1,1",
            b"0x10",
            b"99999999999999999999",
        ] {
            assert_eq!(digits(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn connection_tokens() {
        let buf = b"Connection: keep-alive\r\nconnection: Close, X-Private\r\n";
        let name = |r: std::ops::Range<usize>| std::str::from_utf8(&buf[r]).expect("ascii");
        let fields = [
            Field::of(buf, name(0..10), &buf[12..22]),
            Field::of(buf, name(24..34), &buf[36..52]),
        ];
        assert_eq!(connection_named(buf, &fields), ["X-Private"]);
        assert!(!names_fields(fields[0].value(buf)));
        assert!(names_fields(fields[1].value(buf)));
        assert!(!names_fields(b"Keep-Alive, close"));
        assert!(has_token(fields[1].value(buf), "close"));
        assert!(!has_token(fields[0].value(buf), "close"));
        // The framing fields stay, whatever `Connection` says: the body is relayed by them.
        let buf = b"Connection: content-length, Transfer-Encoding\r\n";
        let name = std::str::from_utf8(&buf[..10]).expect("ascii");
        let fields = [Field::of(buf, name, &buf[12..45])];
        assert!(connection_named(buf, &fields).is_empty());
        assert!(!names_fields(fields[0].value(buf)));
    }
}
