//! The validated route policy of one service: what `hostmesh route set` accepts and agents apply.
//! Every value here passed the checks in [`super::parse`], so users need not check again.

use std::time::Duration;

/// A service's route policy. A service without one uses [`RoutePolicy::default`]: the
/// retry and breaker defaults of docs/routes.md, no timeout of its own (the agent's `request_timeout` applies) and
/// no rules (every passing instance is a candidate).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RoutePolicy {
    /// Deadline to response headers for every request to the service, unless the matched rule
    /// has its own. `None`: the agent's `request_timeout`. Clients' `x-hostmesh-timeout` and
    /// `grpc-timeout` can only shorten it.
    pub timeout: Option<Duration>,
    /// Which instances a request may go to by zone (`locality`, default `any`).
    pub locality: Locality,
    pub retry: RetryPolicy,
    pub breaker: BreakerPolicy,
    /// Tried in order; the first that matches a request decides ([`RoutePolicy::matching_rule`]).
    pub rules: Vec<Rule>,
}

/// `locality`: whether requests prefer instances in the caller's zone (`agent.zone`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Locality {
    /// Every candidate instance, whatever its zone (the default).
    #[default]
    Any,
    /// Instances in the caller's zone first: other zones take a request only when the caller's
    /// zone has no candidate left or its pick is overloaded compared with another zone's
    /// (docs/routes.md#zones). A caller without a zone, or a service with no instance in it,
    /// behaves as with `Any`.
    Zone,
}

impl Locality {
    /// The value as written in TOML and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Locality::Any => "any",
            Locality::Zone => "zone",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Locality> {
        match s {
            "any" => Some(Locality::Any),
            "zone" => Some(Locality::Zone),
            _ => None,
        }
    }
}

/// `[retry]`; a missing section or key means its default.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Retries may add at most this share of the requests (0.0..=1.0, default 0.2) ...
    pub budget_ratio: f64,
    /// ... plus this many retries per second (default 10), over a 10 s window.
    pub min_per_second: u32,
    /// Attempts per request, the first one included (1..=10, default 3; 1 means no retries).
    pub max_attempts: u32,
    /// Deadline of each attempt, within what is left of the request's deadline; `None`: each
    /// attempt may use all that is left.
    pub per_try_timeout: Option<Duration>,
}

/// `[breaker]`; a missing section or key means its default.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerPolicy {
    /// Failures in a row that eject an instance (1..=1000, default 5).
    pub consecutive_failures: u32,
    /// First ejection time, doubled at each ejection in a row (default 5s) ...
    pub base_ejection: Duration,
    /// ... up to this (default 60s; never less than `base_ejection`).
    pub max_ejection: Duration,
    /// At most this share of a service's instances is ejected at once, and never the last one
    /// (0..=100, default 50).
    pub max_ejected_percent: u32,
}

/// One `[[rules]]` entry: which requests it takes, and what it does with them. It has a split,
/// a timeout, or both.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// `match.path_prefix`: the request path is this or continues it with `/`
    /// (`/api/v2` takes `/api/v2` and `/api/v2/x`, not `/api/v2x`). `None`: any path.
    pub path_prefix: Option<String>,
    /// `match.headers`: each header must be present with exactly this value (any of its values
    /// when it is repeated). Names are lowercase; sorted by name.
    pub headers: Vec<(http::HeaderName, String)>,
    /// Weighted shares to tag subsets. Empty: every passing instance, as without a rule.
    pub split: Vec<Split>,
    /// Replaces the policy's `timeout` for the requests this rule takes.
    pub timeout: Option<Duration>,
}

/// One share of a rule's traffic: the instances that carry every one of `tags`.
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    /// Non-empty; each `[a-z0-9-]`, 1..=63 characters.
    pub tags: Vec<String>,
    /// 0..=10000; the share is `weight / total weight of the rule`. 0: never chosen.
    pub weight: u32,
}

/// Defaults (docs/routes.md); `parse` and `json` fill missing keys from these.
pub(crate) const BUDGET_RATIO: f64 = 0.2;
pub(crate) const MIN_PER_SECOND: u32 = 10;
pub(crate) const MAX_ATTEMPTS: u32 = 3;
pub(crate) const CONSECUTIVE_FAILURES: u32 = 5;
pub(crate) const BASE_EJECTION: Duration = Duration::from_secs(5);
pub(crate) const MAX_EJECTION: Duration = Duration::from_secs(60);
pub(crate) const MAX_EJECTED_PERCENT: u32 = 50;

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            budget_ratio: BUDGET_RATIO,
            min_per_second: MIN_PER_SECOND,
            max_attempts: MAX_ATTEMPTS,
            per_try_timeout: None,
        }
    }
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        BreakerPolicy {
            consecutive_failures: CONSECUTIVE_FAILURES,
            base_ejection: BASE_EJECTION,
            max_ejection: MAX_EJECTION,
            max_ejected_percent: MAX_EJECTED_PERCENT,
        }
    }
}

impl RoutePolicy {
    /// The route timeout of a request that matched `rule` (or none): the rule's, else the
    /// policy's. `None`: the agent's `request_timeout`.
    pub fn timeout_for(&self, rule: Option<&Rule>) -> Option<Duration> {
        rule.and_then(|r| r.timeout).or(self.timeout)
    }
}

impl Split {
    /// Whether an instance with `instance_tags` belongs to this split: it carries every tag.
    pub fn selects(&self, instance_tags: &[String]) -> bool {
        self.tags.iter().all(|t| instance_tags.contains(t))
    }
}
