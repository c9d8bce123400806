//! From a TOML (or JSON, see [`super::json`]) document to a validated [`AccessPolicy`]. Checking
//! goes on past a bad value, so every problem is found in one pass, each with its key
//! (`allow[1]`, `allow_hosts[0]`).

use std::fmt::Display;
use std::path::Path;

use toml::{Table, Value};

use super::policy::{AccessPolicy, HostPattern};
use crate::route::{Unknown, mismatch, syntax};
use hostmesh_config::{Problem, Problems, names};

const KNOWN: [&str; 2] = ["allow", "allow_hosts"];

impl AccessPolicy {
    /// Parses and validates a policy file. Every problem at once, each with `file` and its key;
    /// unknown keys are problems.
    pub fn parse_toml(text: &str, file: &Path) -> Result<AccessPolicy, Problems> {
        let table = syntax(text, file)?;
        check(&table, file, Unknown::Reject)
    }
}

/// The checks shared by the TOML file and the stored JSON.
pub(super) fn check(
    table: &Table,
    file: &Path,
    unknown: Unknown,
) -> Result<AccessPolicy, Problems> {
    let mut problems = Vec::new();
    if unknown == Unknown::Reject {
        for name in table.keys().filter(|k| !KNOWN.contains(&k.as_str())) {
            problems.push(Problem::new(
                file,
                name.clone(),
                format!("unknown key; known keys: {}", KNOWN.join(", ")),
            ));
        }
    }
    if !KNOWN.iter().any(|k| table.contains_key(*k)) {
        problems.push(Problem::whole_file(
            file,
            "a policy needs `allow`, `allow_hosts` or both (`allow = []` denies every caller)",
        ));
    }
    let allow = list(
        table,
        file,
        "allow",
        "service names such as [\"web\"]",
        &mut problems,
        |s| names::service(s).map(|()| s.to_owned()),
    );
    let allow_hosts = list(
        table,
        file,
        "allow_hosts",
        "host names or prefixes such as [\"batch-7\", \"batch-*\"]",
        &mut problems,
        HostPattern::parse,
    );
    if problems.is_empty() {
        Ok(AccessPolicy { allow, allow_hosts })
    } else {
        Err(Problems(problems))
    }
}

/// `table[key]` as a list of strings, each through `convert`; each bad item is reported with
/// its index (`allow[2]`). Missing: empty.
fn list<T, E: Display>(
    table: &Table,
    file: &Path,
    key: &str,
    expected: &str,
    problems: &mut Vec<Problem>,
    convert: impl Fn(&str) -> Result<T, E>,
) -> Vec<T> {
    let Some(value) = table.get(key) else {
        return Vec::new();
    };
    let Some(items) = value.as_array() else {
        problems.push(Problem::new(
            file,
            key,
            mismatch(&format!("a list of {expected}"), value),
        ));
        return Vec::new();
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let at = format!("{key}[{i}]");
        let converted = match item {
            Value::String(s) => convert(s).map_err(|e| format!("{s:?} {e}")),
            other => Err(mismatch("a string", other)),
        };
        match converted {
            Ok(v) => out.push(v),
            Err(message) => problems.push(Problem::new(file, at, message)),
        }
    }
    out
}
