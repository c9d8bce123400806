//! From TOML text to a flat map of leaf values with their origin, checked against a schema of
//! known keys, so that every unknown key is found at once (serde's `deny_unknown_fields` stops at
//! the first) and a wrong type in one key cannot hide problems in the others.

use std::collections::BTreeMap;
use std::path::Path;

use toml::{Table, Value};

use super::key::Key;
use super::problem::{Origin, Problem};

/// A value as written, with where it was written.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Leaf {
    pub value: Value,
    pub origin: Origin,
}

/// Every known key that was set, by dotted name.
pub(crate) type Fields = BTreeMap<String, Leaf>;

/// Parses TOML text; a syntax error is one whole-file problem with its line and column, since
/// nothing after it can be read.
pub(crate) fn parse_toml(text: &str, file: &Path) -> Result<Table, Problem> {
    text.parse::<Table>().map_err(|e| {
        let message = e.message().trim_end();
        let message = match e.span() {
            Some(span) => {
                let (line, column) = line_column(text, span.start);
                format!("TOML syntax error at line {line}, column {column}: {message}")
            }
            None => format!("TOML syntax error: {message}"),
        };
        Problem::whole_file(file, message)
    })
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// Flattens `table` into the known keys of `schema`; every unknown key, and every section that
/// is not a table, is a problem.
pub(crate) fn flatten(table: &Table, file: &Path, schema: &[&Key]) -> (Fields, Vec<Problem>) {
    let mut fields = Fields::new();
    let mut problems = Vec::new();
    walk(table, "", file, schema, &mut fields, &mut problems);
    (fields, problems)
}

fn walk(
    table: &Table,
    prefix: &str,
    file: &Path,
    schema: &[&Key],
    fields: &mut Fields,
    problems: &mut Vec<Problem>,
) {
    for (name, value) in table {
        let key = join(prefix, name);
        if schema.iter().any(|known| known.name == key) {
            let origin = Origin::File {
                file: file.to_owned(),
                key: key.clone(),
            };
            fields.insert(
                key,
                Leaf {
                    value: value.clone(),
                    origin,
                },
            );
        } else if is_section(schema, &key) {
            match value {
                Value::Table(inner) => walk(inner, &key, file, schema, fields, problems),
                other => problems.push(Problem::new(
                    file,
                    key.as_str(),
                    format!("expected a table [{key}], found {}", other.type_str()),
                )),
            }
        } else {
            let what = if prefix.is_empty() && value.is_table() {
                "unknown section"
            } else {
                "unknown key"
            };
            let message = format!("{what}; {}", known_here(schema, prefix));
            problems.push(Problem::new(file, key, message));
        }
    }
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_owned()
    } else {
        format!("{prefix}.{name}")
    }
}

/// Whether `key` names a table that holds known keys.
pub(crate) fn is_section(schema: &[&Key], key: &str) -> bool {
    schema.iter().any(|known| {
        known
            .name
            .strip_prefix(key)
            .is_some_and(|rest| rest.starts_with('.'))
    })
}

/// "known keys in [etcd]: endpoints, prefix, …": the names right under `prefix`, so a typo's
/// problem shows the right spelling.
pub(crate) fn known_here(schema: &[&Key], prefix: &str) -> String {
    let mut names: Vec<String> = Vec::new();
    for known in schema {
        let rest = if prefix.is_empty() {
            Some(known.name)
        } else {
            known
                .name
                .strip_prefix(prefix)
                .and_then(|r| r.strip_prefix('.'))
        };
        let Some(rest) = rest else { continue };
        let name = match rest.split_once('.') {
            Some((section, _)) => format!("[{section}]"),
            None => rest.to_owned(),
        };
        if !names.contains(&name) {
            names.push(name);
        }
    }
    let all_sections = names.iter().all(|n| n.starts_with('['));
    let list = names.join(", ");
    match (prefix.is_empty(), all_sections) {
        (true, true) => format!("known sections: {list}"),
        (true, false) => format!("known keys: {list}"),
        (false, _) => format!("known keys in [{prefix}]: {list}"),
    }
}

/// "expected a string, found integer 5": what a wrong-typed value was instead.
pub(crate) fn mismatch(expected: &str, found: &Value) -> String {
    match found {
        Value::Array(_) => format!("expected {expected}, found an array"),
        Value::Table(_) => format!("expected {expected}, found a table"),
        scalar => format!("expected {expected}, found {} {scalar}", scalar.type_str()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    use crate::key::{DefaultValue::Unset, keys};

    keys! {
        NAME = "name", Str, "string", Unset("—"), Applied, "";
        CHECK_HTTP = "check.http", Str, "string", Unset("—"), Applied, "";
        CHECK_TCP = "check.tcp", Bool, "bool", Unset("—"), Applied, "";
    }

    #[test]
    fn syntax_error_has_line_and_column() {
        let p = parse_toml("a = 1\nb = = 2\n", Path::new("x.toml")).unwrap_err();
        assert_eq!(p.key, "");
        assert!(p.message.contains("line 2, column 5"), "{}", p.message);
    }

    #[test]
    fn unknown_keys_all_reported_with_known_names() {
        let table = parse_toml(
            "name = 'a'\nnmae = 'b'\n[check]\nhttp = '/'\ntpc = true\n[extra]\n",
            Path::new("x.toml"),
        )
        .unwrap();
        let (fields, problems) = flatten(&table, Path::new("x.toml"), SCHEMA);
        assert_eq!(fields.keys().collect::<Vec<_>>(), ["check.http", "name"]);
        let keys: Vec<_> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["check.tpc", "extra", "nmae"]);
        assert!(
            problems[0]
                .message
                .contains("known keys in [check]: http, tcp")
        );
        assert!(problems[2].message.contains("known keys: name, [check]"));
    }

    #[test]
    fn section_that_is_not_a_table() {
        let table = parse_toml("check = 5\n", Path::new("x.toml")).unwrap();
        let (_, problems) = flatten(&table, Path::new("x.toml"), SCHEMA);
        assert_eq!(problems[0].key, "check");
        assert!(problems[0].message.contains("expected a table"));
    }
}
