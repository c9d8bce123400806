//! The two line formats: JSON (one object per line) and HAProxy's HTTP and TCP log formats, so
//! that pipelines built for HAProxy (grok's `HAPROXYHTTP` and `HAPROXYTCP`, GoAccess, halog)
//! read hostmesh's lines unchanged. Pure: an [`Entry`] in, a line out (no newline).

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use super::entry::Entry;

/// `[access_log] format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Haproxy,
}

impl Format {
    /// Appends `e`'s line (without a newline) to `out`.
    pub fn write(self, e: &Entry, out: &mut String) {
        match self {
            Format::Json => json_line(e, out),
            Format::Haproxy if e.protocol == "tcp" => out.push_str(&haproxy_tcp(e)),
            Format::Haproxy => out.push_str(&haproxy_http(e)),
        }
    }

    /// `e`'s line.
    pub fn line(self, e: &Entry) -> String {
        let mut out = String::new();
        self.write(e, &mut out);
        out
    }
}

/// `2026-12-05T17:03:18.123Z` (UTC, milliseconds).
fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// HAProxy's accept date, `05/Dec/2026:17:03:18.123`, in UTC (HAProxy writes local time; a
/// mesh spans time zones, and UTC lines sort and join across hosts).
fn haproxy_date(t: SystemTime) -> String {
    let s = rfc3339(t);
    // YYYY-MM-DDTHH:MM:SS.mmmZ, which humantime always writes for dates after 1970.
    let (Some(year), Some(month), Some(day), Some(time)) =
        (s.get(0..4), s.get(5..7), s.get(8..10), s.get(11..23))
    else {
        return s;
    };
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = month
        .parse::<usize>()
        .ok()
        .and_then(|m| MONTHS.get(m.checked_sub(1)?))
        .copied()
        .unwrap_or("???");
    format!("{day}/{month}/{year}:{time}")
}

fn millis(d: Duration) -> u128 {
    d.as_millis()
}

/// Milliseconds with microseconds as the fraction (`4.1`, not `4.1000000000000005`).
fn fractional_millis(d: Duration) -> f64 {
    // Microseconds of a request fit a f64 exactly (below 2⁵³ µs is 285 years).
    #[allow(clippy::cast_precision_loss)]
    let micros = d.as_micros() as f64;
    micros / 1000.0
}

/// Written by hand rather than through `serde_json::Value`: a map and a string per field, for
/// every request, were most of what a JSON line cost.
fn json_line(e: &Entry, out: &mut String) {
    let tcp = e.protocol == "tcp";
    out.push_str("{\"time\":");
    json_str(out, Some(&rfc3339(e.start)));
    out.push_str(",\"direction\":");
    json_str(out, Some(e.direction.as_str()));
    out.push_str(",\"protocol\":");
    json_str(out, Some(e.protocol));
    out.push_str(",\"client\":");
    json_str(out, e.client.map(|c| c.to_string()).as_deref());
    out.push_str(",\"caller\":");
    json_str(out, e.caller.as_deref());
    out.push_str(",\"service\":");
    json_str(out, Some(&e.service));
    out.push_str(",\"instance\":");
    json_str(out, e.instance.as_deref());
    if !tcp {
        out.push_str(",\"method\":");
        json_str(out, e.method.as_deref());
        out.push_str(",\"path\":");
        json_str(out, e.path.as_deref());
        out.push_str(",\"status\":");
        match e.status {
            Some(s) => {
                let _ = write!(out, "{s}");
            }
            None => out.push_str("null"),
        }
    }
    let _ = write!(
        out,
        ",\"bytes_in\":{},\"bytes_out\":{}",
        e.bytes_in, e.bytes_out
    );
    if !tcp {
        out.push_str(",\"headers_ms\":");
        match e.to_headers {
            Some(d) => {
                let _ = write!(out, "{}", fractional_millis(d));
            }
            None => out.push_str("null"),
        }
    }
    let _ = write!(
        out,
        ",\"duration_ms\":{},\"attempts\":{}",
        fractional_millis(e.duration),
        e.attempts
    );
    out.push_str(",\"error\":");
    json_str(out, e.error.as_deref());
    out.push_str(",\"trace_id\":");
    json_str(out, e.trace_id.as_deref());
    out.push('}');
}

/// A JSON string (RFC 8259 escapes), or `null`.
fn json_str(out: &mut String, s: Option<&str>) {
    let Some(s) = s else {
        out.push_str("null");
        return;
    };
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// HAProxy's "frontend": where the request came in.
fn frontend(e: &Entry) -> String {
    format!("hostmesh-{}", e.direction.as_str())
}

/// HAProxy's `backend/server`: the service and `HOST:ID` of the instance (a `/` would split
/// it), or `<NOSRV>` as HAProxy writes when no server was reached.
fn backend_server(e: &Entry) -> String {
    let server = e
        .instance
        .as_deref()
        .map_or_else(|| "<NOSRV>".to_owned(), |i| i.replacen('/', ":", 1));
    format!("{}/{server}", e.service)
}

fn client(e: &Entry) -> String {
    e.client
        .map_or_else(|| "-:0".to_owned(), |c| format!("{}:{}", c.ip(), c.port()))
}

/// HAProxy's termination state: who ended the exchange and when, from the agent's reason.
fn termination(e: &Entry) -> &'static str {
    match e.error.as_deref() {
        None => "----",
        Some("bad-request") => "CR--",
        Some("forbidden") => "PR--",
        Some("no-endpoints" | "no-local-instance" | "upstream-unreachable") => "SC--",
        Some("deadline-exceeded") => "sH--",
        Some("upstream-reset") => "SH--",
        Some(_) => "PH--",
    }
}

fn retries(e: &Entry) -> u32 {
    e.attempts.saturating_sub(1)
}

/// `client:port [date] frontend backend/server TR/Tw/Tc/Tr/Ta status bytes - - term
/// actconn/feconn/beconn/srv_conn/retries srv_queue/backend_queue "METHOD PATH HTTP/1.1"`.
/// The agent does not measure HAProxy's request, queue and connect times: they are 0; Tr is
/// the time to the response head (-1 without one) and Ta the whole exchange. Bytes are the
/// response body's. Connection counts and queues are 0.
fn haproxy_http(e: &Entry) -> String {
    let tr = e
        .to_headers
        .map_or_else(|| "-1".to_owned(), |d| millis(d).to_string());
    let mut line = format!(
        "{} [{}] {} {} 0/0/0/{tr}/{} {} {} - - {} 0/0/0/0/{} 0/0 \"",
        client(e),
        haproxy_date(e.start),
        frontend(e),
        backend_server(e),
        millis(e.duration),
        e.status.unwrap_or(0),
        e.bytes_out,
        termination(e),
        retries(e),
    );
    // A request line with a space or quote in it would not parse back; HAProxy escapes those as
    // #XX too.
    let request = format!(
        "{} {}",
        e.method.as_deref().unwrap_or("-"),
        e.path.as_deref().unwrap_or("-")
    );
    for c in request.chars() {
        match c {
            '"' | '\\' => {
                let _ = write!(line, "#{:02X}", c as u32);
            }
            c if c.is_control() => {
                let _ = write!(line, "#{:02X}", u32::from(c) & 0xff);
            }
            c => line.push(c),
        }
    }
    line.push_str(" HTTP/1.1\"");
    line
}

/// `client:port [date] frontend backend/server Tw/Tc/Tt bytes term
/// actconn/feconn/beconn/srv_conn/retries srv_queue/backend_queue`; bytes are those sent to
/// the client.
fn haproxy_tcp(e: &Entry) -> String {
    format!(
        "{} [{}] {} {} 0/0/{} {} {} 0/0/0/0/{} 0/0",
        client(e),
        haproxy_date(e.start),
        frontend(e),
        backend_server(e),
        millis(e.duration),
        e.bytes_out,
        termination(e),
        retries(e),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::{Value, json};

    use super::super::entry::Direction;
    use super::*;

    fn entry() -> Entry {
        let mut e = Entry::new(Direction::Outbound, "http", "orders");
        // 2026-12-05T17:03:18.123Z
        e.start = SystemTime::UNIX_EPOCH + Duration::from_millis(1_796_490_198_123);
        e.client = Some("127.0.0.1:40312".parse().unwrap());
        e.caller = Some("a".into());
        e.instance = Some("b/orders-1".into());
        e.method = Some("GET".into());
        e.path = Some("/api/x?q=1".into());
        e.status = Some(200);
        e.bytes_in = 0;
        e.bytes_out = 2750;
        e.to_headers = Some(Duration::from_micros(3400));
        e.duration = Duration::from_micros(4100);
        e.attempts = 2;
        e.trace_id = Some("4bf92f3577b34da6a3ce929d0e0e4736".into());
        e
    }

    #[test]
    fn haproxy_http_lines_read_like_haproxys() {
        assert_eq!(
            Format::Haproxy.line(&entry()),
            "127.0.0.1:40312 [05/Dec/2026:17:03:18.123] hostmesh-outbound orders/b:orders-1 \
             0/0/0/3/4 200 2750 - - ---- 0/0/0/0/1 0/0 \"GET /api/x?q=1 HTTP/1.1\""
        );
        let mut e = entry();
        e.instance = None;
        e.status = Some(503);
        e.error = Some("no-endpoints".into());
        e.to_headers = None;
        e.path = Some("/a \"b\"".into());
        assert_eq!(
            Format::Haproxy.line(&e),
            "127.0.0.1:40312 [05/Dec/2026:17:03:18.123] hostmesh-outbound orders/<NOSRV> \
             0/0/0/-1/4 503 2750 - - SC-- 0/0/0/0/1 0/0 \"GET /a #22b#22 HTTP/1.1\""
        );
    }

    #[test]
    fn haproxy_tcp_lines_read_like_haproxys() {
        let mut e = entry();
        e.protocol = "tcp";
        e.direction = Direction::Inbound;
        e.duration = Duration::from_millis(5003);
        assert_eq!(
            Format::Haproxy.line(&e),
            "127.0.0.1:40312 [05/Dec/2026:17:03:18.123] hostmesh-inbound orders/b:orders-1 \
             0/0/5003 2750 ---- 0/0/0/0/1 0/0"
        );
    }

    #[test]
    fn json_lines_have_every_field() {
        let v: Value = serde_json::from_str(&Format::Json.line(&entry())).unwrap();
        assert_eq!(
            v,
            json!({
                "time": "2026-12-05T17:03:18.123Z", "direction": "outbound", "protocol": "http",
                "client": "127.0.0.1:40312", "caller": "a", "service": "orders",
                "instance": "b/orders-1", "method": "GET", "path": "/api/x?q=1", "status": 200,
                "bytes_in": 0, "bytes_out": 2750, "headers_ms": 3.4, "duration_ms": 4.1,
                "attempts": 2, "error": null,
                "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736"
            })
        );
        let mut tcp = entry();
        tcp.protocol = "tcp";
        let v: Value = serde_json::from_str(&Format::Json.line(&tcp)).unwrap();
        assert!(v.get("status").is_none() && v.get("method").is_none());
        // Whatever a path holds, the line is one JSON object that says it back.
        let mut odd = entry();
        odd.path = Some("/a\"b\\c\n\u{1}\u{7f}é".into());
        odd.error = None;
        odd.to_headers = None;
        let line = Format::Json.line(&odd);
        assert!(!line.contains('\n'), "{line}");
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["path"], "/a\"b\\c\n\u{1}\u{7f}é");
        assert_eq!(v["headers_ms"], Value::Null);
    }
}
