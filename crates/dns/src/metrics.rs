//! The DNS shim's metric handles: queries by type and result, and how long answering took.
//!
//! Both label sets are closed enums so a stream of odd queries cannot grow the series count.
//! Counter handles are resolved once per (type, result) cell and then only incremented, so the
//! query path never takes the family's lock after warm-up.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use hickory_proto::rr::RecordType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The `type` label: the question's type, folded into a short fixed list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum QType {
    A,
    Aaaa,
    Srv,
    Any,
    Soa,
    Ns,
    Ptr,
    Mx,
    Txt,
    Cname,
    Https,
    Svcb,
    Other,
    /// No readable question (malformed packet, header-only errors).
    None,
}

impl QType {
    const ALL: [QType; 14] = [
        QType::A,
        QType::Aaaa,
        QType::Srv,
        QType::Any,
        QType::Soa,
        QType::Ns,
        QType::Ptr,
        QType::Mx,
        QType::Txt,
        QType::Cname,
        QType::Https,
        QType::Svcb,
        QType::Other,
        QType::None,
    ];

    pub(crate) fn of(record_type: RecordType) -> QType {
        match record_type {
            RecordType::A => QType::A,
            RecordType::AAAA => QType::Aaaa,
            RecordType::SRV => QType::Srv,
            RecordType::ANY => QType::Any,
            RecordType::SOA => QType::Soa,
            RecordType::NS => QType::Ns,
            RecordType::PTR => QType::Ptr,
            RecordType::MX => QType::Mx,
            RecordType::TXT => QType::Txt,
            RecordType::CNAME => QType::Cname,
            RecordType::HTTPS => QType::Https,
            RecordType::SVCB => QType::Svcb,
            _ => QType::Other,
        }
    }

    fn label(self) -> &'static str {
        match self {
            QType::A => "A",
            QType::Aaaa => "AAAA",
            QType::Srv => "SRV",
            QType::Any => "ANY",
            QType::Soa => "SOA",
            QType::Ns => "NS",
            QType::Ptr => "PTR",
            QType::Mx => "MX",
            QType::Txt => "TXT",
            QType::Cname => "CNAME",
            QType::Https => "HTTPS",
            QType::Svcb => "SVCB",
            QType::Other => "other",
            QType::None => "none",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The `result` label: what the client got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// A mesh name answered with records.
    Answered,
    /// A mesh name that exists, but not with this type: NOERROR, no answers, SOA.
    NoData,
    /// Not a mesh name (or a service with no instance or no VIP yet): NXDOMAIN with SOA.
    NxDomain,
    /// No catalog was ever loaded, or the answer could not be encoded.
    ServFail,
    /// Outside the domain with no upstream, zone transfers, classes other than IN.
    Refused,
    /// Malformed query answered with FORMERR.
    FormErr,
    /// An opcode other than QUERY, answered with NOTIMP.
    NotImp,
    /// EDNS version above 0, answered with BADVERS.
    BadVers,
    /// Relayed an upstream answer (records, NXDOMAIN or NODATA).
    Forwarded,
    /// Upstream failed, timed out or refused: SERVFAIL.
    UpstreamError,
    /// Did not fit the client's UDP size: sent with TC=1 so it retries over TCP.
    Truncated,
    /// Not answered because the in-flight bound was reached (UDP), or SERVFAIL for that reason
    /// (TCP).
    Dropped,
    /// Not answered: not a readable query (too short, a response, garbage).
    Ignored,
}

impl Outcome {
    const COUNT: usize = 13;

    fn label(self) -> &'static str {
        match self {
            Outcome::Answered => "answered",
            Outcome::NoData => "nodata",
            Outcome::NxDomain => "nxdomain",
            Outcome::ServFail => "servfail",
            Outcome::Refused => "refused",
            Outcome::FormErr => "formerr",
            Outcome::NotImp => "notimp",
            Outcome::BadVers => "badvers",
            Outcome::Forwarded => "forwarded",
            Outcome::UpstreamError => "upstream_error",
            Outcome::Truncated => "truncated",
            Outcome::Dropped => "dropped",
            Outcome::Ignored => "ignored",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Where the answer came from, for the latency histogram: local answers take microseconds,
/// forwarded ones take an upstream round trip, and one histogram would blur both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    Local,
    Upstream,
}

type Labels = [(&'static str, &'static str); 2];

#[derive(Debug)]
struct Inner {
    queries: Family<Labels, Counter>,
    cells: [[OnceLock<Counter>; Outcome::COUNT]; QType::ALL.len()],
    local: Histogram,
    upstream: Histogram,
    tcp_closed: Family<[(&'static str, &'static str); 1], Counter>,
}

/// The DNS shim's metrics; cheap to clone, shared by every listener task.
#[derive(Debug, Clone)]
pub struct DnsMetrics {
    inner: Arc<Inner>,
}

/// 50 µs .. 5 s: a local answer is tens of microseconds, a forwarded one up to the upstream
/// deadline.
const BUCKETS: [f64; 16] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0,
];

impl DnsMetrics {
    pub fn register(registry: &mut Registry) -> DnsMetrics {
        let m = DnsMetrics::unregistered();
        registry.register(
            "hostmesh_dns_queries",
            "DNS queries received, by question type and what was answered",
            m.inner.queries.clone(),
        );
        let durations =
            Family::<[(&'static str, &'static str); 1], Histogram>::new_with_constructor(|| {
                Histogram::new(BUCKETS)
            });
        // The family hands out the same histogram for the same labels; keep those handles.
        let local = durations.get_or_create(&[("source", "local")]).clone();
        let upstream = durations.get_or_create(&[("source", "upstream")]).clone();
        registry.register(
            "hostmesh_dns_query_duration_seconds",
            "Time from receiving a DNS query to sending its answer, by where the answer came from",
            durations,
        );
        registry.register(
            "hostmesh_dns_tcp_connections_closed",
            "DNS over TCP connections the shim closed to make room, by reason: evicted (the one \
             idle longest, for a new client at the cap) or refused (a new client, none idle)",
            m.inner.tcp_closed.clone(),
        );
        DnsMetrics {
            inner: Arc::new(Inner {
                queries: m.inner.queries.clone(),
                cells: Default::default(),
                local,
                upstream,
                tcp_closed: m.inner.tcp_closed.clone(),
            }),
        }
    }

    /// Handles that count but are exported nowhere (tests).
    pub(crate) fn unregistered() -> DnsMetrics {
        DnsMetrics {
            inner: Arc::new(Inner {
                queries: Family::default(),
                cells: Default::default(),
                local: Histogram::new(BUCKETS),
                upstream: Histogram::new(BUCKETS),
                tcp_closed: Family::default(),
            }),
        }
    }

    pub(crate) fn record(&self, qtype: QType, outcome: Outcome, source: Source, took: Duration) {
        self.inner.cells[qtype.index()][outcome.index()]
            .get_or_init(|| {
                self.inner
                    .queries
                    .get_or_create(&[("type", qtype.label()), ("result", outcome.label())])
                    .clone()
            })
            .inc();
        let histogram = match source {
            Source::Local => &self.inner.local,
            Source::Upstream => &self.inner.upstream,
        };
        histogram.observe(took.as_secs_f64());
    }

    /// A TCP connection closed to make room (`evicted` or `refused`).
    pub(crate) fn tcp_closed(&self, reason: &'static str) {
        self.inner
            .tcp_closed
            .get_or_create(&[("reason", reason)])
            .inc();
    }

    /// The count for one (type, result) pair (tests).
    #[cfg(test)]
    pub(crate) fn count(&self, qtype: QType, outcome: Outcome) -> u64 {
        self.inner.cells[qtype.index()][outcome.index()]
            .get()
            .map_or(0, |c| c.get())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode;

    #[test]
    fn exports_both_metrics_with_bounded_labels() {
        let mut registry = Registry::default();
        let m = DnsMetrics::register(&mut registry);
        m.record(
            QType::of(RecordType::A),
            Outcome::Answered,
            Source::Local,
            Duration::from_micros(30),
        );
        m.record(
            QType::of(RecordType::CAA),
            Outcome::Forwarded,
            Source::Upstream,
            Duration::from_millis(3),
        );
        let mut out = String::new();
        encode(&mut out, &registry).unwrap();
        assert!(out.contains(r#"hostmesh_dns_queries_total{type="A",result="answered"} 1"#));
        assert!(out.contains(r#"hostmesh_dns_queries_total{type="other",result="forwarded"} 1"#));
        assert!(
            out.contains(
                r#"hostmesh_dns_query_duration_seconds_bucket{le="5e-5",source="local"} 1"#
            ) || out.contains(
                r#"hostmesh_dns_query_duration_seconds_bucket{le="0.00005",source="local"} 1"#
            ),
            "{out}"
        );
        assert_eq!(m.count(QType::A, Outcome::Answered), 1);
    }

    #[test]
    fn enum_tables_are_consistent() {
        for (i, q) in QType::ALL.iter().enumerate() {
            assert_eq!(q.index(), i);
        }
        assert_eq!(Outcome::Ignored.index() + 1, Outcome::COUNT);
    }
}
