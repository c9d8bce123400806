//! `Reader`: converts flattened leaf values into typed values one key at a time. A bad value
//! becomes a problem at its origin (file key or environment variable) and the key's default
//! stands in, so reading goes on and every problem is found in one pass. Every value read is
//! also kept rendered by key ([`Values`]), so a reload can tell which keys changed.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Value;

use super::duration;
use super::key::Key;
use super::problem::{Origin, Problem};
use super::raw::{Fields, mismatch};

pub(crate) const DURATION: &str = "a duration such as \"10s\" or \"250ms\"";

/// The value of every key as read (set or default), rendered with `Debug`: one comparable form
/// for values of every type, so a reload names exactly the keys whose meaning changed (`"1s"`
/// and `"1000ms"` read the same).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Values(BTreeMap<&'static str, String>);

impl Values {
    /// The keys whose value differs between `self` and `other`.
    pub fn changed<'a>(&'a self, other: &'a Values) -> impl Iterator<Item = &'static str> + 'a {
        let keys: BTreeSet<&'static str> = self.0.keys().chain(other.0.keys()).copied().collect();
        keys.into_iter()
            .filter(|key| self.0.get(key) != other.0.get(key))
    }

    /// The keys that have a value.
    #[cfg(test)]
    pub fn keys(&self) -> Vec<&'static str> {
        self.0.keys().copied().collect()
    }
}

/// What stands in when a key is unset or its value is bad.
pub(crate) enum Or<T> {
    /// The key's declared default (`DefaultValue::Written`).
    Declared,
    /// A value the caller works out (derived, required and optional keys).
    Given(T),
}

pub(crate) struct Reader {
    file: PathBuf,
    fields: Fields,
    /// Keys whose value was bad: cross-key checks skip them, since their stand-in default would
    /// only produce a second, misleading problem.
    failed: BTreeSet<String>,
    pub problems: Vec<Problem>,
    pub values: Values,
}

impl Reader {
    pub fn new(file: &Path, fields: Fields, problems: Vec<Problem>) -> Self {
        Reader {
            file: file.to_owned(),
            fields,
            failed: BTreeSet::new(),
            problems,
            values: Values::default(),
        }
    }

    /// Whether the key was set (in the file or the environment).
    pub fn has(&self, key: &Key) -> bool {
        self.fields.contains_key(key.name)
    }

    /// Whether no problem was reported for any of `keys`.
    pub fn ok(&self, keys: &[&Key]) -> bool {
        keys.iter().all(|key| !self.failed.contains(key.name))
    }

    /// Reports a problem with `key` where its value came from (the file key when it was not set).
    pub fn report(&mut self, key: &Key, message: impl Into<String>) {
        self.report_at(key.name, message);
    }

    /// Reports a problem with a key or a section (`check`) by its dotted name.
    pub fn report_at(&mut self, name: &str, message: impl Into<String>) {
        let origin = match self.fields.get(name) {
            Some(leaf) => leaf.origin.clone(),
            None => Origin::File {
                file: self.file.clone(),
                key: name.to_owned(),
            },
        };
        self.problems.push(origin.problem(message));
        self.failed.insert(name.to_owned());
    }

    /// The value of `key` through `convert`, or what `or` says when unset or bad.
    pub fn value<T: Debug>(
        &mut self,
        key: &'static Key,
        or: Or<T>,
        mut convert: impl FnMut(&Value) -> Result<T, String>,
    ) -> T {
        let read = self.fields.get(key.name).map(|leaf| convert(&leaf.value));
        let value = match read {
            Some(Ok(value)) => value,
            Some(Err(message)) => {
                self.report(key, message);
                fallback(key, or, convert)
            }
            None => fallback(key, or, convert),
        };
        self.record(key, &value);
        value
    }

    /// Keeps the value of a key whose default the caller worked out without [`Reader::value`].
    pub fn record<T: Debug>(&mut self, key: &'static Key, value: &T) {
        self.values.0.insert(key.name, format!("{value:?}"));
    }

    /// A string value through `parse` (default: the declared one); `expected` describes it for
    /// a wrong-typed value.
    pub fn string<T: Debug>(
        &mut self,
        key: &'static Key,
        expected: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> T {
        self.string_or(key, Or::Declared, expected, parse)
    }

    /// A string value through `parse`, with `or` standing in.
    pub fn string_or<T: Debug>(
        &mut self,
        key: &'static Key,
        or: Or<T>,
        expected: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> T {
        self.value(key, or, |value| match value.as_str() {
            Some(s) => parse(s),
            None => Err(mismatch(expected, value)),
        })
    }

    /// An optional string value; unset or `""` is `None`, so an environment variable can unset
    /// what the file set.
    pub fn optional<T: Debug>(
        &mut self,
        key: &'static Key,
        expected: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Option<T> {
        self.string_or(key, Or::Given(None), expected, |s| {
            if s.is_empty() {
                Ok(None)
            } else {
                parse(s).map(Some)
            }
        })
    }

    /// An optional path; `""` is `None`.
    pub fn optional_path(&mut self, key: &'static Key) -> Option<PathBuf> {
        self.optional(key, "a path", |s| Ok(PathBuf::from(s)))
    }

    /// A path that must not be empty.
    pub fn path(&mut self, key: &'static Key) -> PathBuf {
        self.string(key, "a path", |s| {
            if s.is_empty() {
                Err("must not be empty".to_owned())
            } else {
                Ok(PathBuf::from(s))
            }
        })
    }

    /// A duration string, greater than zero.
    pub fn duration(&mut self, key: &'static Key, or: Or<Duration>) -> Duration {
        self.string_or(key, or, DURATION, duration::parse)
    }

    /// A duration string that may be zero.
    pub fn duration_or_zero(&mut self, key: &'static Key) -> Duration {
        self.string(key, DURATION, duration::parse_allow_zero)
    }

    /// One of a few words, for enums.
    pub fn choice<T: Copy + Debug>(&mut self, key: &'static Key, choices: &[(&str, T)]) -> T {
        let names: Vec<String> = choices
            .iter()
            .map(|(name, _)| format!("{name:?}"))
            .collect();
        let expected = format!("one of {}", names.join(", "));
        self.string(key, &expected, |s| {
            choices
                .iter()
                .find(|(name, _)| *name == s)
                .map(|(_, value)| *value)
                .ok_or_else(|| format!("expected {expected}, found {s:?}"))
        })
    }

    /// An integer within `range`.
    pub fn integer<T: TryFrom<i64> + Debug>(
        &mut self,
        key: &'static Key,
        or: Or<T>,
        range: RangeInclusive<i64>,
    ) -> T {
        self.value(key, or, |value| {
            let Value::Integer(n) = value else {
                return Err(mismatch("an integer", value));
            };
            if !range.contains(n) {
                return Err(if *range.end() == i64::MAX {
                    format!("must be at least {}, found {n}", range.start())
                } else {
                    format!(
                        "must be between {} and {}, found {n}",
                        range.start(),
                        range.end()
                    )
                });
            }
            T::try_from(*n).map_err(|_| format!("{n} is too large for this machine"))
        })
    }

    /// A number within `range`; an integer such as `1` counts, since TOML tells `1` from `1.0`.
    pub fn float(&mut self, key: &'static Key, range: RangeInclusive<f64>) -> f64 {
        self.value(key, Or::Declared, |value| {
            let n = match value {
                Value::Float(f) => *f,
                // Integers this size convert exactly; larger ones fail the range check anyway.
                Value::Integer(i) => *i as f64,
                other => return Err(mismatch("a number", other)),
            };
            if range.contains(&n) {
                Ok(n)
            } else {
                Err(format!(
                    "must be between {} and {}, found {n}",
                    range.start(),
                    range.end()
                ))
            }
        })
    }

    pub fn boolean(&mut self, key: &'static Key, or: Or<bool>) -> bool {
        self.value(key, or, |value| {
            value
                .as_bool()
                .ok_or_else(|| mismatch("true or false", value))
        })
    }

    /// A list of strings, each through `parse`; every bad item is its own problem.
    pub fn list<T: Debug>(
        &mut self,
        key: &'static Key,
        or: Or<Vec<T>>,
        expected_item: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Vec<T> {
        // Items are checked one by one so that each bad item is its own problem; the list as a
        // whole goes through `value` with the first of them, and the rest are reported here.
        let mut more = Vec::new();
        let list = self.value(key, or, |value| {
            let Value::Array(items) = value else {
                return Err(mismatch(&format!("a list of {expected_item}"), value));
            };
            let mut values = Vec::with_capacity(items.len());
            let mut errors = Vec::new();
            for (i, item) in items.iter().enumerate() {
                let result = match item.as_str() {
                    Some(s) => parse(s).map_err(|e| format!("item {} ({s:?}): {e}", i + 1)),
                    None => Err(format!("item {}: {}", i + 1, mismatch(expected_item, item))),
                };
                match result {
                    Ok(value) => values.push(value),
                    Err(e) => errors.push(e),
                }
            }
            let mut errors = errors.into_iter();
            match errors.next() {
                None => Ok(values),
                Some(first) => {
                    more.extend(errors);
                    Err(first)
                }
            }
        });
        for error in more {
            self.report(key, error);
        }
        list
    }
}

/// The value that stands in for `key`: `or`'s, or the key's written default through the key's
/// own rule. A declared default that does not pass its own rule is a bug in the declarations
/// (`every_written_default_passes_its_rule` checks them all), so it panics.
fn fallback<T>(key: &Key, or: Or<T>, mut convert: impl FnMut(&Value) -> Result<T, String>) -> T {
    match or {
        Or::Given(value) => value,
        Or::Declared => {
            let literal = key
                .written_default()
                .unwrap_or_else(|| panic!("{} has no written default to stand in", key.name));
            convert(&literal)
                .unwrap_or_else(|e| panic!("the default of {} is invalid: {e}", key.name))
        }
    }
}
