//! `hostmesh explain URL-or-NAME [--header K:V]…`: asks the local agent (`GET /explain`) how it
//! would route this request now, and prints its answer as a report (or `--json`).
//!
//! The target and headers are checked here first, so bad input exits 2 without an agent; no
//! agent answering, or a name the agent does not know, exits 1.

use std::fmt::Write as _;

use clap::Args;

use super::endpoints::seconds;
use super::{CliError, ClientArgs, table};
use crate::admin::explain::report::{Candidate, Report};
use crate::admin::explain::target;

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// What an app would call: http://orders.mesh:8080/path, v2.orders.mesh:8080, orders, or a
    /// VIP such as 127.77.0.12:8080
    target: String,
    /// A request header, NAME:VALUE (repeatable): route rules match on them, and
    /// x-hostmesh-timeout or grpc-timeout can shorten the deadline
    #[arg(long = "header", short = 'H', value_name = "K:V")]
    headers: Vec<String>,
    #[command(flatten)]
    client: ClientArgs,
}

pub async fn run(args: ExplainArgs) -> Result<(), CliError> {
    target::parse(&args.target).map_err(|e| CliError::Usage(format!("{:?}: {e}", args.target)))?;
    for h in &args.headers {
        target::header(h).map_err(CliError::Usage)?;
    }
    let client = args.client.resolve()?;
    let mut query = form_urlencoded::Serializer::new(String::new());
    query.append_pair("target", &args.target);
    for h in &args.headers {
        query.append_pair("header", h);
    }
    let path = format!("/explain?{}", query.finish());
    let (status, body) = client
        .admin_request(hyper::Method::GET, &path, client.timeout)
        .await
        .map_err(|e| CliError::Runtime(format!("no agent answers: {e}")))?;
    let text = String::from_utf8_lossy(&body);
    match status {
        200 => {}
        400 => return Err(CliError::Usage(text.trim_end().to_owned())),
        404 => {
            return Err(CliError::Runtime(format!(
                "{}: {}",
                args.target,
                text.trim_end()
            )));
        }
        // An agent too old to know /explain answers 404 as well; anything else is the agent's.
        _ => {
            return Err(CliError::Runtime(format!(
                "the agent answered {status}: {}",
                text.trim_end()
            )));
        }
    }
    if args.client.json {
        super::print(text.trim_end());
        return Ok(());
    }
    let report: Report = serde_json::from_slice(&body)
        .map_err(|e| CliError::Runtime(format!("odd answer from the agent: {e}")))?;
    super::print(render(&report).trim_end());
    Ok(())
}

/// The text report.
fn render(r: &Report) -> String {
    let mut out = String::new();
    let subset = r.tag.as_deref().map_or("all instances".to_owned(), |t| {
        format!("instances tagged {t}")
    });
    let _ = writeln!(
        out,
        "service:   {} ({subset}), VIP {}:{}, {}, path {}",
        r.service, r.vip, r.port, r.protocol, r.path
    );
    let rule = match &r.rule {
        None if r.protocol == "tcp" => "none (tcp: rules and headers do not apply)".to_owned(),
        None => format!(
            "none of {} matches: every passing instance is a candidate",
            r.rules
        ),
        Some(rule) => {
            let mut m: Vec<String> = Vec::new();
            if let Some(p) = &rule.path_prefix {
                m.push(format!("path_prefix {p}"));
            }
            m.extend(rule.headers.iter().map(|(k, v)| format!("{k}: {v}")));
            let what = if m.is_empty() {
                "every request".to_owned()
            } else {
                m.join(", ")
            };
            let mut line = format!("rules[{}] (of {}) matches {what}", rule.index, r.rules);
            if !rule.split.is_empty() {
                let shares: Vec<String> = rule
                    .split
                    .iter()
                    .map(|s| format!("{}={}", s.tags.join("+"), s.weight))
                    .collect();
                let drawn = r.split.as_ref().map_or("none".into(), |t| t.join("+"));
                let _ = write!(line, "; split {} (this request: {drawn})", shares.join(" "));
            }
            line
        }
    };
    let _ = writeln!(out, "rule:      {rule}");
    let mut deadline = format!(
        "{} from {}",
        millis(r.deadline.ms),
        r.deadline.source.describe()
    );
    if let Some(t) = r.deadline.per_try_timeout_ms {
        let _ = write!(deadline, " (each attempt at most {})", millis(t));
    }
    let _ = writeln!(out, "deadline:  {deadline}");
    let budget = r
        .retry
        .budget_left
        .map_or("unknown".into(), |n| n.to_string());
    let _ = writeln!(
        out,
        "retries:   at most {} attempts; {budget} retries left in the budget ({}% of requests + {}/s)",
        r.retry.max_attempts,
        r.retry.budget_ratio * 100.0,
        r.retry.min_per_second
    );
    out.push('\n');
    let rows: Vec<Vec<String>> = r.candidates.iter().map(row).collect();
    out.push_str(&table::render(
        &[
            "HOST", "ID", "ADDRESS", "ZONE", "PORT", "HEALTH", "TAGS", "WEIGHT", "EWMA",
            "INFLIGHT", "COST", "BREAKER", "EXCLUDED",
        ],
        &rows,
    ));
    out.push('\n');
    let pick = match &r.pick {
        None => "none".to_owned(),
        Some(p) => {
            let how = match p.how.as_str() {
                "probe" => "its ejection is over: it gets the one probe",
                "only" => "the only eligible instance",
                _ => "the cheaper of two drawn at random; another run may differ",
            };
            format!("{}/{} ({how})", p.host, p.id)
        }
    };
    let _ = writeln!(out, "pick:      {pick}");
    if r.locality == "zone" {
        let zones = match (&r.zone, r.zone_share) {
            (None, _) => "this agent has no agent.zone, so zones do not apply".to_owned(),
            (Some(z), share) => {
                let share = share.map_or(String::new(), |s| {
                    format!(
                        " (it keeps {:.0}% of requests while it has an eligible instance)",
                        s * 100.0
                    )
                });
                let decided = match r.pick.as_ref().map(|p| p.zone.as_str()) {
                    Some("in-zone") => "picked in it",
                    Some("spilled-none-left") => {
                        "no eligible instance in it is left: another zone's"
                    }
                    Some("spilled-share") => "this request drew the share it sends to other zones",
                    _ => "nothing picked",
                };
                format!("this agent is in {z}{share}; {decided}")
            }
        };
        let _ = writeln!(out, "zones:     locality = \"zone\": {zones}");
    }
    let _ = writeln!(out, "outcome:   {}", r.outcome);
    out
}

fn row(candidate: &Candidate) -> Vec<String> {
    let c = &candidate.endpoint;
    let dash = || "-".to_owned();
    let breaker = match (c.breaker.as_deref(), c.ejected_for_ms) {
        (Some("ejected"), Some(ms)) => format!("ejected {}", seconds(ms)),
        (Some(b), _) => b.to_owned(),
        (None, _) => dash(),
    };
    vec![
        c.host.clone(),
        c.id.clone(),
        c.address.map_or_else(dash, |a| a.to_string()),
        c.zone.clone().unwrap_or_else(dash),
        c.port.to_string(),
        c.health.to_string(),
        if c.tags.is_empty() {
            dash()
        } else {
            c.tags.join(",")
        },
        c.weight.to_string(),
        c.ewma_ms.map_or_else(dash, |v| format!("{v:.1}ms")),
        c.inflight.map_or_else(dash, |v| v.to_string()),
        candidate.cost.map_or_else(dash, |v| format!("{v:.3}")),
        breaker,
        candidate.excluded.clone().unwrap_or_else(dash),
    ]
}

fn millis(ms: u64) -> String {
    if ms >= 1000 && ms.is_multiple_of(100) {
        seconds(ms)
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::BTreeMap;
    use std::net::Ipv4Addr;

    use hostmesh_registrar::record::Health;

    use super::*;
    use crate::admin::explain::report::{
        DeadlineReport, Pick, RetryReport, RuleReport, SplitReport,
    };
    use crate::admin::status::EndpointStatus;
    use hostmesh_proxy::outbound::decision::DeadlineSource;

    fn candidate(host: &str, breaker: &str, ejected_for_ms: Option<u64>) -> Candidate {
        Candidate {
            endpoint: EndpointStatus {
                host: host.into(),
                id: "orders-1".into(),
                address: Some(Ipv4Addr::new(10, 0, 0, 2).into()),
                zone: Some("z2".into()),
                port: 8080,
                health: Health::Passing,
                tags: vec!["v2".into()],
                weight: 100,
                locked: false,
                ewma_ms: Some(3.2),
                inflight: Some(0),
                breaker: Some(breaker.into()),
                ejected_for_ms,
            },
            local: false,
            cost: ejected_for_ms.is_none().then_some(0.031),
            excluded: ejected_for_ms.map(|_| "ejected by its breaker".into()),
        }
    }

    fn report() -> Report {
        Report {
            target: "http://orders.mesh:8080/api".into(),
            service: "orders".into(),
            tag: None,
            vip: Ipv4Addr::new(127, 77, 0, 12),
            port: 8080,
            protocol: "http".into(),
            path: "/api".into(),
            headers: BTreeMap::from([("x-canary".into(), "1".into())]),
            rules: 2,
            rule: Some(RuleReport {
                index: 1,
                path_prefix: Some("/api".into()),
                headers: BTreeMap::from([("x-canary".into(), "1".into())]),
                timeout_ms: Some(500),
                split: vec![SplitReport {
                    tags: vec!["v2".into()],
                    weight: 90,
                }],
            }),
            locality: "any".into(),
            zone: Some("z1".into()),
            zone_share: None,
            split: Some(vec!["v2".into()]),
            deadline: DeadlineReport {
                ms: 500,
                source: DeadlineSource::RuleTimeout,
                per_try_timeout_ms: None,
            },
            retry: RetryReport {
                max_attempts: 3,
                budget_left: Some(100),
                budget_ratio: 0.2,
                min_per_second: 10,
            },
            candidates: vec![
                candidate("b", "ejected", Some(4213)),
                candidate("c", "closed", None),
            ],
            pick: Some(Pick {
                host: "c".into(),
                id: "orders-1".into(),
                how: "only".into(),
                zone: "not-applied".into(),
            }),
            outcome: "sent to c/orders-1 through its agent at 10.0.0.3:4143".into(),
        }
    }

    #[test]
    fn the_report_names_the_rule_deadline_budget_ejection_and_pick() {
        let text = render(&report());
        for want in [
            "service:   orders (all instances), VIP 127.77.0.12:8080, http, path /api",
            "rule:      rules[1] (of 2) matches path_prefix /api, x-canary: 1; split v2=90 (this request: v2)",
            "deadline:  500ms from the matched rule's timeout",
            "at most 3 attempts; 100 retries left",
            "ejected 4.2s  ejected by its breaker",
            "pick:      c/orders-1 (the only eligible instance)",
            "outcome:   sent to c/orders-1",
        ] {
            assert!(text.contains(want), "missing {want:?} in:\n{text}");
        }
    }

    #[test]
    fn zones_are_reported_only_for_zone_aware_routes() {
        let mut r = report();
        assert!(!render(&r).contains("zones:"));
        r.locality = "zone".into();
        r.zone_share = Some(0.8);
        if let Some(p) = r.pick.as_mut() {
            p.zone = "spilled-share".into();
        }
        let text = render(&r);
        assert!(
            text.contains(
                "zones:     locality = \"zone\": this agent is in z1 (it keeps 80% of requests \
                 while it has an eligible instance); this request drew the share it sends to \
                 other zones"
            ),
            "{text}"
        );
        r.zone = None;
        assert!(render(&r).contains("this agent has no agent.zone"));
    }

    #[test]
    fn no_rule_and_no_pick_read_plainly() {
        let mut r = report();
        r.rule = None;
        r.split = None;
        r.pick = None;
        r.deadline.source = DeadlineSource::RequestTimeout;
        r.deadline.ms = 10_000;
        r.outcome = "503 no-endpoints: no eligible instance".into();
        let text = render(&r);
        assert!(text.contains("rule:      none of 2 matches"), "{text}");
        assert!(
            text.contains("10.0s from the agent's request_timeout"),
            "{text}"
        );
        assert!(text.contains("pick:      none"), "{text}");
        assert!(text.contains("503 no-endpoints"), "{text}");
    }

    #[test]
    fn the_json_round_trips() {
        let r = report();
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains("\"source\":\"rule-timeout\""), "{json}");
        assert_eq!(serde_json::from_str::<Report>(&json).unwrap(), r);
    }
}
