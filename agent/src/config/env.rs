//! The `HOSTMESH_<SECTION>__<KEY>` overlay: environment variables replace file values before
//! validation, so a bad value from either place gets the same checks.

use toml::Value;

use super::problem::{ENVIRONMENT, Origin, Problem};
use super::raw::{Fields, Key, Kind, Leaf, is_section, known_here};

const PREFIX: &str = "HOSTMESH_";

/// The process environment for [`super::AgentConfig::parse`]. Unlike `std::env::vars()`, which
/// panics on a variable that is not UTF-8, this converts lossily, so such a value becomes a
/// problem about that variable instead of a crash.
pub fn process_env() -> Vec<(String, String)> {
    std::env::vars_os()
        .map(|(name, value)| {
            (
                name.to_string_lossy().into_owned(),
                value.to_string_lossy().into_owned(),
            )
        })
        .collect()
}

/// The variable that overrides a dotted key: `etcd.lease_ttl` → `HOSTMESH_ETCD__LEASE_TTL`.
pub(crate) fn var_name(key: &str) -> String {
    format!("{PREFIX}{}", key.replace('.', "__").to_ascii_uppercase())
}

/// Overlays the `HOSTMESH_*__*` variables of `env` on `fields`. Variables without `__` are left
/// alone: other tools share the prefix (`HOSTMESH_BIN`).
pub(crate) fn overlay(
    fields: &mut Fields,
    schema: &[Key],
    env: impl IntoIterator<Item = (String, String)>,
) -> Vec<Problem> {
    let mut vars: Vec<(String, String)> = env
        .into_iter()
        .filter(|(name, _)| name.strip_prefix(PREFIX).is_some_and(|rest| rest.contains("__")))
        .collect();
    // The process environment has no order; sort so problems come out the same every run.
    vars.sort();
    let mut problems = Vec::new();
    for (var, raw) in vars {
        let Some(&(key, kind)) = schema.iter().find(|(key, _)| var_name(key) == var) else {
            problems.push(Problem::new(ENVIRONMENT, var.as_str(), unknown(&var, schema)));
            continue;
        };
        match to_value(kind, &raw) {
            Ok(value) => {
                let origin = Origin::Env { var };
                fields.insert(key.to_owned(), Leaf { value, origin });
            }
            Err(message) => problems.push(Problem::new(ENVIRONMENT, var, message)),
        }
    }
    problems
}

/// Why a variable names no key, with the keys its section does have.
fn unknown(var: &str, schema: &[Key]) -> String {
    let upper = var.to_ascii_uppercase();
    if upper != var && schema.iter().any(|(key, _)| var_name(key) == upper) {
        return format!("the variable must be uppercase: {upper}");
    }
    let rest = var.strip_prefix(PREFIX).unwrap_or(var);
    let (section, key) = rest.split_once("__").unwrap_or((rest, ""));
    let (section, key) = (section.to_ascii_lowercase(), key.to_ascii_lowercase());
    if is_section(schema, &section) {
        format!("no config key {section}.{key}; {}", known_here(schema, &section))
    } else {
        format!("no config section [{section}]; {}", known_here(schema, ""))
    }
}

/// Turns a variable's string into the TOML value the key takes.
fn to_value(kind: Kind, raw: &str) -> Result<Value, String> {
    Ok(match kind {
        Kind::Str => Value::String(raw.to_owned()),
        Kind::Int => Value::Integer(
            raw.trim()
                .parse()
                .map_err(|_| format!("expected an integer, found {raw:?}"))?,
        ),
        Kind::Float => Value::Float(
            raw.trim()
                .parse()
                .map_err(|_| format!("expected a number, found {raw:?}"))?,
        ),
        Kind::Bool => match raw.trim() {
            "true" => Value::Boolean(true),
            "false" => Value::Boolean(false),
            _ => return Err(format!("expected true or false, found {raw:?}")),
        },
        Kind::StrList if raw.trim().is_empty() => Value::Array(Vec::new()),
        Kind::StrList => Value::Array(
            raw.split(',')
                .map(|item| Value::String(item.trim().to_owned()))
                .collect(),
        ),
    })
}
