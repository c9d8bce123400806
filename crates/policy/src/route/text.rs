//! A policy as the TOML file `route get` prints and `route set` accepts, laid out as the example in docs/routes.md:
//! every value written out, defaults included, so the operator sees what agents apply.

use std::fmt::Write as _;

use toml::Value;

use super::policy::{RoutePolicy, Rule};
use super::values::show;

impl RoutePolicy {
    /// `route get` prints TOML that `route set` accepts: `parse_toml(&p.to_toml())` gives `p`.
    pub fn to_toml(&self) -> String {
        let mut out = String::new();
        if let Some(t) = self.timeout {
            line(&mut out, "timeout", &duration(t));
        }
        line(&mut out, "locality", &string(self.locality.as_str()));
        out.push('\n');
        let r = &self.retry;
        out.push_str("[retry]\n");
        line(
            &mut out,
            "budget_ratio",
            &Value::Float(r.budget_ratio).to_string(),
        );
        line(&mut out, "min_per_second", &r.min_per_second.to_string());
        line(&mut out, "max_attempts", &r.max_attempts.to_string());
        if let Some(t) = r.per_try_timeout {
            line(&mut out, "per_try_timeout", &duration(t));
        }
        let b = &self.breaker;
        out.push_str("\n[breaker]\n");
        line(
            &mut out,
            "consecutive_failures",
            &b.consecutive_failures.to_string(),
        );
        line(&mut out, "base_ejection", &duration(b.base_ejection));
        line(&mut out, "max_ejection", &duration(b.max_ejection));
        line(
            &mut out,
            "max_ejected_percent",
            &b.max_ejected_percent.to_string(),
        );
        for rule in &self.rules {
            out.push_str("\n[[rules]]\n");
            write_rule(&mut out, rule);
        }
        out
    }
}

fn write_rule(out: &mut String, rule: &Rule) {
    let mut matcher = Vec::new();
    if let Some(p) = &rule.path_prefix {
        matcher.push(format!("path_prefix = {}", string(p)));
    }
    if !rule.headers.is_empty() {
        let pairs: Vec<String> = rule
            .headers
            .iter()
            .map(|(n, v)| format!("{} = {}", string(n.as_str()), string(v)))
            .collect();
        matcher.push(format!("headers = {{ {} }}", pairs.join(", ")));
    }
    if !matcher.is_empty() {
        line(out, "match", &format!("{{ {} }}", matcher.join(", ")));
    }
    if !rule.split.is_empty() {
        let splits: Vec<String> = rule
            .split
            .iter()
            .map(|s| {
                let tags: Vec<String> = s.tags.iter().map(|t| string(t)).collect();
                format!("{{ tags = [{}], weight = {} }}", tags.join(", "), s.weight)
            })
            .collect();
        line(out, "split", &format!("[ {} ]", splits.join(", ")));
    }
    if let Some(t) = rule.timeout {
        line(out, "timeout", &duration(t));
    }
}

fn line(out: &mut String, key: &str, value: &str) {
    let _ = writeln!(out, "{key} = {value}");
}

/// A TOML string, quoted and escaped as needed.
fn string(s: &str) -> String {
    Value::String(s.to_owned()).to_string()
}

fn duration(d: std::time::Duration) -> String {
    string(&show(d))
}
