//! `GET /traffic`: this agent's traffic per service and direction over the last minute (request
//! rate, success rate, p50/p99, retries, budget exhaustion, answers by status and by
//! `x-hostmesh-error` reason), for the status page, which needs no Prometheus.
//!
//! Worked out from the agent's own metrics, read back from their text exposition: each call
//! takes a sample of the cumulative counters and histograms, keeps the last minute of samples,
//! and reports the difference to the oldest one. Nothing is recorded on the data path for it, and
//! nothing at all while nobody asks: the first call after a quiet spell only starts the window
//! (its figures come with the next call, which the page makes 2 s later).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use serde::Serialize;

use super::AdminState;

/// How far back the figures reach.
pub const WINDOW: Duration = Duration::from_secs(60);

/// Points of a service's request-rate sparkline (one per pair of consecutive samples).
const SPARK_POINTS: usize = 30;

/// The samples of the last [`WINDOW`], oldest first.
#[derive(Debug, Default)]
pub struct History {
    samples: Mutex<VecDeque<(Instant, Arc<Sample>)>>,
}

/// Cumulative figures of every (service, direction) at one instant.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Sample {
    series: BTreeMap<(String, String), Figures>,
}

/// One service and direction's cumulative figures.
#[derive(Debug, Default, Clone, PartialEq)]
struct Figures {
    /// Responses by status code.
    codes: BTreeMap<u16, f64>,
    /// The duration histogram's cumulative buckets by upper bound (seconds), `+Inf` last.
    buckets: Vec<(f64, f64)>,
    retries: f64,
    budget_exhausted: f64,
    /// The agents' own answers by `x-hostmesh-error` reason.
    errors: BTreeMap<String, f64>,
}

/// The answer.
#[derive(Debug, Serialize, PartialEq)]
pub struct Traffic {
    /// Seconds the figures cover; 0 while the window is only starting.
    pub window_seconds: f64,
    pub services: Vec<ServiceTraffic>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct ServiceTraffic {
    pub service: String,
    /// `outbound` (this host's apps calling) or `inbound` (peers calling this host's apps).
    pub direction: String,
    pub requests: f64,
    pub rate: f64,
    /// Share of answers that were not 5xx; `null` without requests.
    pub success: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub codes: BTreeMap<u16, f64>,
    pub retries: f64,
    pub budget_exhausted: f64,
    pub errors: BTreeMap<String, f64>,
    /// Requests per second between consecutive samples, oldest first.
    pub spark: Vec<f64>,
}

pub async fn traffic(State(state): State<Arc<AdminState>>) -> Json<Traffic> {
    let sample = Sample::parse(&state.metrics.encode());
    Json(state.traffic.report(Instant::now(), sample))
}

impl History {
    /// Adds `sample` taken at `now` and reports the window up to it.
    pub fn report(&self, now: Instant, sample: Sample) -> Traffic {
        let mut samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        while samples
            .front()
            .is_some_and(|(t, _)| now.saturating_duration_since(*t) > WINDOW)
        {
            samples.pop_front();
        }
        samples.push_back((now, Arc::new(sample)));
        let (first_at, first) = samples.front().cloned().unwrap_or((now, Arc::default()));
        let (_, last) = samples.back().cloned().unwrap_or((now, Arc::default()));
        let seconds = now.saturating_duration_since(first_at).as_secs_f64();
        let pairs: Vec<_> = samples
            .iter()
            .zip(samples.iter().skip(1))
            .map(|(a, b)| (a.clone(), b.clone()))
            .collect();
        drop(samples);
        let pairs = &pairs[pairs.len().saturating_sub(SPARK_POINTS)..];
        let services = last
            .series
            .iter()
            .map(|(key, now)| {
                let before = first.series.get(key).cloned().unwrap_or_default();
                let spark = pairs
                    .iter()
                    .map(|((ta, a), (tb, b))| {
                        let dt = tb.saturating_duration_since(*ta).as_secs_f64();
                        let count = |s: &Sample| s.series.get(key).map_or(0.0, Figures::total);
                        if dt > 0.0 {
                            (count(b) - count(a)).max(0.0) / dt
                        } else {
                            0.0
                        }
                    })
                    .collect();
                now.since(&before, key, seconds, spark)
            })
            .filter(|t| t.requests > 0.0 || !t.spark.is_empty())
            .collect();
        Traffic {
            window_seconds: seconds,
            services,
        }
    }
}

impl Figures {
    fn total(&self) -> f64 {
        self.codes.values().sum()
    }

    /// What happened between `before` and `self`, over `seconds`.
    fn since(
        &self,
        before: &Figures,
        (service, direction): &(String, String),
        seconds: f64,
        spark: Vec<f64>,
    ) -> ServiceTraffic {
        let codes = diff(&self.codes, &before.codes);
        let requests: f64 = codes.values().sum();
        let failed: f64 = codes
            .iter()
            .filter(|(c, _)| **c >= 500)
            .map(|(_, n)| n)
            .sum();
        let buckets: Vec<(f64, f64)> = self
            .buckets
            .iter()
            .map(|(le, n)| {
                let was = before
                    .buckets
                    .iter()
                    .find(|(b, _)| b == le)
                    .map_or(0.0, |(_, n)| *n);
                (*le, n - was)
            })
            .collect();
        ServiceTraffic {
            service: service.clone(),
            direction: direction.clone(),
            requests,
            rate: if seconds > 0.0 {
                requests / seconds
            } else {
                0.0
            },
            success: (requests > 0.0).then(|| 1.0 - failed / requests),
            p50_ms: quantile(&buckets, 0.5).map(|s| s * 1e3),
            p99_ms: quantile(&buckets, 0.99).map(|s| s * 1e3),
            codes,
            retries: (self.retries - before.retries).max(0.0),
            budget_exhausted: (self.budget_exhausted - before.budget_exhausted).max(0.0),
            errors: diff(&self.errors, &before.errors),
            spark,
        }
    }
}

/// What each key of `now` grew by since `before`; keys that did not grow are left out.
fn diff<K: Ord + Clone>(now: &BTreeMap<K, f64>, before: &BTreeMap<K, f64>) -> BTreeMap<K, f64> {
    now.iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, v)| *v > 0.0)
        .collect()
}

/// The `q` quantile of cumulative `buckets` (upper bound, count), interpolating linearly within
/// the bucket it falls in, as Prometheus' `histogram_quantile` does; `None` without
/// observations. One in the `+Inf` bucket is reported as the largest finite bound.
fn quantile(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for &(le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                return Some(lower.0);
            }
            let within = count - lower.1;
            let share = if within > 0.0 {
                (rank - lower.1) / within
            } else {
                1.0
            };
            return Some(lower.0 + (le - lower.0) * share);
        }
        lower = (le, count);
    }
    Some(lower.0)
}

impl Sample {
    /// Reads the figures out of the agent's text exposition. Lines it does not use are skipped.
    pub fn parse(text: &str) -> Sample {
        let mut sample = Sample::default();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((name, labels, value)) = split(line) else {
                continue;
            };
            let label = |k: &str| labels.iter().find(|(n, _)| *n == k).map(|(_, v)| *v);
            let (Some(service), Ok(value)) = (label("service"), value.parse::<f64>()) else {
                continue;
            };
            let direction = label("direction").unwrap_or("outbound");
            let figures = || (service.to_owned(), direction.to_owned());
            match name {
                "hostmesh_requests_total" => {
                    if let Some(code) = label("code").and_then(|c| c.parse().ok()) {
                        let f = sample.series.entry(figures()).or_default();
                        *f.codes.entry(code).or_default() += value;
                    }
                }
                "hostmesh_request_duration_seconds_bucket" => {
                    let le = match label("le") {
                        Some("+Inf") => f64::INFINITY,
                        Some(le) => match le.parse() {
                            Ok(le) => le,
                            Err(_) => continue,
                        },
                        None => continue,
                    };
                    let f = sample.series.entry(figures()).or_default();
                    f.buckets.push((le, value));
                }
                "hostmesh_retries_total" => {
                    sample.series.entry(figures()).or_default().retries += value;
                }
                "hostmesh_retry_budget_exhausted_total" => {
                    sample.series.entry(figures()).or_default().budget_exhausted += value;
                }
                "hostmesh_agent_errors_total" => {
                    if let Some(reason) = label("reason") {
                        let f = sample.series.entry(figures()).or_default();
                        *f.errors.entry(reason.to_owned()).or_default() += value;
                    }
                }
                _ => {}
            }
        }
        for f in sample.series.values_mut() {
            f.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        }
        sample
    }
}

/// A series' labels, `(name, value)` in the order written.
type Labels<'a> = Vec<(&'a str, &'a str)>;

/// `name{k="v",…} value` → its parts. Label values as the exposition writes them (our names and
/// reasons need no unescaping).
fn split(line: &str) -> Option<(&str, Labels<'_>, &str)> {
    let (series, value) = line.rsplit_once(' ')?;
    let Some((name, rest)) = series.split_once('{') else {
        return Some((series, Vec::new(), value));
    };
    let rest = rest.strip_suffix('}')?;
    let mut labels = Vec::new();
    for pair in rest.split("\",") {
        let (k, v) = pair.split_once("=\"")?;
        labels.push((k.trim_start_matches(','), v.trim_end_matches('"')));
    }
    Some((name, labels, value))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn exposition(ok: u32, failed: u32, slow: u32) -> String {
        let total = ok + failed;
        format!(
            "# TYPE hostmesh_requests counter\n\
             hostmesh_requests_total{{direction=\"outbound\",service=\"orders\",code=\"200\"}} {ok}\n\
             hostmesh_requests_total{{direction=\"outbound\",service=\"orders\",code=\"503\"}} {failed}\n\
             hostmesh_request_duration_seconds_bucket{{direction=\"outbound\",service=\"orders\",le=\"0.001\"}} {}\n\
             hostmesh_request_duration_seconds_bucket{{direction=\"outbound\",service=\"orders\",le=\"0.002\"}} {}\n\
             hostmesh_request_duration_seconds_bucket{{direction=\"outbound\",service=\"orders\",le=\"0.1\"}} {total}\n\
             hostmesh_request_duration_seconds_bucket{{direction=\"outbound\",service=\"orders\",le=\"+Inf\"}} {total}\n\
             hostmesh_retries_total{{service=\"orders\",reason=\"failed\"}} {failed}\n\
             hostmesh_retry_budget_exhausted_total{{service=\"orders\"}} 0\n\
             hostmesh_agent_errors_total{{direction=\"outbound\",service=\"orders\",reason=\"no-endpoints\"}} {failed}\n\
             hostmesh_dns_queries_total{{result=\"answered\"}} 9\n",
            total - slow - total / 2,
            total - slow,
        )
    }

    #[test]
    fn the_window_reports_what_changed_since_its_oldest_sample() {
        let history = History::default();
        let t0 = Instant::now();
        let first = history.report(t0, Sample::parse(&exposition(100, 0, 0)));
        assert_eq!(first.window_seconds, 0.0);
        assert!(first.services.is_empty(), "nothing happened yet: {first:?}");

        let later = history.report(
            t0 + Duration::from_secs(10),
            Sample::parse(&exposition(290, 10, 0)),
        );
        assert_eq!(later.window_seconds, 10.0);
        let orders = &later.services[0];
        assert_eq!(
            (orders.service.as_str(), orders.direction.as_str()),
            ("orders", "outbound")
        );
        assert_eq!(orders.requests, 200.0);
        assert_eq!(orders.rate, 20.0);
        assert_eq!(orders.success, Some(0.95));
        assert_eq!(orders.codes, BTreeMap::from([(200, 190.0), (503, 10.0)]));
        assert_eq!(
            orders.errors,
            BTreeMap::from([("no-endpoints".to_owned(), 10.0)])
        );
        assert_eq!(orders.retries, 10.0);
        assert_eq!(orders.spark, [20.0]);
        // Half the 200 new requests fell at or under 1 ms, all under 2 ms.
        assert!((orders.p50_ms.unwrap() - 1.0).abs() < 1e-9, "{orders:?}");
        assert!(orders.p99_ms.unwrap() > 1.0 && orders.p99_ms.unwrap() <= 2.0);

        // A minute later the first sample is out of the window.
        let much_later = history.report(
            t0 + Duration::from_secs(65),
            Sample::parse(&exposition(290, 10, 0)),
        );
        assert_eq!(much_later.window_seconds, 55.0);
        assert_eq!(much_later.services[0].requests, 0.0);
        assert_eq!(much_later.services[0].success, None);
    }

    #[test]
    fn quantiles_interpolate_within_their_bucket() {
        let buckets = [(0.001, 50.0), (0.002, 100.0), (f64::INFINITY, 100.0)];
        assert_eq!(quantile(&buckets, 0.5), Some(0.001));
        assert!((quantile(&buckets, 0.75).unwrap() - 0.0015).abs() < 1e-12);
        assert_eq!(quantile(&[(0.001, 0.0), (f64::INFINITY, 0.0)], 0.5), None);
        // Everything past the last bound: the bound is what can be said.
        assert_eq!(
            quantile(&[(0.001, 0.0), (f64::INFINITY, 4.0)], 0.5),
            Some(0.001)
        );
    }

    #[test]
    fn lines_split_into_name_labels_and_value() {
        assert_eq!(
            split("a_total{x=\"1\",y=\"b/c\"} 3"),
            Some(("a_total", vec![("x", "1"), ("y", "b/c")], "3"))
        );
        assert_eq!(split("up 1"), Some(("up", vec![], "1")));
        assert_eq!(split("garbage"), None);
    }
}
