//! A Consul health check as a hostmesh `[check]`: `HTTP` (a URL) becomes `http` (a path probed on
//! the target), `TCP` becomes `tcp = true`, `Args` becomes `exec`; `Interval`, `Timeout`,
//! `SuccessBeforePassing` and `FailuresBeforeCritical` come along. hostmesh runs one check per
//! instance: the first one that maps is kept and every other is named.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hostmesh_config::duration;

use super::model;
use super::note::Note;

/// `check.interval` when unset (docs/config.md).
const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);

/// A mapped check, ready to be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub kind: Kind,
    pub interval: Option<Duration>,
    pub timeout: Option<Duration>,
    pub healthy_after: Option<i64>,
    pub unhealthy_after: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Http(String),
    Tcp,
    Exec(Vec<String>),
}

impl Kind {
    pub fn name(&self) -> &'static str {
        match self {
            Kind::Http(_) => "http",
            Kind::Tcp => "tcp",
            Kind::Exec(_) => "exec",
        }
    }
}

/// The first check of `checks` that maps, with a note for each field and check left behind.
/// `target` is where hostmesh's http and tcp checks will probe.
pub fn map(checks: &[model::Check], target: SocketAddr, notes: &mut Vec<Note>) -> Option<Check> {
    let mut kept: Option<(Check, &str)> = None;
    for check in checks {
        notes.extend(check.other.iter().map(Note::unmapped));
        match (&kept, kind(check, target, notes)) {
            (None, Some(kind)) => kept = Some((timing(check, kind, notes), &check.at)),
            (Some((_, first)), Some(_)) => notes.push(Note::new(
                &check.at,
                format!("not mapped: hostmesh runs one check per instance; {first} is kept"),
            )),
            (_, None) => {}
        }
    }
    kept.map(|(check, _)| check)
}

/// What the check probes, or `None` (with a note saying why) when hostmesh cannot probe it so.
fn kind(check: &model::Check, target: SocketAddr, notes: &mut Vec<Note>) -> Option<Kind> {
    let at = |field: &str| {
        check.spelled.of(
            &field.to_ascii_lowercase(),
            &format!("{}.{field}", check.at),
        )
    };
    let mut kinds = Vec::new();
    if let Some(url) = &check.http {
        match http_path(url, target) {
            Ok(path) => kinds.push(Kind::Http(path)),
            Err(why) => notes.push(Note::new(&at("HTTP"), format!("not mapped: {why}"))),
        }
        if let Some(method) = &check.method
            && !method.eq_ignore_ascii_case("GET")
        {
            notes.push(Note::new(
                &at("Method"),
                format!("not mapped: hostmesh's http check always sends GET, not {method}"),
            ));
        }
    }
    if let Some(addr) = &check.tcp {
        match tcp(addr, target) {
            Ok(()) => kinds.push(Kind::Tcp),
            Err(why) => notes.push(Note::new(&at("TCP"), format!("not mapped: {why}"))),
        }
    }
    if let Some(args) = &check.args {
        if args.first().is_some_and(|program| !program.is_empty()) {
            kinds.push(Kind::Exec(args.clone()));
        } else {
            notes.push(Note::new(&at("Args"), "not mapped: names no program"));
        }
    }
    let mut kinds = kinds.into_iter();
    let kind = kinds.next();
    if let Some(extra) = kinds.next() {
        notes.push(Note::new(
            &check.at,
            format!(
                "also has a {} check; a hostmesh check has one kind, so only the first is kept",
                extra.name()
            ),
        ));
    }
    kind
}

/// Interval, timeout and the thresholds, each as hostmesh takes it.
fn timing(check: &model::Check, kind: Kind, notes: &mut Vec<Note>) -> Check {
    let at = |field: &str| {
        let name: String = field.to_ascii_lowercase();
        check.spelled.of(&name, &format!("{}.{field}", check.at))
    };
    let mut read = |field: &str, text: &Option<String>| {
        let text = text.as_deref()?;
        match go_duration(text) {
            Ok(d) => Some(d),
            Err(why) => {
                notes.push(Note::new(
                    &at(field),
                    format!("not mapped: {why}; hostmesh's default applies"),
                ));
                None
            }
        }
    };
    let interval = read("Interval", &check.interval);
    let mut timeout = read("Timeout", &check.timeout);
    let effective = interval.unwrap_or(DEFAULT_INTERVAL);
    if let Some(t) = timeout
        && t > effective
    {
        notes.push(Note::new(
            &at("Timeout"),
            format!(
                "{} is longer than the interval; written as {}: a hostmesh check ends before the \
                 next one starts",
                duration::show(t),
                duration::show(effective)
            ),
        ));
        timeout = Some(effective);
    }
    let mut threshold = |field: &str, n: Option<i64>| {
        let n = n?;
        // Consul's 0 (its default) means the first result counts, as 1 does in hostmesh.
        let kept = n.clamp(1, 100);
        if kept != n && n != 0 {
            notes.push(Note::new(
                &at(field),
                format!("{n} written as {kept}: hostmesh takes 1..=100"),
            ));
        }
        Some(kept)
    };
    Check {
        healthy_after: threshold("SuccessBeforePassing", check.success_before_passing),
        unhealthy_after: threshold("FailuresBeforeCritical", check.failures_before_critical),
        kind,
        interval,
        timeout,
    }
}

/// A Go duration (`"10s"`, `"1m30s"`, `"500ms"`, `"1.5h"`) as hostmesh takes durations: more
/// than zero, at most a day.
pub fn go_duration(text: &str) -> Result<Duration, String> {
    let d = hostmesh_wire::duration::parse(text)
        .map_err(|e| format!("{text:?} is not a duration ({e})"))?;
    if d.is_zero() || d > duration::MAX {
        return Err(format!(
            "{text:?} is outside what hostmesh takes (more than 0, at most {})",
            duration::show(duration::MAX)
        ));
    }
    Ok(d)
}

/// The path of an http check's URL, when the URL points at the target.
fn http_path(url: &str, target: SocketAddr) -> Result<String, String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("{url:?} is not a URL ({e})"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some(other) => {
            return Err(format!(
                "{url:?} is {other}; hostmesh's http check speaks plain HTTP"
            ));
        }
        None => return Err(format!("{url:?} is not an http:// URL")),
    }
    let host = uri.host().unwrap_or_default();
    points_at(url, host, uri.port_u16().unwrap_or(80), target)?;
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "the path of {url:?} has spaces or control characters"
        ));
    }
    Ok(if path.is_empty() { "/" } else { path }.to_owned())
}

/// A tcp check's `HOST:PORT`, when it points at the target.
fn tcp(addr: &str, target: SocketAddr) -> Result<(), String> {
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| format!("{addr:?} is not HOST:PORT"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("{addr:?} is not HOST:PORT"))?;
    points_at(addr, host, port, target)
}

/// hostmesh's http and tcp checks probe the target: a check elsewhere cannot be carried over.
fn points_at(what: &str, host: &str, port: u16, target: SocketAddr) -> Result<(), String> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let local = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip == target.ip() || ip.is_loopback() && target.ip().is_loopback());
    if !local || port != target.port() {
        return Err(format!(
            "{what:?} is not the service's own address; hostmesh probes the target {target}"
        ));
    }
    Ok(())
}
