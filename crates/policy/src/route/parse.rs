//! From a TOML (or JSON, see [`super::json`]) document to a validated [`RoutePolicy`]. Checking
//! goes on past a bad value, with the default standing in, so every problem is found in one pass,
//! each with its key (`retry.budget_ratio`, `rules[0].split[1].weight`).

use std::path::Path;

use toml::{Table, Value};

use super::policy::{
    BASE_EJECTION, BUDGET_RATIO, BreakerPolicy, CONSECUTIVE_FAILURES, Locality, MAX_ATTEMPTS,
    MAX_EJECTED_PERCENT, MAX_EJECTION, MIN_PER_SECOND, RetryPolicy, RoutePolicy, Rule, Split,
};
use super::values::{
    float, header_name, header_value, integer, join, mismatch, path_prefix, positive_duration,
    show, string, tags,
};
use hostmesh_config::{Problem, Problems};

impl RoutePolicy {
    /// Parses and validates a route policy file. Every problem at once, each with `file` and its
    /// key; unknown keys are problems. A missing section or key means its default.
    pub fn parse_toml(text: &str, file: &Path) -> Result<RoutePolicy, Problems> {
        let table = syntax(text, file)?;
        let mut checker = Checker::new(file, Unknown::Reject);
        let policy = checker.policy_of(&table);
        checker.finish(policy)
    }
}

/// What to do with a key the schema does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unknown {
    /// A problem: what an operator wrote (`route set`), where it is most likely a typo.
    Reject,
    /// Skipped: what an agent reads from etcd, perhaps written by a newer version.
    Ignore,
}

/// A syntax error is one whole-file problem with its line and column: nothing after it can be read.
pub(crate) fn syntax(text: &str, file: &Path) -> Result<Table, Problem> {
    text.parse::<Table>().map_err(|e| {
        let message = e.message().trim_end();
        let message = match e.span() {
            Some(span) => {
                let before = text.get(..span.start).unwrap_or(text);
                let line = before.matches('\n').count() + 1;
                let line_start = before.rfind('\n').map_or(0, |i| i + 1);
                let column = before[line_start..].chars().count() + 1;
                format!("TOML syntax error at line {line}, column {column}: {message}")
            }
            None => format!("TOML syntax error: {message}"),
        };
        Problem::whole_file(file, message)
    })
}

/// A bad value, already reported.
struct Reported;

/// `Ok(None)`: not set; `Ok(Some)`: a good value; `Err`: a bad value, reported.
type Got<T> = Result<Option<T>, Reported>;

pub(crate) struct Checker<'a> {
    file: &'a Path,
    unknown: Unknown,
    pub problems: Vec<Problem>,
}

impl<'a> Checker<'a> {
    pub fn new(file: &'a Path, unknown: Unknown) -> Self {
        Checker {
            file,
            unknown,
            problems: Vec::new(),
        }
    }

    pub fn finish(self, policy: RoutePolicy) -> Result<RoutePolicy, Problems> {
        if self.problems.is_empty() {
            Ok(policy)
        } else {
            Err(Problems(self.problems))
        }
    }

    fn report(&mut self, key: &str, message: impl Into<String>) {
        self.problems
            .push(Problem::new(self.file, key.to_owned(), message));
    }

    /// Reports every key of `table` not in `known` (when strict), naming the known ones.
    fn known(&mut self, table: &Table, at: &str, known: &[&str]) {
        if self.unknown == Unknown::Ignore {
            return;
        }
        for name in table.keys() {
            if !known.contains(&name.as_str()) {
                let place = if at.is_empty() {
                    "known keys".to_owned()
                } else {
                    format!("known keys in {at}")
                };
                self.report(
                    &join(at, name),
                    format!("unknown key; {place}: {}", known.join(", ")),
                );
            }
        }
    }

    /// `table[name]` through `convert`.
    fn field<T>(
        &mut self,
        table: &Table,
        at: &str,
        name: &str,
        convert: impl FnOnce(&Value) -> Result<T, String>,
    ) -> Got<T> {
        let Some(value) = table.get(name) else {
            return Ok(None);
        };
        match convert(value) {
            Ok(v) => Ok(Some(v)),
            Err(message) => {
                self.report(&join(at, name), message);
                Err(Reported)
            }
        }
    }

    /// `table[name]` as a table (`[retry]`, `match = { … }`), if set.
    fn section<'t>(&mut self, table: &'t Table, at: &str, name: &str) -> Option<&'t Table> {
        let value = table.get(name)?;
        let inner = value.as_table();
        if inner.is_none() {
            self.report(&join(at, name), mismatch("a table", value));
        }
        inner
    }

    pub fn policy_of(&mut self, table: &Table) -> RoutePolicy {
        self.known(
            table,
            "",
            &["timeout", "locality", "retry", "breaker", "rules"],
        );
        let timeout = self
            .field(table, "", "timeout", positive_duration)
            .ok()
            .flatten();
        let locality = self
            .field(table, "", "locality", |v| {
                let s = string(v)?;
                Locality::parse(&s).ok_or_else(|| format!("{s:?} is not \"any\" or \"zone\""))
            })
            .ok()
            .flatten()
            .unwrap_or_default();
        let retry = match self.section(table, "", "retry") {
            Some(t) => self.retry(t),
            None => RetryPolicy::default(),
        };
        let breaker = match self.section(table, "", "breaker") {
            Some(t) => self.breaker(t),
            None => BreakerPolicy::default(),
        };
        let rules = self.rules(table);
        RoutePolicy {
            timeout,
            locality,
            retry,
            breaker,
            rules,
        }
    }

    fn retry(&mut self, t: &Table) -> RetryPolicy {
        let at = "retry";
        self.known(
            t,
            at,
            &[
                "budget_ratio",
                "min_per_second",
                "max_attempts",
                "per_try_timeout",
            ],
        );
        RetryPolicy {
            budget_ratio: self
                .field(t, at, "budget_ratio", |v| float(v, 0.0, 1.0))
                .ok()
                .flatten()
                .unwrap_or(BUDGET_RATIO),
            min_per_second: self
                .field(t, at, "min_per_second", |v| integer(v, 0, 10_000))
                .ok()
                .flatten()
                .unwrap_or(MIN_PER_SECOND),
            max_attempts: self
                .field(t, at, "max_attempts", |v| integer(v, 1, 10))
                .ok()
                .flatten()
                .unwrap_or(MAX_ATTEMPTS),
            per_try_timeout: self
                .field(t, at, "per_try_timeout", positive_duration)
                .ok()
                .flatten(),
        }
    }

    fn breaker(&mut self, t: &Table) -> BreakerPolicy {
        let at = "breaker";
        self.known(
            t,
            at,
            &[
                "consecutive_failures",
                "base_ejection",
                "max_ejection",
                "max_ejected_percent",
            ],
        );
        let consecutive_failures = self
            .field(t, at, "consecutive_failures", |v| integer(v, 1, 1000))
            .ok()
            .flatten()
            .unwrap_or(CONSECUTIVE_FAILURES);
        let base = self.field(t, at, "base_ejection", positive_duration);
        let max = self.field(t, at, "max_ejection", positive_duration);
        let max_ejected_percent = self
            .field(t, at, "max_ejected_percent", |v| integer(v, 0, 100))
            .ok()
            .flatten()
            .unwrap_or(MAX_EJECTED_PERCENT);
        // A bad value was reported already; comparing its stand-in would only mislead.
        let (Ok(base), Ok(max)) = (base, max) else {
            return BreakerPolicy {
                consecutive_failures,
                max_ejected_percent,
                ..BreakerPolicy::default()
            };
        };
        let base_ejection = base.unwrap_or(BASE_EJECTION);
        let max_ejection = max.unwrap_or(MAX_EJECTION);
        if base_ejection > max_ejection {
            self.report(
                "breaker.base_ejection",
                format!(
                    "{} is longer than breaker.max_ejection ({})",
                    show(base_ejection),
                    show(max_ejection)
                ),
            );
        }
        BreakerPolicy {
            consecutive_failures,
            base_ejection,
            max_ejection,
            max_ejected_percent,
        }
    }

    fn rules(&mut self, table: &Table) -> Vec<Rule> {
        let Some(value) = table.get("rules") else {
            return Vec::new();
        };
        let Some(items) = value.as_array() else {
            self.report("rules", mismatch("an array of tables [[rules]]", value));
            return Vec::new();
        };
        let mut rules = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let at = format!("rules[{i}]");
            match item.as_table() {
                Some(t) => rules.push(self.rule(t, &at)),
                None => self.report(&at, mismatch("a table", item)),
            }
        }
        rules
    }

    fn rule(&mut self, t: &Table, at: &str) -> Rule {
        self.known(t, at, &["match", "split", "timeout"]);
        let (path_prefix, headers) = match self.section(t, at, "match") {
            Some(m) => self.matcher(m, &join(at, "match")),
            None => (None, Vec::new()),
        };
        let split = self.splits(t, at);
        let timeout = self
            .field(t, at, "timeout", positive_duration)
            .ok()
            .flatten();
        if !t.contains_key("split") && !t.contains_key("timeout") {
            self.report(
                at,
                "this rule does nothing: give it a split, a timeout or both",
            );
        }
        Rule {
            path_prefix,
            headers,
            split,
            timeout,
        }
    }

    fn matcher(
        &mut self,
        m: &Table,
        at: &str,
    ) -> (Option<String>, Vec<(http::HeaderName, String)>) {
        self.known(m, at, &["path_prefix", "headers"]);
        let path_prefix = self
            .field(m, at, "path_prefix", |v| string(v).and_then(path_prefix))
            .ok()
            .flatten();
        let mut headers = Vec::new();
        if let Some(h) = self.section(m, at, "headers") {
            let at = join(at, "headers");
            for (name, value) in h {
                let key = join(&at, name);
                let checked = header_name(name).and_then(|name| {
                    let value = string(value)?;
                    header_value(&value)?;
                    Ok((name, value))
                });
                match checked {
                    Ok(pair) => headers.push(pair),
                    Err(message) => self.report(&key, message),
                }
            }
        }
        headers.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
        (path_prefix, headers)
    }

    fn splits(&mut self, t: &Table, at: &str) -> Vec<Split> {
        let Some(value) = t.get("split") else {
            return Vec::new();
        };
        let at = join(at, "split");
        let Some(items) = value.as_array() else {
            self.report(
                &at,
                mismatch("a list such as [{ tags = [\"v2\"], weight = 90 }]", value),
            );
            return Vec::new();
        };
        if items.is_empty() {
            self.report(
                &at,
                "must not be empty; leave split out to send to every instance",
            );
            return Vec::new();
        }
        let before = self.problems.len();
        let mut splits = Vec::with_capacity(items.len());
        for (j, item) in items.iter().enumerate() {
            let at = format!("{at}[{j}]");
            match item.as_table() {
                Some(s) => splits.push(self.split(s, &at)),
                None => self.report(&at, mismatch("a table { tags = […], weight = N }", item)),
            }
        }
        let total: u64 = splits.iter().map(|s| u64::from(s.weight)).sum();
        if self.problems.len() == before && total == 0 {
            self.report(&at, "the weights add up to 0; at least one must be above 0");
        }
        splits
    }

    fn split(&mut self, s: &Table, at: &str) -> Split {
        self.known(s, at, &["tags", "weight"]);
        let tags = self.field(s, at, "tags", tags);
        let weight = self.field(s, at, "weight", |v| integer(v, 0, 10_000));
        if matches!(tags, Ok(None)) {
            self.report(
                &join(at, "tags"),
                "missing; the tags an instance must carry, such as [\"v2\"]",
            );
        }
        if matches!(weight, Ok(None)) {
            self.report(&join(at, "weight"), "missing; a weight from 0 to 10000");
        }
        Split {
            tags: tags.ok().flatten().unwrap_or_default(),
            weight: weight.ok().flatten().unwrap_or(0),
        }
    }
}
