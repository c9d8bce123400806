//! Tracing across hops (W3C Trace Context). With `[tracing] otlp_endpoint` set, every request
//! the agent proxies is one span per hop: a client span where an app's request leaves this host
//! (outbound), a server span where a peer's request reaches this host's app (inbound). The
//! span's id replaces the parent id in the `traceparent` the next hop receives, so the app sees
//! the same trace id with the agent's span as its parent; `tracestate` passes unchanged.
//! Sampling is parent-based: a `traceparent` that says sampled is recorded, one that says not
//! is not; a request without one starts a trace sampled at `sample_ratio`. Sampled spans are
//! exported over OTLP/HTTP (`export`). Without an endpoint the agent leaves both headers alone.
//!
//! Why not the OpenTelemetry SDK: the proxy needs one span per request with a few attributes,
//! created and ended on the hot path; the SDK brings its own global provider, an HTTP or gRPC
//! exporter stack beside hyper, and per-span allocation and locking we do not need. The part
//! of OTLP used here (JSON over HTTP) is small and stable, and its encoding is tested.

mod export;

use std::time::SystemTime;

use http::HeaderMap;
use http::header::HeaderValue;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use export::SpanRecord;
use hostmesh_config::TracingSection;
pub use hostmesh_wire::traceparent::TraceContext;

pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";
/// Spans waiting for export; beyond this they are dropped (and counted), never waited for.
const QUEUE: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Where an app's request leaves this host.
    Client,
    /// Where a peer's request reaches this host's app.
    Server,
}

/// The agent's tracer: off (no endpoint) or exporting.
#[derive(Debug, Clone, Default)]
pub struct Tracer {
    export: Option<Export>,
}

#[derive(Debug, Clone)]
struct Export {
    queue: mpsc::Sender<SpanRecord>,
    sample_ratio: f64,
}

impl Tracer {
    /// A tracer for `config`: exporting from a task of its own until `cancel` when an endpoint is
    /// set, else off.
    pub fn start(config: &TracingSection, host: &str, cancel: CancellationToken) -> Tracer {
        let Some(endpoint) = &config.otlp_endpoint else {
            return Tracer::default();
        };
        let (queue, spans) = mpsc::channel(QUEUE);
        tokio::spawn(export::run(
            export::Exporter::new(endpoint, host),
            spans,
            cancel,
        ));
        Tracer {
            export: Some(Export {
                queue,
                sample_ratio: config.sample_ratio,
            }),
        }
    }

    /// Whether hops are traced (an exporter is set).
    pub fn is_on(&self) -> bool {
        self.export.is_some()
    }

    /// Starts this hop's span for a request with `headers`, and makes it the parent the next hop
    /// sees. Off: nothing changes and `None`.
    pub fn hop(
        &self,
        headers: &mut HeaderMap,
        kind: Kind,
        service: &str,
        method: &http::Method,
    ) -> Option<Hop> {
        // Off (the default): not even a header lookup per request.
        self.export.as_ref()?;
        let incoming = headers.get(TRACEPARENT).and_then(|v| v.to_str().ok());
        let hop = self.begin(incoming, kind, service, method.as_str())?;
        hop.write_headers(headers);
        Some(hop)
    }

    /// [`Self::hop`] for a request whose headers are not in a `HeaderMap` (the lean HTTP/1
    /// path): `incoming` is its `traceparent`. The caller sends [`Hop::traceparent`] on and drops
    /// `tracestate` unless [`Hop::continues`].
    pub fn begin(
        &self,
        incoming: Option<&str>,
        kind: Kind,
        service: &str,
        method: &str,
    ) -> Option<Hop> {
        let export = self.export.as_ref()?;
        let parent = incoming.and_then(TraceContext::parse);
        let sampled = match &parent {
            Some(ctx) => ctx.sampled(),
            None => hostmesh_balance::unit_roll() < export.sample_ratio,
        };
        let trace_id = match &parent {
            Some(p) => p.trace_id,
            None => random_trace_id(),
        };
        let this = TraceContext {
            trace_id,
            span_id: random_span_id(),
            flags: parent.map_or(0, |p| p.flags),
        }
        .with_sampled(sampled);
        Some(Hop {
            this,
            parent: parent.map(|p| p.span_id),
            kind,
            service: service.to_owned(),
            method: method.to_owned(),
            start: SystemTime::now(),
            queue: sampled.then(|| export.queue.clone()),
        })
    }
}

/// One hop's span, open until [`Hop::finish`].
#[derive(Debug)]
pub struct Hop {
    this: TraceContext,
    parent: Option<[u8; 8]>,
    kind: Kind,
    service: String,
    method: String,
    start: SystemTime,
    /// `None` when not sampled: nothing is recorded.
    queue: Option<mpsc::Sender<SpanRecord>>,
}

impl Hop {
    /// The `traceparent` the next hop gets: this span as the parent.
    /// Makes this hop the parent the next hop sees in `headers`: its `traceparent`, and no
    /// `tracestate` unless it continues the client's trace (W3C: tracestate means nothing
    /// without a valid traceparent).
    pub fn write_headers(&self, headers: &mut HeaderMap) {
        if !self.continues() {
            headers.remove(TRACESTATE);
        }
        if let Ok(v) = HeaderValue::from_str(&self.traceparent()) {
            headers.insert(TRACEPARENT, v);
        }
    }

    pub fn traceparent(&self) -> String {
        self.this.header()
    }

    /// Whether the request came with a valid `traceparent` (this span continues its trace).
    pub fn continues(&self) -> bool {
        self.parent.is_some()
    }

    /// Ends the span when the response head is ready; its status decides the span's status.
    pub fn finish(self, status: u16) {
        let Some(queue) = self.queue else {
            return;
        };
        let record = SpanRecord {
            trace_id: self.this.trace_id,
            span_id: self.this.span_id,
            parent_span_id: self.parent,
            kind: self.kind,
            service: self.service,
            method: self.method,
            status,
            start: self.start,
            end: SystemTime::now(),
        };
        if queue.try_send(record).is_err() {
            export::note_dropped();
        }
    }
}

fn random_trace_id() -> [u8; 16] {
    loop {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&hostmesh_balance::random_u64().to_be_bytes());
        id[8..].copy_from_slice(&hostmesh_balance::random_u64().to_be_bytes());
        if id != [0; 16] {
            return id;
        }
    }
}

fn random_span_id() -> [u8; 8] {
    loop {
        let id = hostmesh_balance::random_u64();
        if id != 0 {
            return id.to_be_bytes();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracer(ratio: f64) -> (Tracer, mpsc::Receiver<SpanRecord>) {
        let (queue, rx) = mpsc::channel(16);
        (
            Tracer {
                export: Some(Export {
                    queue,
                    sample_ratio: ratio,
                }),
            },
            rx,
        )
    }

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn off_leaves_the_headers_alone() {
        let mut h = HeaderMap::new();
        h.insert(TRACEPARENT, HeaderValue::from_static("garbage"));
        h.insert(TRACESTATE, HeaderValue::from_static("k=v"));
        let before = h.clone();
        assert!(
            Tracer::default()
                .hop(&mut h, Kind::Client, "orders", &http::Method::GET)
                .is_none()
        );
        assert_eq!(h, before);
    }

    #[test]
    fn a_child_keeps_the_trace_and_becomes_the_parent() {
        let (t, mut rx) = tracer(0.0);
        let mut h = HeaderMap::new();
        h.insert(TRACEPARENT, HeaderValue::from_static(PARENT));
        h.insert(TRACESTATE, HeaderValue::from_static("k=v"));
        let hop = t
            .hop(&mut h, Kind::Client, "orders", &http::Method::GET)
            .expect("on");
        let sent = TraceContext::parse(h[TRACEPARENT].to_str().expect("ascii")).expect("valid");
        let parent = TraceContext::parse(PARENT).expect("valid");
        assert_eq!(sent.trace_id, parent.trace_id);
        assert_ne!(sent.span_id, parent.span_id);
        assert!(sent.sampled(), "the parent's decision wins over the ratio");
        assert_eq!(h[TRACESTATE], "k=v");
        hop.finish(200);
        let span = rx.try_recv().expect("recorded");
        assert_eq!(span.parent_span_id, Some(parent.span_id));
        assert_eq!(span.span_id, sent.span_id);
    }

    #[test]
    fn a_new_trace_is_sampled_by_ratio_and_an_unsampled_one_records_nothing() {
        let (t, mut rx) = tracer(1.0);
        let mut h = HeaderMap::new();
        h.insert(TRACESTATE, HeaderValue::from_static("orphan=1"));
        t.hop(&mut h, Kind::Server, "orders", &http::Method::POST)
            .expect("on")
            .finish(503);
        assert!(
            h.get(TRACESTATE).is_none(),
            "tracestate without traceparent"
        );
        let span = rx.try_recv().expect("sampled at ratio 1");
        assert_eq!(span.parent_span_id, None);

        let (t, mut rx) = tracer(0.0);
        let mut h = HeaderMap::new();
        t.hop(&mut h, Kind::Server, "orders", &http::Method::GET)
            .expect("on")
            .finish(200);
        let sent = TraceContext::parse(h[TRACEPARENT].to_str().expect("ascii")).expect("valid");
        assert!(!sent.sampled());
        assert!(rx.try_recv().is_err(), "not sampled, not recorded");
    }
}
