//! One config key, declared once: its dotted name, TOML kind, default, whether SIGHUP applies
//! it, and the rules docs/config.md shows. Everything else is derived from the declaration: the
//! schema of known keys, the environment variable, the value used when the key is unset, the
//! reload warning, and the key tables in docs/config.md (generated; a test keeps them current).

use toml::{Table, Value};

/// The TOML type a key takes; it tells the environment overlay how to turn a string into a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Str,
    Int,
    Float,
    Bool,
    /// A list of strings; comma-separated in the environment.
    StrList,
}

/// What a key is when it is not set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultValue {
    /// A value as it would be written in TOML (`"10s"`, `10000`, `true`, `["system"]`), read
    /// through the key's own rule, so the documented default is the one used.
    Written(&'static str),
    /// Worked out from other values or the machine; the text says how (for docs/config.md).
    Derived(&'static str),
    /// No value: the key is optional and means something only when set.
    Unset(&'static str),
    /// The key must be set.
    Required,
}

/// Whether SIGHUP applies a changed value or only a restart does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reload {
    Applied,
    /// The value is read at start; a reload that changes it logs a warning naming the key.
    Restart,
}

/// One key of the agent config or of a service definition.
#[derive(Debug, PartialEq)]
pub struct Key {
    /// Dotted: `etcd.lease_ttl`, or `name` at a file's top level.
    pub name: &'static str,
    pub kind: Kind,
    /// How docs/config.md names its type: "duration", "`IP:PORT`", "list of strings".
    pub type_name: &'static str,
    pub default: DefaultValue,
    pub reload: Reload,
    /// Markdown: what the value may be and what it does.
    pub rules: &'static str,
}

impl Key {
    /// The name inside its section (`lease_ttl` for `etcd.lease_ttl`).
    pub fn short_name(&self) -> &'static str {
        self.name
            .rsplit_once('.')
            .map_or(self.name, |(_, short)| short)
    }

    /// The section (`etcd` for `etcd.lease_ttl`, "" at the top level).
    pub fn section(&self) -> &'static str {
        self.name
            .rsplit_once('.')
            .map_or("", |(section, _)| section)
    }

    /// The written default as a TOML value. Declarations are checked by a unit test, so a bad
    /// literal is a bug in this crate, not an operator's problem.
    pub(crate) fn written_default(&self) -> Option<Value> {
        let DefaultValue::Written(literal) = self.default else {
            return None;
        };
        let table: Table = format!("v = {literal}")
            .parse()
            .unwrap_or_else(|e| panic!("the default of {} is not TOML: {e}", self.name));
        table.get("v").cloned()
    }
}

/// The markdown table of the keys of one `section` ("" for a file's top level), as
/// docs/config.md shows it; `with_reload` adds the SIGHUP column (agent config only). The docs
/// test writes and checks the tables, so only tests build this.
#[cfg(test)]
pub(crate) fn markdown_table(keys: &[&Key], section: &str, with_reload: bool) -> String {
    use std::fmt::Write as _;

    let mut out = String::new();
    if with_reload {
        out.push_str("| key | type | default | on SIGHUP | rules |\n|---|---|---|---|---|\n");
    } else {
        out.push_str("| key | type | default | rules |\n|---|---|---|---|\n");
    }
    for key in keys.iter().filter(|k| k.section() == section) {
        let default = match key.default {
            DefaultValue::Written(literal) => format!("`{}`", display_literal(literal)),
            DefaultValue::Derived(text) | DefaultValue::Unset(text) => text.to_owned(),
            DefaultValue::Required => "— (required)".to_owned(),
        };
        let _ = write!(
            out,
            "| `{}` | {} | {default} |",
            key.short_name(),
            key.type_name
        );
        if with_reload {
            out.push_str(match key.reload {
                Reload::Applied => " applied |",
                Reload::Restart => " restart |",
            });
        }
        let _ = writeln!(out, " {} |", key.rules);
    }
    out
}

/// A string default without its quotes (`10s`, not `"10s"`), as an operator reads a table.
#[cfg(test)]
fn display_literal(literal: &str) -> &str {
    literal
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .filter(|s| !s.contains('"'))
        .unwrap_or(literal)
}

/// Declares keys as constants and `SCHEMA`, the list of all of them in file order.
macro_rules! keys {
    ($($id:ident = $name:literal, $kind:ident, $type_name:expr, $default:expr, $reload:ident, $rules:expr;)+) => {
        $(
            pub(crate) const $id: &$crate::key::Key = &$crate::key::Key {
                name: $name,
                kind: $crate::key::Kind::$kind,
                type_name: $type_name,
                default: $default,
                reload: $crate::key::Reload::$reload,
                rules: $rules,
            };
        )+
        /// Every key, in the order docs/config.md lists them.
        pub(crate) const SCHEMA: &[&$crate::key::Key] = &[$($id),+];
    };
}
pub(crate) use keys;
