//! `Reader`: converts flattened leaf values into typed values one key at a time. A bad value
//! becomes a problem at its origin (file key or environment variable) and the default stands in,
//! so reading goes on and every problem is found in one pass.

use std::collections::BTreeSet;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Value;

use super::duration;
use super::problem::{Origin, Problem};
use super::raw::{Fields, mismatch};

pub(crate) const DURATION: &str = "a duration such as \"10s\" or \"250ms\"";

pub(crate) struct Reader {
    file: PathBuf,
    fields: Fields,
    /// Keys whose value was bad: cross-key checks skip them, since their stand-in default would
    /// only produce a second, misleading problem.
    failed: BTreeSet<String>,
    pub problems: Vec<Problem>,
}

impl Reader {
    pub fn new(file: &Path, fields: Fields, problems: Vec<Problem>) -> Self {
        Reader {
            file: file.to_owned(),
            fields,
            failed: BTreeSet::new(),
            problems,
        }
    }

    /// Whether the key was set (in the file or the environment).
    pub fn has(&self, key: &str) -> bool {
        self.fields.contains_key(key)
    }

    /// Whether no problem was reported for any of `keys`.
    pub fn ok(&self, keys: &[&str]) -> bool {
        keys.iter().all(|key| !self.failed.contains(*key))
    }

    /// Reports a problem with `key` where its value came from (the file key when it was not set).
    pub fn report(&mut self, key: &str, message: impl Into<String>) {
        let origin = match self.fields.get(key) {
            Some(leaf) => leaf.origin.clone(),
            None => Origin::File {
                file: self.file.clone(),
                key: key.to_owned(),
            },
        };
        self.problems.push(origin.problem(message));
        self.failed.insert(key.to_owned());
    }

    /// The value of `key` through `convert`, or `default` when unset or bad.
    pub fn value<T>(
        &mut self,
        key: &str,
        default: T,
        convert: impl FnOnce(&Value) -> Result<T, String>,
    ) -> T {
        let Some(leaf) = self.fields.get(key) else {
            return default;
        };
        match convert(&leaf.value) {
            Ok(value) => value,
            Err(message) => {
                self.report(key, message);
                default
            }
        }
    }

    /// A string value through `parse`; `expected` describes it for a wrong-typed value.
    pub fn string<T>(
        &mut self,
        key: &str,
        default: T,
        expected: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> T {
        self.value(key, default, |value| match value.as_str() {
            Some(s) => parse(s),
            None => Err(mismatch(expected, value)),
        })
    }

    /// An optional string value; unset or `""` is `None`, so an environment variable can unset
    /// what the file set.
    pub fn optional<T>(
        &mut self,
        key: &str,
        expected: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        self.string(key, None, expected, |s| {
            if s.is_empty() {
                Ok(None)
            } else {
                parse(s).map(Some)
            }
        })
    }

    /// An optional path; `""` is `None`.
    pub fn optional_path(&mut self, key: &str) -> Option<PathBuf> {
        self.optional(key, "a path", |s| Ok(PathBuf::from(s)))
    }

    /// A path that must not be empty.
    pub fn path(&mut self, key: &str, default: &str) -> PathBuf {
        self.string(key, PathBuf::from(default), "a path", |s| {
            if s.is_empty() {
                Err("must not be empty".to_owned())
            } else {
                Ok(PathBuf::from(s))
            }
        })
    }

    /// A duration string, greater than zero.
    pub fn duration(&mut self, key: &str, default: Duration) -> Duration {
        self.string(key, default, DURATION, duration::parse)
    }

    /// A duration string that may be zero.
    pub fn duration_or_zero(&mut self, key: &str, default: Duration) -> Duration {
        self.string(key, default, DURATION, duration::parse_allow_zero)
    }

    /// One of a few words, for enums.
    pub fn choice<T: Copy>(&mut self, key: &str, default: T, choices: &[(&str, T)]) -> T {
        let names: Vec<String> = choices
            .iter()
            .map(|(name, _)| format!("{name:?}"))
            .collect();
        let expected = format!("one of {}", names.join(", "));
        self.string(key, default, &expected, |s| {
            choices
                .iter()
                .find(|(name, _)| *name == s)
                .map(|(_, value)| *value)
                .ok_or_else(|| format!("expected {expected}, found {s:?}"))
        })
    }

    /// An integer within `range`.
    pub fn integer<T: TryFrom<i64>>(
        &mut self,
        key: &str,
        default: T,
        range: RangeInclusive<i64>,
    ) -> T {
        self.value(key, default, |value| {
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
    pub fn float(&mut self, key: &str, default: f64, range: RangeInclusive<f64>) -> f64 {
        self.value(key, default, |value| {
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

    pub fn boolean(&mut self, key: &str, default: bool) -> bool {
        self.value(key, default, |value| {
            value
                .as_bool()
                .ok_or_else(|| mismatch("true or false", value))
        })
    }

    /// A list of strings, each through `parse`; every bad item is its own problem.
    pub fn list<T>(
        &mut self,
        key: &str,
        default: Vec<T>,
        expected_item: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Vec<T> {
        let Some(leaf) = self.fields.get(key) else {
            return default;
        };
        let Value::Array(items) = &leaf.value else {
            let message = mismatch(&format!("a list of {expected_item}"), &leaf.value);
            self.report(key, message);
            return default;
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
        if errors.is_empty() {
            return values;
        }
        for error in errors {
            self.report(key, error);
        }
        default
    }
}
