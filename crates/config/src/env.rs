//! The `HOSTMESH_<SECTION>__<KEY>` overlay: environment variables replace file values before
//! validation, so a bad value from either place gets the same checks.

use toml::Value;

use super::key::{Key, Kind};
use super::problem::{ENVIRONMENT, Origin, Problem};
use super::raw::{Fields, Leaf, is_section, known_here};

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
    schema: &[&Key],
    env: impl IntoIterator<Item = (String, String)>,
) -> Vec<Problem> {
    let mut vars: Vec<(String, String)> = env
        .into_iter()
        .filter(|(name, _)| {
            name.strip_prefix(PREFIX)
                .is_some_and(|rest| rest.contains("__"))
        })
        .collect();
    // The process environment has no order; sort so problems come out the same every run.
    vars.sort();
    let mut problems = Vec::new();
    for (var, raw) in vars {
        let Some(key) = schema.iter().find(|key| var_name(key.name) == var) else {
            problems.push(Problem::new(
                ENVIRONMENT,
                var.as_str(),
                unknown(&var, schema),
            ));
            continue;
        };
        match to_value(key.kind, &raw) {
            Ok(value) => {
                let origin = Origin::Env { var };
                fields.insert(key.name.to_owned(), Leaf { value, origin });
            }
            Err(message) => problems.push(Problem::new(ENVIRONMENT, var, message)),
        }
    }
    problems
}

/// Why a variable names no key, with the keys its section does have.
fn unknown(var: &str, schema: &[&Key]) -> String {
    let upper = var.to_ascii_uppercase();
    if upper != var && schema.iter().any(|key| var_name(key.name) == upper) {
        return format!("the variable must be uppercase: {upper}");
    }
    let rest = var.strip_prefix(PREFIX).unwrap_or(var);
    let (section, key) = rest.split_once("__").unwrap_or((rest, ""));
    let (section, key) = (section.to_ascii_lowercase(), key.to_ascii_lowercase());
    if is_section(schema, &section) {
        format!(
            "no config key {section}.{key}; {}",
            known_here(schema, &section)
        )
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::net::SocketAddr;
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    use super::super::agent::{SCHEMA, parse_inner};
    use super::super::*;
    use super::var_name;

    /// The file every override is applied on: it sets the keys that must come in pairs, so that
    /// overriding one of a pair is a plain override.
    const BASE: &str = r#"
[etcd]
cert_file = "/base/cert.pem"
key_file = "/base/key.pem"
username = "base"
password_file = "/base/password"
"#;

    fn parse(vars: &[(&str, &str)]) -> Result<AgentConfig, Problems> {
        let mut env: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        // Every case but the tls.mode one turns mTLS off, so that the tls.mode case differs.
        if !vars.iter().any(|(k, _)| *k == "HOSTMESH_TLS__MODE") {
            env.push(("HOSTMESH_TLS__MODE".into(), "disabled".into()));
        }
        let hostname = || Ok("web-01".to_owned());
        parse_inner(BASE, Path::new("/etc/hostmesh/agent.toml"), env, &hostname).into_result()
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    type Check = fn(&AgentConfig) -> bool;

    #[test]
    fn every_key_can_be_overridden() {
        #[rustfmt::skip]
        let cases: &[(&str, &str, Check)] = &[
            ("HOSTMESH_AGENT__HOST", "db-02", |c| c.agent.host == "db-02"),
            ("HOSTMESH_AGENT__ADVERTISE_ADDRESS", "10.0.0.9", |c| c.agent.advertise_address == Some("10.0.0.9".parse().unwrap())),
            ("HOSTMESH_AGENT__ZONE", "eu-2b", |c| c.agent.zone.as_deref() == Some("eu-2b")),
            ("HOSTMESH_AGENT__SERVICES_DIR", "/srv/services", |c| c.agent.services_dir == Path::new("/srv/services")),
            ("HOSTMESH_AGENT__DATA_DIR", "/srv/data", |c| c.agent.data_dir == Path::new("/srv/data")),
            ("HOSTMESH_AGENT__DRAIN", "9s", |c| c.agent.drain == Duration::from_secs(9)),
            ("HOSTMESH_ETCD__ENDPOINTS", "http://a:2379, https://b:2379", |c| c.etcd.endpoints == ["http://a:2379", "https://b:2379"]),
            ("HOSTMESH_ETCD__PREFIX", "/other", |c| c.etcd.prefix == "/other"),
            ("HOSTMESH_ETCD__LEASE_TTL", "5s", |c| c.etcd.lease_ttl == Duration::from_secs(5)),
            ("HOSTMESH_ETCD__CA_FILE", "/env/ca.pem", |c| c.etcd.ca_file == Some(PathBuf::from("/env/ca.pem"))),
            ("HOSTMESH_ETCD__CERT_FILE", "/env/cert.pem", |c| c.etcd.cert_file == Some(PathBuf::from("/env/cert.pem"))),
            ("HOSTMESH_ETCD__KEY_FILE", "/env/key.pem", |c| c.etcd.key_file == Some(PathBuf::from("/env/key.pem"))),
            ("HOSTMESH_ETCD__USERNAME", "agent", |c| c.etcd.username.as_deref() == Some("agent")),
            ("HOSTMESH_ETCD__PASSWORD_FILE", "/env/pw", |c| c.etcd.password_file == Some(PathBuf::from("/env/pw"))),
            ("HOSTMESH_DNS__LISTEN", "127.0.0.1:5353", |c| c.dns.listen == addr("127.0.0.1:5353")),
            ("HOSTMESH_DNS__DOMAIN", "mesh.example", |c| c.dns.domain == "mesh.example"),
            ("HOSTMESH_DNS__VIP_RANGE", "127.88.0.0/24", |c| c.dns.vip_range == "127.88.0.0/24".parse().unwrap()),
            ("HOSTMESH_DNS__TTL", "30s", |c| c.dns.ttl == Duration::from_secs(30)),
            ("HOSTMESH_DNS__CONSUL", "true", |c| c.dns.consul),
            ("HOSTMESH_DNS__UPSTREAM", "system, 1.1.1.1", |c| c.dns.upstream == [Upstream::System, Upstream::Addr(addr("1.1.1.1:53"))]),
            ("HOSTMESH_PROXY__CAPTURE", "listen", |c| c.proxy.capture == Capture::Listen),
            ("HOSTMESH_PROXY__OUTBOUND_LISTEN", "127.0.0.1:5140", |c| c.proxy.outbound_listen == addr("127.0.0.1:5140")),
            ("HOSTMESH_PROXY__INBOUND_LISTEN", "0.0.0.0:5143", |c| c.proxy.inbound_listen == addr("0.0.0.0:5143")),
            ("HOSTMESH_PROXY__CONNECT_TIMEOUT", "250ms", |c| c.proxy.connect_timeout == Duration::from_millis(250)),
            ("HOSTMESH_PROXY__REQUEST_TIMEOUT", "20s", |c| c.proxy.request_timeout == Duration::from_secs(20)),
            ("HOSTMESH_PROXY__IDLE_TIMEOUT", "90s", |c| c.proxy.idle_timeout == Duration::from_secs(90)),
            ("HOSTMESH_PROXY__HEADER_READ_TIMEOUT", "2s", |c| c.proxy.header_read_timeout == Duration::from_secs(2)),
            ("HOSTMESH_PROXY__MAX_CONNECTIONS", "5", |c| c.proxy.max_connections == 5),
            ("HOSTMESH_PROXY__MAX_HEADERS", " 50 ", |c| c.proxy.max_headers == 50),
            ("HOSTMESH_PROXY__MAX_HEADER_BYTES", "1024", |c| c.proxy.max_header_bytes == 1024),
            ("HOSTMESH_PROXY__WORKERS", "3", |c| c.proxy.workers == 3),
            ("HOSTMESH_PROXY__PIN_WORKERS", "true", |c| c.proxy.pin_workers),
            ("HOSTMESH_PROXY__LOCKDOWN", "true", |c| c.proxy.lockdown),
            ("HOSTMESH_TLS__MODE", "disabled", |c| c.tls.mode == TlsMode::Disabled),
            ("HOSTMESH_TLS__CA_FILE", "/env/tls/ca.pem", |c| c.tls.ca_file == Path::new("/env/tls/ca.pem")),
            ("HOSTMESH_TLS__CERT_FILE", "/env/tls/host.pem", |c| c.tls.cert_file == Path::new("/env/tls/host.pem")),
            ("HOSTMESH_TLS__KEY_FILE", "/env/tls/host.key", |c| c.tls.key_file == Path::new("/env/tls/host.key")),
            ("HOSTMESH_TLS__TRUST_DOMAIN", "example.org", |c| c.tls.trust_domain == "example.org"),
            ("HOSTMESH_POLICY__DEFAULT", "deny", |c| c.policy.default == PolicyDefault::Deny),
            ("HOSTMESH_ADMIN__LISTEN", "127.0.0.1:9999", |c| c.admin.listen == addr("127.0.0.1:9999")),
            ("HOSTMESH_LOG__FORMAT", "json", |c| c.log.format == LogFormat::Json),
            ("HOSTMESH_LOG__LEVEL", "info,hostmesh=debug", |c| c.log.level == "info,hostmesh=debug"),
            ("HOSTMESH_TRACING__OTLP_ENDPOINT", "http://127.0.0.1:4318", |c| c.tracing.otlp_endpoint.as_deref() == Some("http://127.0.0.1:4318")),
            ("HOSTMESH_TRACING__SAMPLE_RATIO", "0.5", |c| c.tracing.sample_ratio == 0.5),
            ("HOSTMESH_ACCESS_LOG__ENABLED", "true", |c| c.access_log.enabled),
            ("HOSTMESH_ACCESS_LOG__FORMAT", "haproxy", |c| c.access_log.format == AccessLogFormat::Haproxy),
            ("HOSTMESH_ACCESS_LOG__PATH", "/var/log/hostmesh/access.log", |c| c.access_log.path == Some(PathBuf::from("/var/log/hostmesh/access.log"))),
        ];

        // Every key of the schema has its case, so a new key cannot go untested.
        let mut covered: Vec<&str> = cases.iter().map(|(var, _, _)| *var).collect();
        let mut all: Vec<String> = SCHEMA.iter().map(|key| var_name(key.name)).collect();
        covered.sort_unstable();
        all.sort_unstable();
        assert_eq!(covered, all);

        let defaults = parse(&[]).unwrap();
        for (var, value, check) in cases {
            // `defaults` itself has tls.mode overridden (see `parse`).
            if *var != "HOSTMESH_TLS__MODE" {
                assert!(
                    !check(&defaults),
                    "{var}: the case must differ from the default"
                );
            }
            let config = parse(&[(var, value)]).unwrap_or_else(|p| panic!("{var}={value}: {p}"));
            assert!(
                check(&config),
                "{var}={value} did not take effect: {config:?}"
            );
        }
    }

    #[test]
    fn empty_values_unset_optional_keys_and_empty_lists() {
        let config = parse(&[
            ("HOSTMESH_DNS__UPSTREAM", ""),
            ("HOSTMESH_ETCD__CERT_FILE", ""),
            ("HOSTMESH_ETCD__KEY_FILE", ""),
            ("HOSTMESH_TRACING__OTLP_ENDPOINT", ""),
        ])
        .unwrap();
        assert!(config.dns.upstream.is_empty());
        assert_eq!((config.etcd.cert_file, config.etcd.key_file), (None, None));
        assert_eq!(config.tracing.otlp_endpoint, None);
        // An empty endpoint list is a problem, reported at the variable.
        let problems = parse(&[("HOSTMESH_ETCD__ENDPOINTS", "")]).unwrap_err();
        assert_eq!(problems.0[0].file, Path::new(ENVIRONMENT));
        assert_eq!(problems.0[0].key, "HOSTMESH_ETCD__ENDPOINTS");
    }

    #[test]
    fn variables_without_a_key_separator_are_left_alone() {
        assert!(
            parse(&[
                ("HOSTMESH_BIN", "/usr/bin/hostmesh"),
                ("PATH", "/bin"),
                ("OTHER__X", "1")
            ])
            .is_ok()
        );
    }

    #[test]
    fn bad_values_and_names_are_problems_at_the_variable() {
        let problems = parse(&[
            ("HOSTMESH_ETCD__LEASE_TTL", "1s"),
            ("HOSTMESH_PROXY__MAX_CONNECTIONS", "x"),
            ("HOSTMESH_TRACING__SAMPLE_RATIO", "half"),
            ("HOSTMESH_DNS__UPSTREAM", "system,,1.1.1.1"),
            ("HOSTMESH_ETCD__LEASETTL", "5s"),
        ])
        .unwrap_err();
        let keys: Vec<(&Path, &str)> = problems
            .0
            .iter()
            .map(|p| (p.file.as_path(), p.key.as_str()))
            .collect();
        let env = Path::new(ENVIRONMENT);
        assert_eq!(
            keys,
            [
                (env, "HOSTMESH_ETCD__LEASETTL"),
                (env, "HOSTMESH_PROXY__MAX_CONNECTIONS"),
                (env, "HOSTMESH_TRACING__SAMPLE_RATIO"),
                (env, "HOSTMESH_ETCD__LEASE_TTL"),
                (env, "HOSTMESH_DNS__UPSTREAM"),
            ],
            "{problems}"
        );
        assert!(problems.0[0].message.contains("lease_ttl"), "{problems}");
        let text = problems.to_string();
        assert!(
            text.starts_with("environment: HOSTMESH_ETCD__LEASETTL: no config key etcd.leasettl"),
            "{text}"
        );
    }
}
