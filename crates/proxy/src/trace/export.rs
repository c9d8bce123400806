//! OTLP/HTTP export of finished spans: JSON (the protobuf JSON mapping) POSTed to
//! `<otlp_endpoint>/v1/traces` once a second, at most 512 spans per request. A collector that
//! is down or slow costs spans (logged and counted), never requests: the proxy only ever does a
//! non-blocking send into a bounded queue.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Kind;
use hostmesh_wire::traceparent::hex;

const BATCH: usize = 512;
const EVERY: Duration = Duration::from_secs(1);
const TIMEOUT: Duration = Duration::from_secs(5);

/// Spans dropped because the queue was full or the collector failed.
static DROPPED: AtomicU64 = AtomicU64::new(0);

pub(super) fn note_dropped() {
    DROPPED.fetch_add(1, Ordering::Relaxed);
}

/// A finished span.
#[derive(Debug)]
pub struct SpanRecord {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent_span_id: Option<[u8; 8]>,
    pub kind: Kind,
    pub service: String,
    pub method: String,
    pub status: u16,
    pub start: SystemTime,
    pub end: SystemTime,
}

#[derive(Debug)]
pub struct Exporter {
    url: String,
    host: String,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Exporter {
    pub fn new(endpoint: &str, host: &str) -> Exporter {
        Exporter {
            url: format!("{}/v1/traces", endpoint.trim_end_matches('/')),
            host: host.to_owned(),
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    async fn send(&self, spans: &[SpanRecord]) -> Result<(), String> {
        let body = serde_json::to_vec(&encode(&self.host, spans)).map_err(|e| e.to_string())?;
        let req = http::Request::post(&self.url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let resp = tokio::time::timeout(TIMEOUT, self.client.request(req))
            .await
            .map_err(|_| format!("no answer within {TIMEOUT:?}"))?
            .map_err(|e| e.to_string())?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(format!("answered {}", resp.status()))
        }
    }
}

/// Exports what `spans` delivers until `cancel`, then flushes once more.
pub async fn run(
    exporter: Exporter,
    mut spans: mpsc::Receiver<SpanRecord>,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let last = tokio::select! {
            () = cancel.cancelled() => true,
            _ = tick.tick() => false,
        };
        // Whatever is queued now, in requests of at most BATCH spans.
        while let Ok(span) = spans.try_recv() {
            batch.push(span);
            if batch.len() == BATCH {
                flush(&exporter, &mut batch).await;
            }
        }
        flush(&exporter, &mut batch).await;
        let dropped = DROPPED.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            tracing::warn!(dropped, url = exporter.url, "trace spans dropped");
        }
        if last {
            return;
        }
    }
}

async fn flush(exporter: &Exporter, batch: &mut Vec<SpanRecord>) {
    if batch.is_empty() {
        return;
    }
    if let Err(e) = exporter.send(batch).await {
        tracing::debug!(
            url = exporter.url,
            spans = batch.len(),
            "trace export failed: {e}"
        );
        DROPPED.fetch_add(batch.len() as u64, Ordering::Relaxed);
    }
    batch.clear();
}

fn unix_nanos(t: SystemTime) -> String {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
        .to_string()
}

fn string(key: &str, value: &str) -> Value {
    json!({"key": key, "value": {"stringValue": value}})
}

/// The OTLP `ExportTraceServiceRequest` in the protobuf JSON mapping (ids as hex, 64-bit
/// integers as strings).
fn encode(host: &str, spans: &[SpanRecord]) -> Value {
    let spans: Vec<Value> = spans
        .iter()
        .map(|s| {
            let (kind, direction) = match s.kind {
                Kind::Server => (2, "inbound"),
                Kind::Client => (3, "outbound"),
            };
            let mut span = json!({
                "traceId": hex(&s.trace_id),
                "spanId": hex(&s.span_id),
                "name": format!("{direction} {}", s.service),
                "kind": kind,
                "startTimeUnixNano": unix_nanos(s.start),
                "endTimeUnixNano": unix_nanos(s.end),
                "attributes": [
                    string("hostmesh.service", &s.service),
                    string("hostmesh.direction", direction),
                    string("http.request.method", &s.method),
                    json!({"key": "http.response.status_code",
                           "value": {"intValue": s.status.to_string()}}),
                ],
                // 2 = ERROR; otherwise unset, as OpenTelemetry's HTTP conventions say.
                "status": if s.status >= 500 { json!({"code": 2}) } else { json!({}) },
            });
            if let Some(p) = s.parent_span_id {
                span["parentSpanId"] = Value::String(hex(&p));
            }
            span
        })
        .collect();
    json!({
        "resourceSpans": [{
            "resource": {"attributes": [
                string("service.name", "hostmesh"),
                string("host.name", host),
                string("service.version", crate::VERSION),
            ]},
            "scopeSpans": [{
                "scope": {"name": "hostmesh", "version": crate::VERSION},
                "spans": spans,
            }],
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_the_otlp_json_mapping() {
        let t = UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789);
        let span = SpanRecord {
            trace_id: [0xab; 16],
            span_id: [0x01; 8],
            parent_span_id: Some([0x02; 8]),
            kind: Kind::Client,
            service: "orders".into(),
            method: "GET".into(),
            status: 502,
            start: t,
            end: t + Duration::from_millis(3),
        };
        let v = encode("web-1", &[span]);
        let s = &v["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
        assert_eq!(s["traceId"], "abababababababababababababababab");
        assert_eq!(s["spanId"], "0101010101010101");
        assert_eq!(s["parentSpanId"], "0202020202020202");
        assert_eq!(s["kind"], 3);
        assert_eq!(s["startTimeUnixNano"], "1700000000123456789");
        assert_eq!(s["endTimeUnixNano"], "1700000000126456789");
        assert_eq!(s["status"]["code"], 2);
        assert_eq!(s["attributes"][3]["value"]["intValue"], "502");
        assert_eq!(
            v["resourceSpans"][0]["resource"]["attributes"][1]["value"]["stringValue"],
            "web-1"
        );
    }
}
