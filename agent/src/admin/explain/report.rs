//! The answer of `GET /explain`: JSON for `hostmesh explain --json`, and what the command turns
//! into its text report. Durations are whole milliseconds, latencies fractional ones.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::admin::status::EndpointStatus;
use hostmesh_proxy::outbound::decision::DeadlineSource;

/// How the agent would route one request now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The target as asked.
    pub target: String,
    pub service: String,
    /// The tag subset, for `TAG.NAME` names and tag VIPs.
    pub tag: Option<String>,
    pub vip: Ipv4Addr,
    pub port: u16,
    pub protocol: String,
    pub path: String,
    /// Headers as given (lowercase names).
    pub headers: BTreeMap<String, String>,
    /// Rules in the service's route policy.
    pub rules: usize,
    /// The first rule that matches; `None` when none does (or for TCP, which has no rules).
    pub rule: Option<RuleReport>,
    /// The route policy's `locality`: `any` or `zone`.
    #[serde(default)]
    pub locality: String,
    /// This agent's zone (`agent.zone`); `null` when it has none.
    #[serde(default)]
    pub zone: Option<String>,
    /// With `locality = "zone"` and a zone: the share of requests kept in this agent's zone
    /// while it has an eligible instance (docs/routes.md#zones); `null` otherwise.
    #[serde(default)]
    pub zone_share: Option<f64>,
    /// The split drawn for this request (each request draws one by weight).
    pub split: Option<Vec<String>>,
    pub deadline: DeadlineReport,
    pub retry: RetryReport,
    /// Every instance of the service, in catalog order, with why it is left out if it is.
    pub candidates: Vec<Candidate>,
    /// The instance the agent would send to now; `None` when none is eligible.
    pub pick: Option<Pick>,
    /// What the request would get: `sent to HOST/ID`, `503 no-endpoints`, `403 forbidden`.
    pub outcome: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleReport {
    /// Its index in the policy's `rules` (first match wins).
    pub index: usize,
    pub path_prefix: Option<String>,
    pub headers: BTreeMap<String, String>,
    pub timeout_ms: Option<u64>,
    pub split: Vec<SplitReport>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplitReport {
    pub tags: Vec<String>,
    pub weight: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadlineReport {
    pub ms: u64,
    pub source: DeadlineSource,
    /// Each attempt's own limit within the deadline (`[retry] per_try_timeout`).
    pub per_try_timeout_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetryReport {
    /// Attempts per request, the first included.
    pub max_attempts: u32,
    /// Retries the service's budget allows now; `None` if it could not be read.
    pub budget_left: Option<u64>,
    pub budget_ratio: f64,
    pub min_per_second: u32,
}

/// One instance of the service as the balancer sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    /// The instance and its live readings, exactly as `/status` reports the endpoint.
    #[serde(flatten)]
    pub endpoint: EndpointStatus,
    /// Runs on this host (reached at its target directly).
    pub local: bool,
    /// What P2C compares, `EWMA × (in-flight + 1) / weight` in ms (lower wins); for eligible
    /// instances only.
    pub cost: Option<f64>,
    /// Why the request cannot go there; `None` when it is eligible.
    pub excluded: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pick {
    pub host: String,
    pub id: String,
    /// `probe`: its ejection is over and it gets the one probe; `only`: the one eligible
    /// instance; `p2c`: the cheaper of two drawn at random (another run may differ).
    pub how: String,
    /// How zones decided: `in-zone`; `spilled-none-left` (no eligible instance in this agent's
    /// zone); `spilled-share` (drawn into the share this zone sends to others, see
    /// `zone_share`); `not-applied` (`locality = "any"`, or no zone on this agent).
    #[serde(default)]
    pub zone: String,
}
