//! Service definitions (`services_dir/*.toml`, one instance per file): the check of each file key
//! by key, and the checks across the files of one directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::spec::{CheckKind, CheckSpec, InstanceSpec, Protocol};
use toml::Value;

use super::agent::read_file;
use super::duration::show;
use super::names;
use super::problem::{Problem, Problems};
use super::raw;
use super::read::{Or, Reader};

mod keys;

use keys::*;

pub(crate) use keys::SCHEMA;

/// `check.timeout` when unset, unless `check.interval` is shorter.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// Parses one service definition; `file` is used in problems and its stem is the instance id.
pub fn parse_service(text: &str, file: &Path) -> Result<InstanceSpec, Problems> {
    let mut problems = Vec::new();
    let id = match instance_id(file) {
        Ok(id) => id,
        Err(problem) => {
            problems.push(problem);
            String::new()
        }
    };
    let table = match raw::parse_toml(text, file) {
        Ok(table) => table,
        Err(problem) => {
            problems.push(problem);
            return Err(Problems(problems));
        }
    };
    let (fields, found) = raw::flatten(&table, file, SCHEMA);
    problems.extend(found);
    let mut r = Reader::new(file, fields, problems);

    if !r.has(NAME) {
        r.report(
            NAME,
            "is required: the name of the service this instance serves",
        );
    }
    let service = r.string_or(
        NAME,
        Or::Given(String::new()),
        "a string such as \"orders\"",
        |s| names::owned(s, names::service),
    );
    if !r.has(PORT) {
        r.report(PORT, "is required: the port clients use (orders.mesh:8080)");
    }
    let port: u16 = r.integer(PORT, Or::Given(0), 1..=65535);
    let target = r.string_or(
        TARGET,
        Or::Given(SocketAddr::from(([127, 0, 0, 1], port))),
        "an address IP:PORT such as \"127.0.0.1:18080\"",
        target,
    );
    let protocol = r.choice(
        PROTOCOL,
        &[
            ("http", Protocol::Http),
            ("grpc", Protocol::Grpc),
            ("tcp", Protocol::Tcp),
        ],
    );
    let tags = r.list(TAGS, Or::Declared, "a tag such as \"v2\"", |s| {
        names::owned(s, names::tag)
    });
    for (i, tag) in tags.iter().enumerate() {
        if tags[..i].contains(tag) {
            r.report(TAGS, format!("{tag:?} is listed twice"));
        }
    }
    let weight: u32 = {
        let w = crate::spec::WEIGHT;
        r.integer(
            WEIGHT,
            Or::Declared,
            i64::from(*w.start())..=i64::from(*w.end()),
        )
    };
    let allow_direct = r.list(
        ALLOW_DIRECT,
        Or::Declared,
        "a network such as \"10.20.0.0/16\"",
        super::net::cidr,
    );
    for (i, net) in allow_direct.iter().enumerate() {
        if allow_direct[..i].contains(net) {
            r.report(ALLOW_DIRECT, format!("{net} is listed twice"));
        }
    }
    // An empty `[check]` leaves no leaf behind, so look at the table itself.
    let check = match table.get("check") {
        Some(Value::Table(_)) => check(&mut r),
        _ => None,
    };

    if !r.problems.is_empty() {
        return Err(Problems(r.problems));
    }
    Ok(InstanceSpec {
        service,
        id,
        port,
        target,
        protocol,
        tags,
        weight,
        check,
        allow_direct,
        lockdown: false,
    })
}

/// Reads and parses one service definition (a read error is one problem with an empty key).
pub fn load_service(path: &Path) -> Result<InstanceSpec, Problems> {
    let text = read_file(path)?;
    parse_service(&text, path)
}

/// Every `*.toml` file in `dir` (hidden files and other extensions ignored), sorted by instance
/// id; every problem of every file at once, then the problems across files.
pub fn load_services(dir: &Path) -> Result<Vec<InstanceSpec>, Problems> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        Problem::whole_file(dir, format!("cannot read the services directory: {e}"))
    })?;
    let mut problems = Vec::new();
    let mut files = Vec::new();
    for entry in entries {
        match entry {
            Ok(entry) if is_definition(&entry.path()) => files.push(entry.path()),
            Ok(_) => {}
            Err(e) => problems.push(Problem::whole_file(
                dir,
                format!("cannot list the services directory: {e}"),
            )),
        }
    }
    files.sort_by(|a, b| a.file_stem().cmp(&b.file_stem()));
    let mut loaded: Vec<(PathBuf, InstanceSpec)> = Vec::new();
    for path in files {
        match load_service(&path) {
            Ok(spec) => loaded.push((path, spec)),
            Err(found) => problems.extend(found.0),
        }
    }
    problems.extend(across_files(&loaded));
    if !problems.is_empty() {
        return Err(Problems(problems));
    }
    Ok(loaded.into_iter().map(|(_, spec)| spec).collect())
}

/// A `.toml` file that is not hidden (editors and config managers leave `.name.toml.swp` and
/// `.tmp` files behind). Directories that match are kept, so reading them is a problem.
fn is_definition(path: &Path) -> bool {
    let hidden = path
        .file_name()
        .is_some_and(|name| name.as_encoded_bytes().starts_with(b"."));
    !hidden && path.extension().is_some_and(|ext| ext == "toml")
}

/// Instances of one service in two files must agree on the protocol: clients reach them all
/// through one VIP and port, so the proxy treats them as one thing.
fn across_files(loaded: &[(PathBuf, InstanceSpec)]) -> Vec<Problem> {
    let mut problems = Vec::new();
    for (i, (path, spec)) in loaded.iter().enumerate() {
        let conflict = loaded[..i]
            .iter()
            .find(|(_, other)| other.service == spec.service && other.protocol != spec.protocol);
        if let Some((other_path, other)) = conflict {
            problems.push(Problem::new(
                path,
                "protocol",
                format!(
                    "service {:?} is {} here but {} in {}; all instances of a service speak one protocol",
                    spec.service,
                    spec.protocol,
                    other.protocol,
                    other_path.display()
                ),
            ));
        }
    }
    problems
}

/// The instance id: the file name without `.toml`.
fn instance_id(file: &Path) -> Result<String, Problem> {
    let stem = file.file_stem().ok_or_else(|| {
        Problem::whole_file(file, "has no file name to take the instance id from")
    })?;
    let stem = stem
        .to_str()
        .ok_or_else(|| Problem::whole_file(file, "the file name (the instance id) is not UTF-8"))?;
    names::instance_id(stem).map_err(|e| {
        Problem::whole_file(
            file,
            format!("the file name gives the instance id {stem:?}, which {e}"),
        )
    })?;
    Ok(stem.to_owned())
}

fn target(s: &str) -> Result<SocketAddr, String> {
    let addr: SocketAddr = s
        .parse()
        .map_err(|_| format!("{s:?} is not an address IP:PORT such as \"127.0.0.1:18080\""))?;
    if addr.port() == 0 || addr.ip().is_unspecified() {
        return Err(format!("{s:?} is not an address to connect to"));
    }
    Ok(addr)
}

fn check(r: &mut Reader) -> Option<CheckSpec> {
    let mut kinds: Vec<(&str, CheckKind)> = Vec::new();
    if r.has(CHECK_HTTP) {
        let path = r.string_or(
            CHECK_HTTP,
            Or::Given(String::new()),
            "a path such as \"/healthz\"",
            http_path,
        );
        kinds.push(("http", CheckKind::Http { path }));
    }
    if r.has(CHECK_TCP) {
        let on = r.boolean(CHECK_TCP, Or::Given(true));
        if !on {
            r.report(
                CHECK_TCP,
                "tcp = false is no check; write tcp = true, or use http or exec",
            );
        }
        kinds.push(("tcp", CheckKind::Tcp));
    }
    if r.has(CHECK_EXEC) {
        let argv = r.list(CHECK_EXEC, Or::Given(Vec::new()), "a string", |s| {
            Ok(s.to_owned())
        });
        if r.ok(&[CHECK_EXEC]) {
            match argv.first() {
                None => r.report(
                    CHECK_EXEC,
                    "must name a program: exec = [\"/usr/bin/true\"]",
                ),
                Some(program) if program.is_empty() => {
                    r.report(CHECK_EXEC, "the program (item 1) must not be empty")
                }
                Some(_) => {}
            }
        }
        kinds.push(("exec", CheckKind::Exec { argv }));
    }
    if kinds.len() != 1 {
        let message = if kinds.is_empty() {
            "[check] needs one of http = \"/path\", tcp = true or exec = [\"/path/to/program\"]"
                .to_owned()
        } else {
            let names: Vec<&str> = kinds.iter().map(|(name, _)| *name).collect();
            format!(
                "[check] has {}; a check has exactly one of http, tcp and exec",
                names.join(" and ")
            )
        };
        r.report_at("check", message);
    }

    let interval = r.duration(CHECK_INTERVAL, Or::Declared);
    // The default timeout shrinks to a shorter interval, so `interval = "1s"` alone is valid.
    let timeout = r.duration(CHECK_TIMEOUT, Or::Given(DEFAULT_TIMEOUT.min(interval)));
    if timeout > interval && r.ok(&[CHECK_INTERVAL, CHECK_TIMEOUT]) {
        r.report(
            CHECK_TIMEOUT,
            format!(
                "{} is longer than check.interval {}; a check must end before the next one starts",
                show(timeout),
                show(interval)
            ),
        );
    }
    let unhealthy_after = r.integer(CHECK_UNHEALTHY_AFTER, Or::Declared, 1..=100);
    let healthy_after = r.integer(CHECK_HEALTHY_AFTER, Or::Declared, 1..=100);
    let kind = kinds.into_iter().next()?.1;
    Some(CheckSpec {
        kind,
        interval,
        timeout,
        unhealthy_after,
        healthy_after,
    })
}

fn http_path(s: &str) -> Result<String, String> {
    if !s.starts_with('/') {
        return Err(format!("{s:?} must start with '/'"));
    }
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "{s:?} must not contain spaces or control characters"
        ));
    }
    Ok(s.to_owned())
}
