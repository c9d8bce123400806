//! The `date` field of responses the agent writes to HTTP/1.1 clients itself (the lean path)
//! when they have none: RFC 9110 §6.6.1 asks a recipient with a clock to add one to a response it
//! forwards without, and an origin (the agent, for its own answers) to send one. hyper's server,
//! which writes the other paths' responses, does the same.
//!
//! The text changes once a second, so each worker thread keeps the line and makes it again only
//! when the second has changed.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

thread_local! {
    /// The second the line was made for, and the line.
    static LINE: RefCell<(u64, Vec<u8>)> = const { RefCell::new((u64::MAX, Vec::new())) };
}

/// Appends `date: <IMF-fixdate>\r\n` for now to `out`.
pub fn write_line(out: &mut Vec<u8>) {
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    LINE.with_borrow_mut(|(made_for, line)| {
        if *made_for != second {
            line.clear();
            line.extend_from_slice(b"date: ");
            line.extend_from_slice(httpdate::fmt_http_date(now).as_bytes());
            line.extend_from_slice(b"\r\n");
            *made_for = second;
        }
        out.extend_from_slice(line);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_is_an_imf_fixdate_of_now() {
        let mut out = Vec::new();
        write_line(&mut out);
        let text = std::str::from_utf8(&out).expect("ASCII");
        let value = text
            .strip_prefix("date: ")
            .and_then(|t| t.strip_suffix("\r\n"))
            .unwrap_or_else(|| panic!("not a date line: {text:?}"));
        assert_eq!(value.len(), 29, "{value}");
        assert!(value.ends_with(" GMT"), "{value}");
        let then = httpdate::parse_http_date(value).expect("an HTTP date");
        let off = SystemTime::now()
            .duration_since(then)
            .expect("not in the future");
        assert!(off.as_secs() <= 2, "{value} is {off:?} old");
    }
}
