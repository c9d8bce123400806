//! A Consul service definition as the import reads it: the fields it maps, typed, and the path of
//! every other field, for the mapping to name. Keys are read as Consul reads them (any case, with
//! or without underscores, [`super::object`]); a mapped field of the wrong type refuses the
//! definition.

use serde_json::Value;

use super::object::{Object, normalize};

/// A field the import maps has a value of the wrong type: the definition is not imported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: expected {expected}")]
pub struct ShapeError {
    pub field: String,
    pub expected: &'static str,
}

/// A field the import does not map: where it is as written (`Meta.version`,
/// `Checks[1].Header`) and which field it is, normalized and dotted (`meta`, `check.header`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Other {
    pub path: String,
    pub key: String,
}

/// One service definition (the object under `service`, or one of `services`).
#[derive(Debug, Default)]
pub struct Definition {
    pub name: Option<String>,
    pub id: Option<String>,
    pub address: Option<String>,
    pub port: Option<i64>,
    pub tags: Vec<String>,
    /// `Weights.Passing`.
    pub weight_passing: Option<i64>,
    /// `Meta.protocol`, where Consul setups often keep it.
    pub meta_protocol: Option<String>,
    /// `Connect.SidecarService.Proxy.Config.protocol`, the sidecar's protocol.
    pub connect_protocol: Option<String>,
    pub kind: Option<String>,
    /// `Check`, then `Checks`, in order.
    pub checks: Vec<Check>,
    pub other: Vec<Other>,
    /// The mapped fields as the file spells them, by normalized name: notes name them so.
    pub spelled: Spelled,
}

/// Mapped fields as a file spells them (`Weights.Passing`, `check.timeout`), by normalized path
/// (`weights.passing`, `timeout`).
#[derive(Debug, Default, Clone)]
pub struct Spelled(Vec<(String, String)>);

impl Spelled {
    /// Every key of `map`, under `at` (`Checks[1]`, or nothing at the top).
    fn of_object(map: &serde_json::Map<String, Value>, at: &str) -> Spelled {
        Spelled(
            map.keys()
                .map(|key| {
                    let path = if at.is_empty() {
                        key.clone()
                    } else {
                        format!("{at}.{key}")
                    };
                    (normalize(key), path)
                })
                .collect(),
        )
    }

    fn add(&mut self, name: impl Into<String>, path: impl Into<String>) {
        self.0.push((name.into(), path.into()));
    }

    /// `other`'s names under `prefix` (`weights.`).
    fn extend(&mut self, other: Spelled, prefix: &str) {
        self.0.extend(
            other
                .0
                .into_iter()
                .map(|(n, p)| (format!("{prefix}{n}"), p)),
        );
    }

    /// How the file spells `name`; `fallback` when it does not have it.
    pub fn of(&self, name: &str, fallback: &str) -> String {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map_or_else(|| fallback.to_owned(), |(_, path)| path.clone())
    }
}

/// One health check of a definition.
#[derive(Debug, Default)]
pub struct Check {
    /// Where it is: `Check` or `Checks[1]`.
    pub at: String,
    pub http: Option<String>,
    pub method: Option<String>,
    pub tcp: Option<String>,
    pub args: Option<Vec<String>>,
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub success_before_passing: Option<i64>,
    pub failures_before_critical: Option<i64>,
    pub other: Vec<Other>,
    pub spelled: Spelled,
}

impl Definition {
    /// Reads one definition object.
    pub fn read(value: &Value) -> Result<Definition, ShapeError> {
        let map = value.as_object().ok_or_else(|| ShapeError {
            field: "service".to_owned(),
            expected: "an object",
        })?;
        let mut o = Object::new(map);
        let mut d = Definition {
            spelled: Spelled::of_object(map, ""),
            name: o
                .take(&["name"])
                .map(|f| string(f.key, f.value))
                .transpose()?,
            id: non_empty(
                o.take(&["id"])
                    .map(|f| string(f.key, f.value))
                    .transpose()?,
            ),
            address: non_empty(
                o.take(&["address"])
                    .map(|f| string(f.key, f.value))
                    .transpose()?,
            ),
            port: o
                .take(&["port"])
                .map(|f| integer(f.key, f.value))
                .transpose()?,
            tags: o
                .take(&["tags"])
                .map(|f| strings(f.key, f.value))
                .transpose()?
                .unwrap_or_default(),
            kind: non_empty(
                o.take(&["kind"])
                    .map(|f| string(f.key, f.value))
                    .transpose()?,
            ),
            ..Definition::default()
        };
        if let Some(f) = o.take(&["weights"]) {
            let map = object(f.key, f.value)?;
            d.spelled.extend(Spelled::of_object(map, f.key), "weights.");
            let mut weights = Object::new(map);
            if let Some(p) = weights.take(&["passing"]) {
                d.weight_passing = Some(integer(&format!("{}.{}", f.key, p.key), p.value)?);
            }
            d.other.extend(others(f.key, "weights", weights));
        }
        if let Some(f) = o.take(&["meta"]) {
            for (key, value) in object(f.key, f.value)? {
                if key == "protocol" {
                    d.spelled.add("meta.protocol", format!("{}.{key}", f.key));
                    d.meta_protocol = Some(string(&format!("{}.{key}", f.key), value)?);
                } else {
                    d.other.push(Other {
                        path: format!("{}.{key}", f.key),
                        key: "meta".to_owned(),
                    });
                }
            }
        }
        if let Some(f) = o.take(&["connect"]) {
            let protocol = find(f.value, &["sidecarservice", "proxy", "config", "protocol"]);
            d.connect_protocol = protocol.and_then(Value::as_str).map(str::to_owned);
            d.other.push(Other {
                path: f.key.to_owned(),
                key: "connect".to_owned(),
            });
        }
        for names in [&["check"][..], &["checks"]] {
            if let Some(f) = o.take(names) {
                d.checks.extend(Check::read_all(f.key, f.value)?);
            }
        }
        d.other.extend(others("", "", o));
        Ok(d)
    }
}

impl Check {
    /// `Check = {…}`, `Checks = [{…}, …]`, or either written the other way (HCL blocks).
    fn read_all(key: &str, value: &Value) -> Result<Vec<Check>, ShapeError> {
        match value {
            Value::Array(items) => items
                .iter()
                .enumerate()
                .map(|(i, item)| Check::read(format!("{key}[{i}]"), item))
                .collect(),
            _ => Ok(vec![Check::read(key.to_owned(), value)?]),
        }
    }

    fn read(at: String, value: &Value) -> Result<Check, ShapeError> {
        let map = object(&at, value)?;
        let spelled = Spelled::of_object(map, &at);
        let mut o = Object::new(map);
        let path = |key: &str| format!("{at}.{key}");
        let mut s = |names: &[&str]| -> Result<Option<String>, ShapeError> {
            o.take(names)
                .map(|f| string(&path(f.key), f.value))
                .transpose()
        };
        let http = s(&["http"])?;
        let method = s(&["method"])?;
        let tcp = s(&["tcp"])?;
        let interval = s(&["interval"])?;
        let timeout = s(&["timeout"])?;
        let args = o
            .take(&["args"])
            .map(|f| strings(&path(f.key), f.value))
            .transpose()?;
        let mut n = |name: &str| -> Result<Option<i64>, ShapeError> {
            o.take(&[name])
                .map(|f| integer(&path(f.key), f.value))
                .transpose()
        };
        let success_before_passing = n("successbeforepassing")?;
        let failures_before_critical = n("failuresbeforecritical")?;
        let other = others(&at, "check", o);
        Ok(Check {
            at,
            http,
            method,
            tcp,
            args,
            interval,
            timeout,
            success_before_passing,
            failures_before_critical,
            other,
            spelled,
        })
    }
}

/// The fields nothing took: paths under `at` (none at the top) and keys under `group`.
fn others(at: &str, group: &str, o: Object) -> Vec<Other> {
    let join = |a: &str, b: &str| {
        if a.is_empty() {
            b.to_owned()
        } else {
            format!("{a}.{b}")
        }
    };
    o.rest()
        .into_iter()
        .map(|f| Other {
            path: join(at, f.key),
            key: join(group, &normalize(f.key)),
        })
        .collect()
}

/// The value at `path` (normalized keys) below `value`.
fn find<'a>(value: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(value, |v, name| {
        v.as_object()?
            .iter()
            .find(|(key, _)| normalize(key) == *name)
            .map(|(_, v)| v)
    })
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}

fn object<'a>(
    field: &str,
    value: &'a Value,
) -> Result<&'a serde_json::Map<String, Value>, ShapeError> {
    value.as_object().ok_or_else(|| ShapeError {
        field: field.to_owned(),
        expected: "an object",
    })
}

fn string(field: &str, value: &Value) -> Result<String, ShapeError> {
    value.as_str().map(str::to_owned).ok_or_else(|| ShapeError {
        field: field.to_owned(),
        expected: "a string",
    })
}

fn integer(field: &str, value: &Value) -> Result<i64, ShapeError> {
    value.as_i64().ok_or_else(|| ShapeError {
        field: field.to_owned(),
        expected: "an integer",
    })
}

fn strings(field: &str, value: &Value) -> Result<Vec<String>, ShapeError> {
    let wrong = || ShapeError {
        field: field.to_owned(),
        expected: "a list of strings",
    };
    value
        .as_array()
        .ok_or_else(wrong)?
        .iter()
        .map(|v| v.as_str().map(str::to_owned).ok_or_else(wrong))
        .collect()
}
