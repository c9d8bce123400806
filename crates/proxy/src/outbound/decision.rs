//! What a request's head decides before any instance is tried: the route rule it matches, its
//! deadline (and which setting set it), and the traffic split it goes to. One function for the
//! data path (`http::forward`) and for `hostmesh explain` (`admin/explain`), so that what
//! `explain` reports is what a request does.

use std::time::Duration;

use hostmesh_wire::headers::HeaderLookup;
use serde::{Deserialize, Serialize};

use hostmesh_config::spec::Protocol;

use super::route::{Endpoint, Route};
use hostmesh_policy::route::{Rule, Split};
use hostmesh_wire as wire;

/// The decisions made from a request's path and headers.
#[derive(Debug)]
pub struct Decision<'a> {
    /// The first matching rule of the service's route policy, and its index in `rules`.
    pub rule: Option<(usize, &'a Rule)>,
    pub deadline: Deadline,
    /// The split drawn for this request (by weight), when the rule has splits.
    pub split: Option<&'a Split>,
}

/// How long a request may take to its response headers, and which setting said so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline {
    pub after: Duration,
    pub source: DeadlineSource,
}

/// The setting a deadline came from: the shortest of the route's (rule's, else policy's)
/// timeout and the client's headers wins; with none of them, `request_timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeadlineSource {
    /// The matched rule's `timeout`.
    RuleTimeout,
    /// The route policy's `timeout`.
    RouteTimeout,
    /// The client's `x-hostmesh-timeout`.
    HostmeshTimeoutHeader,
    /// The client's `grpc-timeout` (grpc services only).
    GrpcTimeoutHeader,
    /// The agent's `[proxy] request_timeout`.
    RequestTimeout,
}

impl DeadlineSource {
    /// How `explain` names it.
    pub fn describe(self) -> &'static str {
        match self {
            DeadlineSource::RuleTimeout => "the matched rule's timeout",
            DeadlineSource::RouteTimeout => "the route policy's timeout",
            DeadlineSource::HostmeshTimeoutHeader => "the x-hostmesh-timeout header",
            DeadlineSource::GrpcTimeoutHeader => "the grpc-timeout header",
            DeadlineSource::RequestTimeout => "the agent's request_timeout",
        }
    }
}

impl<'a> Decision<'a> {
    /// The decisions for a request to `route` with this path and these (client) headers;
    /// `request_timeout` is the agent's default deadline. Draws the split at random, as each
    /// request does.
    pub fn new(
        route: &'a Route,
        path: &str,
        headers: &(impl HeaderLookup + ?Sized),
        request_timeout: Duration,
    ) -> Decision<'a> {
        let policy = &route.policy;
        let rule = policy
            .rules
            .iter()
            .enumerate()
            .find(|(_, r)| r.matches(path, headers));
        let route_timeout = match rule.and_then(|(_, r)| r.timeout) {
            Some(t) => Some((t, DeadlineSource::RuleTimeout)),
            None => policy.timeout.map(|t| (t, DeadlineSource::RouteTimeout)),
        };
        let deadline = deadline_for(
            headers,
            route_timeout,
            request_timeout,
            route.protocol == Protocol::Grpc,
        );
        let split = rule
            .map(|(_, r)| r)
            .filter(|r| r.total_weight() > 0)
            .and_then(|r| r.choose_split(hostmesh_balance::roll(r.total_weight())));
        Decision {
            rule,
            deadline,
            split,
        }
    }

    /// Whether `ep` may take the request: it carries every tag of the drawn split (if any).
    pub fn admits(&self, ep: &Endpoint) -> bool {
        self.split.is_none_or(|s| s.selects(&ep.tags))
    }
}

/// The deadline for a request: the shortest of the route's timeout, the client's
/// `x-hostmesh-timeout` and (gRPC) `grpc-timeout`; when none is set, `request_timeout`. A tie
/// goes to the route's timeout (the operator's setting), then the client's.
pub fn deadline_for(
    headers: &(impl HeaderLookup + ?Sized),
    route_timeout: Option<(Duration, DeadlineSource)>,
    default: Duration,
    grpc: bool,
) -> Deadline {
    let header = |name: &str| headers.first_str(name);
    let client = header(wire::TIMEOUT)
        .and_then(wire::parse_timeout)
        .map(|t| (t, DeadlineSource::HostmeshTimeoutHeader));
    let grpc_timeout = grpc
        .then(|| header("grpc-timeout"))
        .flatten()
        .and_then(parse_grpc_timeout)
        .map(|t| (t, DeadlineSource::GrpcTimeoutHeader));
    let (after, source) = [route_timeout, client, grpc_timeout]
        .into_iter()
        .flatten()
        // min_by_key keeps the first of equal ones.
        .min_by_key(|(t, _)| *t)
        .unwrap_or((default, DeadlineSource::RequestTimeout));
    Deadline { after, source }
}

/// gRPC's `grpc-timeout`: up to 8 digits and a unit (H, M, S, m, u, n), with surrounding
/// spaces and tabs ignored as HTTP/1 parsers strip them (an HTTP/2 value keeps them: hyper's
/// path read `\t5H` as no timeout where the lean path read 5 hours; found by the peer_headers
/// fuzz target).
pub fn parse_grpc_timeout(v: &str) -> Option<Duration> {
    let v = v.trim_matches([' ', '\t']);
    // Checked: a value ending in a multi-byte character has no one-byte unit (and `split_at`
    // panicked on it).
    let (digits, unit) = v.split_at_checked(v.len().checked_sub(1)?)?;
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use http::HeaderMap;

    const MS: Duration = Duration::from_millis(1);

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn grpc_timeouts_parse() {
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("1S"), Some(Duration::from_secs(1)));
        assert_eq!(parse_grpc_timeout("123456789S"), None);
        assert_eq!(parse_grpc_timeout("S"), None);
        assert_eq!(parse_grpc_timeout(""), None);
        assert_eq!(parse_grpc_timeout("1η"), None);
        assert_eq!(
            parse_grpc_timeout("\t5H "),
            Some(Duration::from_secs(5 * 3600))
        );
    }

    #[test]
    fn the_shortest_deadline_wins_and_says_where_it_came_from() {
        let default = 10_000 * MS;
        let none = HeaderMap::new();
        let d = deadline_for(&none, None, default, false);
        assert_eq!(
            (d.after, d.source),
            (default, DeadlineSource::RequestTimeout)
        );
        let rule = Some((500 * MS, DeadlineSource::RuleTimeout));
        let d = deadline_for(&none, rule, default, false);
        assert_eq!((d.after, d.source), (500 * MS, DeadlineSource::RuleTimeout));
        let client = headers(&[("x-hostmesh-timeout", "250ms"), ("grpc-timeout", "100m")]);
        let d = deadline_for(&client, rule, default, false);
        assert_eq!(
            (d.after, d.source),
            (250 * MS, DeadlineSource::HostmeshTimeoutHeader)
        );
        // grpc-timeout counts for grpc services only.
        let d = deadline_for(&client, rule, default, true);
        assert_eq!(
            (d.after, d.source),
            (100 * MS, DeadlineSource::GrpcTimeoutHeader)
        );
        // A longer client deadline cannot stretch the route's.
        let long = headers(&[("x-hostmesh-timeout", "5s")]);
        let route = Some((2000 * MS, DeadlineSource::RouteTimeout));
        let d = deadline_for(&long, route, default, false);
        assert_eq!(
            (d.after, d.source),
            (2000 * MS, DeadlineSource::RouteTimeout)
        );
    }
}
