//! Trace context on the lean path (docs/reference/http.md, `[tracing]`): with export on, the hop
//! continues a valid `traceparent` (same trace, its own span as the parent, `tracestate` kept) or
//! starts a trace (no `tracestate`), and exports its span; with export off, both headers pass
//! as they came.

use std::time::Duration;

use hostmesh_tests::{AgentOpts, Backend, wait_for};

use super::{OneHost, assert_lean, get, one_host};
use crate::lifecycle::{CLIENT_SPAN, TRACE_ID, exported_spans};

/// The fields the app got with the request for `path` (names as written, in order).
fn fields_at_app(m: &OneHost, path: &str) -> Vec<(String, String)> {
    let seen = m
        .app
        .requests()
        .into_iter()
        .find(|r| r["path"] == path)
        .unwrap_or_else(|| panic!("the app got no {path}"));
    serde_json::from_value(seen["raw"].clone()).expect("raw header fields")
}

/// Every value of field `name` (any case) among `fields`.
fn values<'a>(fields: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    fields
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
}

/// `00-<trace id>-<parent id>-<flags>` split, if it is a well-formed version 00 value with
/// lowercase hex and non-zero ids (W3C Trace Context §3.2).
fn well_formed(traceparent: &str) -> Option<(String, String, String)> {
    let parts: Vec<&str> = traceparent.split('-').collect();
    let hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            && s.bytes().any(|b| b != b'0')
    };
    match parts[..] {
        ["00", trace, parent, flags] if hex(trace, 32) && hex(parent, 16) && flags.len() == 2 => {
            Some((trace.to_owned(), parent.to_owned(), flags.to_owned()))
        }
        _ => None,
    }
}

#[test]
fn with_export_on_the_hop_continues_or_starts_the_trace_and_exports_its_span() {
    // Every trace the hop starts is sampled, so its span is exported too.
    let m = one_host(
        AgentOpts::new()
            .set_str("tracing", "otlp_endpoint", "http://127.0.0.1:4318")
            .set("tracing", "sample_ratio", "1.0"),
    );
    let collector = Backend::http_on(&m.a, [127, 0, 0, 1].into(), 4318, "");
    let client = format!("00-{TRACE_ID}-{CLIENT_SPAN}-01");
    // The trace id is all zeroes: not a trace to continue.
    let invalid = format!("00-{}-{CLIENT_SPAN}-01", "0".repeat(32));
    let rs = m.conn(|c| {
        [
            get(
                "/continued",
                &format!("traceparent: {client}\r\ntracestate: vendor=1\r\n"),
            ),
            get(
                "/invalid",
                &format!("traceparent: {invalid}\r\ntracestate: vendor=2\r\n"),
            ),
            get("/absent", "tracestate: vendor=3\r\n"),
        ]
        .iter()
        .map(|req| c.request(req))
        .collect::<Vec<_>>()
    });
    for r in &rs {
        assert_eq!((r.status, r.text()), (200, "ok\n".to_owned()), "{}", r.head);
        assert_lean(r, "a traced request");
    }

    let continued = fields_at_app(&m, "/continued");
    let parents = values(&continued, "traceparent");
    let (trace, parent, flags) = match parents[..] {
        [one] => well_formed(one).unwrap_or_else(|| panic!("traceparent {one:?} at the app")),
        _ => panic!("the app got traceparent {parents:?}"),
    };
    assert_eq!(trace, TRACE_ID, "the same trace");
    assert_ne!(parent, CLIENT_SPAN, "the hop's own span as the parent");
    assert_eq!(flags, "01", "still sampled");
    assert_eq!(
        values(&continued, "tracestate"),
        ["vendor=1"],
        "{continued:?}"
    );

    let mut started = Vec::new();
    for path in ["/invalid", "/absent"] {
        let fields = fields_at_app(&m, path);
        let parents = values(&fields, "traceparent");
        let (trace, parent, flags) = match parents[..] {
            [one] => {
                well_formed(one).unwrap_or_else(|| panic!("{path}: traceparent {one:?} at the app"))
            }
            _ => panic!("{path}: the app got traceparent {parents:?}"),
        };
        assert_ne!(trace, TRACE_ID, "{path}");
        assert_eq!(flags, "01", "{path}: sampled at ratio 1");
        assert_eq!(
            values(&fields, "tracestate"),
            Vec::<&str>::new(),
            "{path}: a started trace has no tracestate"
        );
        started.push((trace, parent));
    }
    assert_ne!(started[0].0, started[1].0, "a new trace each time");

    // Each hop's span, exported: a client span, the app's parent; the continued one a child of
    // the client's span, the started ones roots.
    let spans = wait_for(Duration::from_secs(10), "the three spans exported", || {
        let spans = exported_spans(&collector);
        let find = |trace: &str| spans.iter().find(|s| s["traceId"] == trace).cloned();
        Some((find(TRACE_ID)?, find(&started[0].0)?, find(&started[1].0)?))
    });
    let (span, invalid_span, absent_span) = spans;
    assert_eq!(span["kind"], 3, "{span}");
    assert_eq!(span["spanId"], parent.as_str(), "{span}");
    assert_eq!(span["parentSpanId"], CLIENT_SPAN, "{span}");
    for (s, (_, parent)) in [invalid_span, absent_span].iter().zip(&started) {
        assert_eq!(s["kind"], 3, "{s}");
        assert_eq!(s["spanId"], parent.as_str(), "{s}");
        assert!(
            s["parentSpanId"].as_str().is_none_or(str::is_empty),
            "a started trace's span has a parent: {s}"
        );
    }
}

#[test]
fn with_export_off_traceparent_and_tracestate_pass_untouched() {
    let m = one_host(AgentOpts::new());
    let client = format!("00-{TRACE_ID}-{CLIENT_SPAN}-01");
    let invalid = "00-zz-1";
    let rs = m.conn(|c| {
        [
            get(
                "/valid",
                &format!("traceparent: {client}\r\ntracestate: vendor=1\r\n"),
            ),
            get(
                "/invalid",
                &format!("traceparent: {invalid}\r\ntracestate: vendor=2\r\n"),
            ),
            get("/absent", ""),
        ]
        .iter()
        .map(|req| c.request(req))
        .collect::<Vec<_>>()
    });
    for r in &rs {
        assert_eq!((r.status, r.text()), (200, "ok\n".to_owned()), "{}", r.head);
        assert_lean(r, "a request with trace context");
    }
    for (path, parent, state) in [
        ("/valid", vec![client.as_str()], vec!["vendor=1"]),
        ("/invalid", vec![invalid], vec!["vendor=2"]),
        ("/absent", vec![], vec![]),
    ] {
        let fields = fields_at_app(&m, path);
        assert_eq!(values(&fields, "traceparent"), parent, "{path}: {fields:?}");
        assert_eq!(values(&fields, "tracestate"), state, "{path}: {fields:?}");
    }
}
