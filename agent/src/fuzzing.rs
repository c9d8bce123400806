//! Entry points for the fuzz targets in `fuzz/` and for the corpus replay test
//! (`agent/tests/fuzz_corpus.rs`): one function per target, each feeding arbitrary bytes to the
//! parser the agent really runs and asserting what can be checked without a network.
//!
//! They live in the libraries rather than in the fuzz crate so that they reach `pub(crate)`
//! parsers without widening them (those of the DNS shim and the data path in their own crates'
//! hidden `fuzzing` modules, re-exported here), and so that `cargo test` on stable replays every corpus file
//! and every fixed crash input through exactly the code the fuzzer ran.
//!
//! Each function panics when an assertion fails; on well-formed and malformed input alike it must
//! otherwise return quietly.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use hostmesh_registrar::catalog::{Persisted, State};
use hostmesh_registrar::keys::Layout;
use http::HeaderMap;
use ipnet::Ipv4Net;
use rustls::pki_types::CertificateDer;
use tokio::time::Instant;

use hostmesh_config::{self as config, AgentConfig};
use hostmesh_policy::access::AccessPolicy;
use hostmesh_policy::route::RoutePolicy;
use hostmesh_proxy::outbound::decision::{self, DeadlineSource};
use hostmesh_tls::HostIdentity;

// Targets whose parsers are private to their crates live there; this is the one door.
pub use hostmesh_dns::fuzzing::dns;
pub use hostmesh_proxy::fuzzing::{
    http1_guard, http1_request_head, http1_response_head, peer_headers, tcp_preface,
};

/// Agent config and service-file TOML, as `hostmesh check-config` and the agent's start read
/// them (the same text tried as both).
///
/// Asserts: a config that passes can be run: its durations can be added to the clock, its
/// connection limit fits a semaphore; a service file that passes names a non-zero port and a
/// health check whose durations can be added to the clock.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let env = [("HOSTMESH_FUZZ".to_owned(), "1".to_owned())];
    if let Ok(cfg) = AgentConfig::parse(text, Path::new("/etc/hostmesh/agent.toml"), env) {
        let p = &cfg.proxy;
        for d in [
            p.connect_timeout,
            p.request_timeout,
            p.idle_timeout,
            p.header_read_timeout,
        ] {
            assert!(Instant::now().checked_add(d).is_some(), "{d:?}");
        }
        assert!(p.max_connections <= tokio::sync::Semaphore::MAX_PERMITS);
        assert!(p.max_headers >= 1 && p.max_header_bytes >= 1);
    }
    if let Ok(spec) = config::parse_service(text, Path::new("/etc/hostmesh/services.d/web-1.toml"))
    {
        assert_ne!(spec.port, 0);
        assert_eq!(spec.id, "web-1");
        if let Some(check) = &spec.check {
            assert!(Instant::now().checked_add(check.interval).is_some());
            assert!(Instant::now().checked_add(check.timeout).is_some());
        }
    }
}

/// A route or access policy, as TOML (`route set`, `policy set`) and as the JSON stored in etcd.
///
/// Asserts: what passes writes out, as TOML and as JSON, to text that reads back as the same
/// policy; a route's timeouts can serve as a request's deadline on the clock.
pub fn route_policy(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let file = Path::new("orders.toml");
    let json = serde_json::from_str::<serde_json::Value>(text).ok();
    let routes = [
        RoutePolicy::parse_toml(text, file).ok(),
        json.as_ref().and_then(|j| RoutePolicy::from_json(j).ok()),
    ];
    for route in routes.into_iter().flatten() {
        assert_eq!(
            RoutePolicy::parse_toml(&route.to_toml(), file).as_ref(),
            Ok(&route),
            "{}",
            route.to_toml()
        );
        assert_eq!(
            RoutePolicy::from_json(&route.to_json()).as_ref(),
            Ok(&route)
        );
        let timeouts = route.rules.iter().map(|r| r.timeout).chain([route.timeout]);
        for timeout in timeouts.flatten() {
            let deadline = decision::deadline_for(
                &HeaderMap::new(),
                Some((timeout, DeadlineSource::RouteTimeout)),
                Duration::from_secs(10),
                false,
            );
            let _ = Instant::now() + deadline.after;
        }
    }
    let policies = [
        AccessPolicy::parse_toml(text, file).ok(),
        json.as_ref().and_then(|j| AccessPolicy::from_json(j).ok()),
    ];
    for policy in policies.into_iter().flatten() {
        assert_eq!(
            AccessPolicy::parse_toml(&policy.to_toml(), file).as_ref(),
            Ok(&policy)
        );
        assert_eq!(
            AccessPolicy::from_json(&policy.to_json()).as_ref(),
            Ok(&policy)
        );
    }
}

/// Catalog records as etcd delivers them into the registrar's catalog state, and `catalog.json`
/// as the agent reads it at start. The first byte chooses: even, the rest is a `catalog.json`;
/// odd, the rest is records separated by NUL, each a byte choosing the key (kind and name) and
/// then the value; kind 7 takes the key from the record, up to its first `=`.
///
/// Asserts: every VIP served lies in `vip_range` and belongs to one name, and a service's VIP is
/// its name's; the snapshot saved as `catalog.json` comes back as it was.
pub fn catalog(data: &[u8]) {
    let range: Ipv4Net = "127.77.0.0/16".parse().unwrap();
    let layout = Layout::new("/hm");
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let snapshot = if mode & 1 == 0 {
        let Ok(saved) = serde_json::from_slice::<Persisted>(rest) else {
            return;
        };
        let _ = saved.age();
        State::from_snapshot(layout.clone(), range, &saved.snapshot).1
    } else {
        const NAMES: [&str; 6] = [
            "orders",
            "v2.orders",
            "payments",
            "web-01",
            "Evil Name!",
            "",
        ];
        let mut state = State::new(layout.clone(), range);
        for (rev, record) in (1..).zip(rest.split(|b| *b == 0)) {
            let Some((&kind, value)) = record.split_first() else {
                continue;
            };
            let name = NAMES[usize::from(kind >> 3) % NAMES.len()];
            let (key, value) = match kind & 7 {
                0 => (layout.host_info(name), value),
                1 => (layout.instance("web-01", name, "i1"), value),
                2 => (layout.instance(name, "orders", "i2"), value),
                3 => (layout.vip(name), value),
                4 => (layout.route(name), value),
                5 => (layout.policy(name), value),
                6 => {
                    state.delete(&layout.vip(name), rev);
                    continue;
                }
                _ => {
                    let eq = value.iter().position(|b| *b == b'=').unwrap_or(value.len());
                    let key = format!("{}{}", layout.root(), String::from_utf8_lossy(&value[..eq]));
                    (key, value.get(eq + 1..).unwrap_or_default())
                }
            };
            state.put(&key, value, rev);
        }
        state.snapshot()
    };

    let mut holders: HashMap<Ipv4Addr, &str> = HashMap::new();
    for (name, vip) in &snapshot.vips {
        assert!(
            range.contains(vip),
            "{name} is served {vip}, outside {range}"
        );
        if let Some(other) = holders.insert(*vip, name) {
            panic!("{vip} is served for both {other} and {name}");
        }
    }
    for (name, service) in &snapshot.services {
        assert_eq!(&service.name, name);
        if let Some(vip) = service.vip {
            assert_eq!(snapshot.vips.get(name), Some(&vip), "{name}'s VIP");
        }
    }
    let (_, restored) = State::from_snapshot(layout, range, &snapshot);
    assert!(
        nearly_same(
            &serde_json::to_value(&restored).unwrap(),
            &serde_json::to_value(&snapshot).unwrap()
        ),
        "catalog.json does not restore what was saved:\n{restored:?}\n{snapshot:?}"
    );
}

/// Equal, but for floats within a rounding error: serde_json (without its `float_roundtrip`
/// feature) may read a float back one ULP off what it wrote, as the catalog target found with
/// numbers in stored policies. Recorded in fuzz/README.md; not the catalog's doing.
fn nearly_same(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() && y.is_f64() => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            x == y || ((x - y) / x).abs() < 1e-14
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| nearly_same(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| nearly_same(v, w)))
        }
        _ => a == b,
    }
}

/// A peer's leaf certificate (DER) through the identity check both TLS verifiers make, and the
/// same bytes as a URI SAN.
///
/// Asserts: an identity taken from a certificate is in our trust domain, prints as a URI that
/// parses back to it, and its host is a valid TLS server name; a URI that parses prints back as
/// it was written.
pub fn cert_identity(data: &[u8]) {
    const TRUST_DOMAIN: &str = "example.org";
    if let Ok(identity) =
        hostmesh_tls::verify::leaf_identity(&CertificateDer::from(data), TRUST_DOMAIN)
    {
        assert_eq!(identity.trust_domain(), TRUST_DOMAIN);
        assert_eq!(
            HostIdentity::parse(&identity.to_string()),
            Ok(identity.clone())
        );
        assert!(hostmesh_tls::identity::server_name(identity.host()).is_ok());
    }
    if let Ok(uri) = std::str::from_utf8(data)
        && let Ok(identity) = HostIdentity::parse(uri)
    {
        assert_eq!(identity.to_string(), uri);
    }
}

/// `hostmesh import consul`'s reading of a Consul file (JSON or HCL) and its mapping: see
/// [`crate::cli::import_consul::fuzz`].
pub fn consul_import(data: &[u8]) {
    crate::cli::import_consul::fuzz(data);
}
