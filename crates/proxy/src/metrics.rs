//! The data path's metric handles, registered once in the agent's one registry and passed down;
//! nothing is looked up by name on a hot path. Labels are bounded: direction, service, status
//! code, reason.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub direction: &'static str,
    pub service: String,
    pub code: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabels {
    pub direction: &'static str,
    pub service: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectionLabels {
    pub direction: &'static str,
    pub service: String,
    /// `opened`, or `refused` when no instance could be reached.
    pub result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabels {
    pub direction: &'static str,
}

/// One service's handles for its most common samples, made at the service's first request
/// through a route table ([`ProxyMetrics::request_via`]), so that a request that succeeds
/// allocates nothing for its metrics.
///
/// Not when the table is built: an agent follows every service in the catalog but calls few of
/// them, and series made for all of them cost every table build a map insert per service and
/// every scrape their zeros. With 10,000 services, /metrics was 32 MB of text (and as much heap
/// while it was written) on every agent, for services the agent had never called.
#[derive(Debug, Default)]
pub struct ServiceHandles {
    made: std::sync::OnceLock<Made>,
    /// `hostmesh_zone_attempts_total{zone="same"}` and `{zone="other"}`, made at the first
    /// attempt between zoned hosts (most services of an unzoned fleet never have them).
    zones: std::sync::OnceLock<[Counter; 2]>,
}

#[derive(Debug)]
struct Made {
    ok: Counter,
    duration: Histogram,
}

/// The data path's metric handles. Labels are bounded: direction, service, status code.
#[derive(Debug, Clone)]
pub struct ProxyMetrics {
    requests: Family<RequestLabels, Counter>,
    duration: Family<ServiceLabels, Histogram>,
    tcp_connections: Family<ConnectionLabels, Counter>,
    tcp_bytes: Family<ServiceLabels, Counter>,
    open_connections: Family<DirectionLabels, Gauge>,
    retries: Family<RetryLabels, Counter>,
    budget_exhausted: Family<OneService, Counter>,
    ejections: Family<OneService, Counter>,
    endpoints: Family<EndpointStateLabels, Gauge>,
    policy_denied: Family<ServiceLabels, Counter>,
    policy_invalid: Family<OneService, Gauge>,
    zone_attempts: Family<ZoneLabels, Counter>,
    agent_errors: Family<ErrorLabels, Counter>,
    /// `hostmesh_access_log_dropped_total`, handed to the access log's writer.
    pub access_log_dropped: Counter,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub direction: &'static str,
    pub service: String,
    /// The `x-hostmesh-error` reason.
    pub reason: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ZoneLabels {
    pub service: String,
    /// `same`: the instance is in this agent's zone; `other`: in another one.
    pub zone: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RetryLabels {
    pub service: String,
    /// `never-reached` (any request) or `failed` (a safe request that may have reached the app).
    pub reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OneService {
    pub service: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointStateLabels {
    pub service: String,
    /// `passing`, `critical`, `maintenance` from the catalog; `ejected` from the breakers.
    pub state: &'static str,
}

impl ProxyMetrics {
    /// Registers every data path metric in `registry`, once at start.
    pub fn register(registry: &mut Registry) -> Self {
        let m = ProxyMetrics {
            requests: Family::default(),
            duration: Family::new_with_constructor(|| {
                // 100 µs .. ~13 s
                Histogram::new(exponential_buckets(0.0001, 2.0, 18))
            }),
            tcp_connections: Family::default(),
            tcp_bytes: Family::default(),
            open_connections: Family::default(),
            retries: Family::default(),
            budget_exhausted: Family::default(),
            zone_attempts: Family::default(),
            agent_errors: Family::default(),
            access_log_dropped: Counter::default(),
            ejections: Family::default(),
            endpoints: Family::default(),
            policy_denied: Family::default(),
            policy_invalid: Family::default(),
        };
        registry.register(
            "hostmesh_requests",
            "HTTP requests by direction (outbound: this host's apps calling; inbound: peers calling this host's apps), service and status",
            m.requests.clone(),
        );
        registry.register(
            "hostmesh_request_duration_seconds",
            "Time from request to response headers",
            m.duration.clone(),
        );
        registry.register(
            "hostmesh_tcp_connections",
            "TCP connections of tcp services: opened, or refused when no instance could be reached",
            m.tcp_connections.clone(),
        );
        registry.register(
            "hostmesh_tcp_bytes",
            "Bytes relayed for tcp services, both ways",
            m.tcp_bytes.clone(),
        );
        registry.register(
            "hostmesh_tcp_open_connections",
            "TCP connections of tcp services open now",
            m.open_connections.clone(),
        );
        registry.register(
            "hostmesh_retries",
            "Requests sent again to another instance, by why that was allowed",
            m.retries.clone(),
        );
        registry.register(
            "hostmesh_retry_budget_exhausted",
            "Retries not made because the service's retry budget was spent",
            m.budget_exhausted.clone(),
        );
        registry.register(
            "hostmesh_ejections",
            "Instances ejected by their circuit breaker",
            m.ejections.clone(),
        );
        registry.register(
            "hostmesh_endpoints",
            "Instances of each service by state, as this agent sees them",
            m.endpoints.clone(),
        );
        registry.register(
            "hostmesh_policy_denied",
            "Calls refused by the service's access policy. inbound: a peer's call refused here; \
             outbound: this host's app refused (by the peer, or here for a same-host instance)",
            m.policy_denied.clone(),
        );
        registry.register(
            "hostmesh_zone_attempts",
            "Attempts (HTTP requests and retries, TCP connects) sent to an instance, by whether it \
             is in this agent's zone; only when both hosts have an agent.zone",
            m.zone_attempts.clone(),
        );
        registry.register(
            "hostmesh_agent_errors",
            "Answers an agent made instead of the app (x-hostmesh-error), by direction, service \
             and reason; outbound counts those the client got, from this agent or the peer's",
            m.agent_errors.clone(),
        );
        registry.register(
            "hostmesh_access_log_dropped",
            "Access log lines dropped: the writer was behind (its queue full) or the write failed",
            m.access_log_dropped.clone(),
        );
        registry.register(
            "hostmesh_policy_invalid",
            "1 while the service's access policy in etcd does not parse, so every caller is denied",
            m.policy_invalid.clone(),
        );
        m
    }

    /// Sets `hostmesh_policy_invalid` for `service`.
    pub fn policy_invalid(&self, service: &str, invalid: bool) {
        self.policy_invalid
            .get_or_create(&OneService {
                service: service.to_owned(),
            })
            .set(i64::from(invalid));
    }

    /// Counts one call refused by `service`'s access policy (see `hostmesh_policy_denied`).
    pub fn policy_denied(&self, service: &str, direction: &'static str) {
        self.policy_denied
            .get_or_create(&ServiceLabels {
                direction,
                service: service.to_owned(),
            })
            .inc();
    }

    pub fn retry(&self, service: &str, reason: &'static str) {
        self.retries
            .get_or_create(&RetryLabels {
                service: service.to_owned(),
                reason,
            })
            .inc();
    }

    pub fn retry_budget_exhausted(&self, service: &str) {
        self.budget_exhausted
            .get_or_create(&OneService {
                service: service.to_owned(),
            })
            .inc();
    }

    pub fn ejected(&self, service: &str) {
        self.ejections
            .get_or_create(&OneService {
                service: service.to_owned(),
            })
            .inc();
    }

    /// Sets `hostmesh_endpoints` for one service and state.
    pub fn endpoints(&self, service: &str, state: &'static str, count: i64) {
        self.endpoints
            .get_or_create(&EndpointStateLabels {
                service: service.to_owned(),
                state,
            })
            .set(count);
    }

    /// The series of one service, made at its first request: its 200 counter and duration
    /// histogram, and for outbound the failure counters at 0.
    fn make_handles(&self, service: &str, direction: &'static str) -> Made {
        if direction == "outbound" {
            // The failure counters exist at 0 from the service's first request, so that
            // `rate()` and alerts see their first increment (Prometheus' advice on label sets).
            let one = OneService {
                service: service.to_owned(),
            };
            let _ = self.ejections.get_or_create(&one);
            let _ = self.budget_exhausted.get_or_create(&one);
            for reason in ["never-reached", "failed"] {
                let _ = self.retries.get_or_create(&RetryLabels {
                    service: service.to_owned(),
                    reason,
                });
            }
        }
        Made {
            ok: self
                .requests
                .get_or_create(&RequestLabels {
                    direction,
                    service: service.to_owned(),
                    code: 200,
                })
                .clone(),
            duration: self
                .duration
                .get_or_create(&ServiceLabels {
                    direction,
                    service: service.to_owned(),
                })
                .clone(),
        }
    }

    /// Counts one attempt to an instance in this agent's zone (`same`) or another (`!same`).
    pub fn zone_attempt(&self, handles: &ServiceHandles, service: &str, same: bool) {
        let [here, there] = handles.zones.get_or_init(|| {
            ["same", "other"].map(|zone| {
                self.zone_attempts
                    .get_or_create(&ZoneLabels {
                        service: service.to_owned(),
                        zone,
                    })
                    .clone()
            })
        });
        if same {
            here.inc()
        } else {
            there.inc()
        };
    }

    /// Like [`Self::request`], through a service's handles.
    pub fn request_via(
        &self,
        handles: &ServiceHandles,
        service: &str,
        direction: &'static str,
        answer: (u16, Option<&str>),
        took: Duration,
    ) {
        let handles = handles
            .made
            .get_or_init(|| self.make_handles(service, direction));
        if answer.0 == 200 {
            handles.ok.inc();
        } else {
            self.count(service, direction, answer);
        }
        handles.duration.observe(took.as_secs_f64());
    }

    /// Counts an answer other than a 200: its status, and its `x-hostmesh-error` reason when
    /// an agent made it.
    fn count(&self, service: &str, direction: &'static str, (code, error): (u16, Option<&str>)) {
        self.requests
            .get_or_create(&RequestLabels {
                direction,
                service: service.to_owned(),
                code,
            })
            .inc();
        if let Some(reason) = error {
            self.agent_errors
                .get_or_create(&ErrorLabels {
                    direction,
                    service: service.to_owned(),
                    reason: reason.to_owned(),
                })
                .inc();
        }
    }

    /// Counts a request `service` answered with `answer` (status, and the agent's
    /// `x-hostmesh-error` reason if an agent answered) after `took`.
    pub fn request(
        &self,
        service: &str,
        direction: &'static str,
        answer: (u16, Option<&str>),
        took: Duration,
    ) {
        self.count(service, direction, answer);
        self.duration
            .get_or_create(&ServiceLabels {
                direction,
                service: service.to_owned(),
            })
            .observe(took.as_secs_f64());
    }

    pub fn tcp_opened(&self, service: &str, direction: &'static str) {
        self.tcp_connections
            .get_or_create(&ConnectionLabels {
                direction,
                service: service.to_owned(),
                result: "opened",
            })
            .inc();
        self.open_connections
            .get_or_create(&DirectionLabels { direction })
            .inc();
    }

    pub fn tcp_closed(&self, service: &str, direction: &'static str, up: u64, down: u64) {
        self.open_connections
            .get_or_create(&DirectionLabels { direction })
            .dec();
        self.tcp_bytes
            .get_or_create(&ServiceLabels {
                direction,
                service: service.to_owned(),
            })
            .inc_by(up + down);
    }

    pub fn tcp_refused(&self, service: &str, direction: &'static str) {
        self.tcp_connections
            .get_or_create(&ConnectionLabels {
                direction,
                service: service.to_owned(),
                result: "refused",
            })
            .inc();
    }
}
