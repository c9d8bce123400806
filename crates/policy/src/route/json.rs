//! The JSON stored at `<prefix>/v1/routes/<service>`: the same shape and key names as the TOML
//! file, durations as strings (`"500ms"`), every value written out (defaults included):
//!
//! ```json
//! {"timeout":"2s",
//!  "retry":{"budget_ratio":0.2,"min_per_second":10,"max_attempts":3,"per_try_timeout":"500ms"},
//!  "breaker":{"consecutive_failures":5,"base_ejection":"5s","max_ejection":"1m","max_ejected_percent":50},
//!  "rules":[{"match":{"path_prefix":"/api/v2","headers":{"x-canary":"1"}},
//!            "split":[{"tags":["v2"],"weight":90},{"tags":["v1"],"weight":10}],"timeout":"500ms"}]}
//! ```
//!
//! Readers use the same checks as `route set` but ignore unknown fields (a newer writer may add
//! some) and treat `null` members as absent. A bad value rejects the whole policy.

use std::path::Path;

use serde_json::{Map, Value as Json, json};

use super::parse::{Checker, Unknown};
use super::policy::{RoutePolicy, Rule};
use super::values::show;
use crate::StoredPolicyError;

impl RoutePolicy {
    /// What `route set` writes to etcd.
    pub fn to_json(&self) -> Json {
        let mut top = Map::new();
        if let Some(t) = self.timeout {
            top.insert("timeout".into(), json!(show(t)));
        }
        top.insert("locality".into(), json!(self.locality.as_str()));
        let mut retry = Map::new();
        retry.insert("budget_ratio".into(), json!(self.retry.budget_ratio));
        retry.insert("min_per_second".into(), json!(self.retry.min_per_second));
        retry.insert("max_attempts".into(), json!(self.retry.max_attempts));
        if let Some(t) = self.retry.per_try_timeout {
            retry.insert("per_try_timeout".into(), json!(show(t)));
        }
        top.insert("retry".into(), Json::Object(retry));
        let b = &self.breaker;
        top.insert(
            "breaker".into(),
            json!({
                "consecutive_failures": b.consecutive_failures,
                "base_ejection": show(b.base_ejection),
                "max_ejection": show(b.max_ejection),
                "max_ejected_percent": b.max_ejected_percent,
            }),
        );
        let rules: Vec<Json> = self.rules.iter().map(rule_json).collect();
        top.insert("rules".into(), Json::Array(rules));
        Json::Object(top)
    }

    /// Reads what is stored in etcd: unknown fields ignored, bad values → `Err` naming each
    /// (agents then keep the defaults and warn once).
    pub fn from_json(v: &Json) -> Result<RoutePolicy, StoredPolicyError> {
        let Some(toml::Value::Table(table)) = to_toml_value(v)? else {
            return Err(StoredPolicyError::NotAnObject);
        };
        let mut checker = Checker::new(Path::new("etcd"), Unknown::Ignore);
        let policy = checker.policy_of(&table);
        checker.finish(policy).map_err(StoredPolicyError::Invalid)
    }
}

fn rule_json(rule: &Rule) -> Json {
    let mut r = Map::new();
    let mut m = Map::new();
    if let Some(p) = &rule.path_prefix {
        m.insert("path_prefix".into(), json!(p));
    }
    if !rule.headers.is_empty() {
        let headers: Map<String, Json> = rule
            .headers
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), json!(v)))
            .collect();
        m.insert("headers".into(), Json::Object(headers));
    }
    if !m.is_empty() {
        r.insert("match".into(), Json::Object(m));
    }
    if !rule.split.is_empty() {
        let split: Vec<Json> = rule
            .split
            .iter()
            .map(|s| json!({ "tags": s.tags, "weight": s.weight }))
            .collect();
        r.insert("split".into(), Json::Array(split));
    }
    if let Some(t) = rule.timeout {
        r.insert("timeout".into(), json!(show(t)));
    }
    Json::Object(r)
}

/// JSON to the TOML value model the checks work on; `None` for `null`, which object members
/// treat as absent.
pub(crate) fn to_toml_value(v: &Json) -> Result<Option<toml::Value>, StoredPolicyError> {
    Ok(Some(match v {
        Json::Null => return Ok(None),
        Json::Bool(b) => toml::Value::Boolean(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => toml::Value::Integer(i),
            None => toml::Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(s) => toml::Value::String(s.clone()),
        Json::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                out.push(to_toml_value(item)?.ok_or(StoredPolicyError::NullInList)?);
            }
            toml::Value::Array(out)
        }
        Json::Object(members) => {
            let mut table = toml::Table::new();
            for (name, member) in members {
                if let Some(value) = to_toml_value(member)? {
                    table.insert(name.clone(), value);
                }
            }
            toml::Value::Table(table)
        }
    }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::route::Split;

    fn full() -> RoutePolicy {
        let text = include_str!("testdata/example.toml");
        RoutePolicy::parse_toml(text, Path::new("example.toml")).unwrap()
    }

    #[test]
    fn round_trip() {
        for policy in [RoutePolicy::default(), full()] {
            let json = policy.to_json();
            assert_eq!(RoutePolicy::from_json(&json).unwrap(), policy, "{json}");
            // Through the bytes etcd stores, too.
            let bytes = serde_json::to_vec(&json).unwrap();
            let back: Json = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(RoutePolicy::from_json(&back).unwrap(), policy);
        }
    }

    #[test]
    fn shape() {
        let json = full().to_json();
        assert_eq!(json["timeout"], "2s");
        assert_eq!(json["retry"]["budget_ratio"], 0.2);
        assert_eq!(json["retry"]["per_try_timeout"], "500ms");
        assert_eq!(json["breaker"]["max_ejection"], "1m");
        assert_eq!(json["rules"][0]["match"]["headers"]["x-canary"], "1");
        assert_eq!(
            json["rules"][0]["split"][1],
            json!({"tags": ["v1"], "weight": 10})
        );
        assert_eq!(json["rules"][0]["timeout"], "500ms");
        let bare = RoutePolicy::default().to_json();
        assert!(bare.get("timeout").is_none());
        assert_eq!(bare["rules"], json!([]));
    }

    #[test]
    fn unknown_fields_and_nulls_are_ignored() {
        let v = json!({
            "timeout": "1s",
            "future": {"anything": [1, 2]},
            "retry": {"max_attempts": 2, "hedging": true, "per_try_timeout": null},
            "breaker": null,
            "rules": [{
                "match": {"path_prefix": "/a", "method": "GET"},
                "split": [{"tags": ["v2"], "weight": 1, "zone": "eu"}],
                "mirror": "v3"
            }]
        });
        let policy = RoutePolicy::from_json(&v).unwrap();
        assert_eq!(policy.timeout, Some(Duration::from_secs(1)));
        assert_eq!(policy.retry.max_attempts, 2);
        assert_eq!(policy.retry.per_try_timeout, None);
        assert_eq!(policy.breaker, Default::default());
        assert_eq!(policy.rules[0].path_prefix.as_deref(), Some("/a"));
        assert_eq!(
            policy.rules[0].split,
            vec![Split {
                tags: vec!["v2".into()],
                weight: 1
            }]
        );
        // An empty object is the default policy.
        assert_eq!(
            RoutePolicy::from_json(&json!({})).unwrap(),
            RoutePolicy::default()
        );
    }

    #[test]
    fn bad_values_are_rejected_with_their_keys() {
        let cases = [
            (json!([]), "expected a JSON object"),
            (json!("x"), "expected a JSON object"),
            (json!({"timeout": 5}), "timeout: expected a duration"),
            (
                json!({"timeout": "0s"}),
                "timeout: must be greater than zero",
            ),
            (
                json!({"retry": {"budget_ratio": 1.5}}),
                "retry.budget_ratio: must be between",
            ),
            (
                json!({"retry": {"max_attempts": 3.0}}),
                "retry.max_attempts: expected an integer",
            ),
            (json!({"retry": "fast"}), "retry: expected a table"),
            (
                json!({"rules": [{"split": [{"tags": ["V2"], "weight": 1}]}]}),
                "rules[0].split[0].tags",
            ),
            (
                json!({"rules": [{"split": [{"tags": ["v2"], "weight": 0}]}]}),
                "rules[0].split: the weights add up to 0",
            ),
            (
                json!({"rules": [{"match": {}}]}),
                "rules[0]: this rule does nothing",
            ),
            (json!({"rules": [null]}), "a list holds null"),
        ];
        for (v, want) in cases {
            let err = RoutePolicy::from_json(&v).unwrap_err().to_string();
            assert!(err.contains(want), "{v}: {err}");
        }
    }

    #[test]
    fn several_bad_values_are_all_named() {
        let v = json!({"timeout": "x", "retry": {"max_attempts": 0}});
        let err = RoutePolicy::from_json(&v).unwrap_err().to_string();
        assert!(
            err.contains("timeout:") && err.contains("retry.max_attempts:"),
            "{err}"
        );
    }
}
