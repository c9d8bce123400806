//! One value of a route policy file: durations, bounded numbers, paths, header names and values,
//! tags, each returning why it is refused; and how keys and wrong types are named in problems.

use std::time::Duration;

use toml::Value;

const DURATION: &str = "a duration such as \"2s\" or \"250ms\"";

/// `prefix.name`; `name` alone at the top; names outside `[A-Za-z0-9_-]` quoted, as TOML would.
pub(super) fn join(prefix: &str, name: &str) -> String {
    let bare = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    let name = if bare {
        name.to_owned()
    } else {
        format!("{name:?}")
    };
    if prefix.is_empty() {
        name
    } else {
        format!("{prefix}.{name}")
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

pub(super) fn string(v: &Value) -> Result<String, String> {
    v.as_str()
        .map(str::to_owned)
        .ok_or_else(|| mismatch("a string", v))
}

/// A duration greater than zero and at most a day, by the config's rule: every duration in a
/// route policy is a timeout or an ejection time the agent adds to the current time.
pub(super) fn positive_duration(v: &Value) -> Result<Duration, String> {
    let s = v.as_str().ok_or_else(|| mismatch(DURATION, v))?;
    hostmesh_config::duration::parse(s)
}

/// Shows a duration the way the file writes it (`"250ms"`, `"1m 30s"`).
pub(crate) use hostmesh_config::duration::show;

pub(super) fn integer(v: &Value, min: u32, max: u32) -> Result<u32, String> {
    let Value::Integer(n) = v else {
        return Err(mismatch("an integer", v));
    };
    match u32::try_from(*n) {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!("must be between {min} and {max}, found {n}")),
    }
}

/// A number; an integer such as `1` counts, since TOML tells `1` from `1.0`.
pub(super) fn float(v: &Value, min: f64, max: f64) -> Result<f64, String> {
    let n = match v {
        Value::Float(f) => *f,
        // Small integers convert exactly; large ones fail the range check anyway.
        Value::Integer(i) => *i as f64,
        other => return Err(mismatch("a number", other)),
    };
    if (min..=max).contains(&n) {
        Ok(n)
    } else {
        Err(format!("must be between {min:?} and {max:?}, found {n}"))
    }
}

pub(super) fn path_prefix(s: String) -> Result<String, String> {
    if !s.starts_with('/') {
        return Err(format!("{s:?} must start with '/'"));
    }
    if let Some(c) = s
        .chars()
        .find(|c| matches!(c, '?' | '#') || c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "{s:?} has the character {c:?}, which a request path never holds"
        ));
    }
    Ok(s)
}

pub(super) fn header_name(name: &str) -> Result<http::HeaderName, String> {
    if name.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(format!(
            "header names are written in lowercase: {:?}",
            name.to_ascii_lowercase()
        ));
    }
    http::HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("{name:?} is not a valid header name"))
}

pub(super) fn header_value(value: &str) -> Result<(), String> {
    http::HeaderValue::from_str(value)
        .map(drop)
        .map_err(|_| format!("{value:?} is not a valid header value"))
}

pub(super) fn tags(v: &Value) -> Result<Vec<String>, String> {
    const EXPECTED: &str = "a list of tags such as [\"v2\"]";
    let Some(items) = v.as_array() else {
        return Err(mismatch(EXPECTED, v));
    };
    if items.is_empty() {
        return Err("must not be empty; a split names the tags its instances carry".to_owned());
    }
    let mut tags = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let Some(tag) = item.as_str() else {
            return Err(format!("item {}: {}", i + 1, mismatch("a tag", item)));
        };
        let ok = !tag.is_empty()
            && tag.len() <= 63
            && tag
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !ok {
            return Err(format!(
                "item {} ({tag:?}): a tag is 1 to 63 lowercase letters, digits and '-'",
                i + 1
            ));
        }
        tags.push(tag.to_owned());
    }
    Ok(tags)
}
