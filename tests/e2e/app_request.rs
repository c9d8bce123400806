//! What an app receives is the same whichever path wrote it (docs/reference/http.md, "What the
//! app receives"). Three paths write a request to an app: the lean HTTP/1 path (an HTTP/1.1
//! client, a same-host instance), hyper's path (an h2c client, a same-host instance) and the
//! inbound side of a peer (an HTTP/1.1 client, an instance on another host). One table of header
//! cases goes through all of them and the apps must see the same fields.

use std::collections::BTreeMap;
use std::time::Duration;

use hostmesh_tests::{AgentOpts, Backend, Etcd, Host, Net, wait_until};

use crate::proxy::agent;

/// The header cases: what the client sends, and whether an HTTP/2 client can send it at all
/// (connection-specific fields are HTTP/1 only, RFC 9113 §8.2.2).
const CASES: &[(&str, &[&str], bool)] = &[
    ("plain", &[], true),
    (
        "internal-headers-from-the-client",
        &[
            "x-hostmesh-dst: evil/1",
            "x-hostmesh-src: evil",
            "x-hostmesh-caller: evil",
            "x-hostmesh-v: 9",
            "x-hostmesh-error: fake",
        ],
        true,
    ),
    (
        "client-deadline",
        &["x-hostmesh-timeout: 5s", "x-hostmesh-retryable: true"],
        true,
    ),
    (
        "forwarding-from-the-client",
        &["forwarded: for=192.0.2.1", "x-forwarded-for: 192.0.2.1"],
        true,
    ),
    (
        "trace-context",
        &["traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"],
        true,
    ),
    ("te-trailers", &["te: trailers"], true),
    (
        "hop-by-hop",
        &[
            "connection: x-drop, keep-alive",
            "x-drop: 1",
            "keep-alive: timeout=5",
            "proxy-authorization: Basic eDp5",
            "x-keep: 1",
        ],
        false,
    ),
    (
        "repeated-and-odd-fields",
        &["x-many: 1", "x-many: 2", "x-empty;", "x-case: MiXeD"],
        true,
    ),
];

fn service(name: &str, port: u16, target: u16) -> String {
    format!("name = \"{name}\"\nport = {port}\ntarget = \"127.0.0.1:{target}\"\n")
}

/// The fields the app saw for the request to `path`, in order, names lowercased; the deadline's
/// remaining milliseconds (which differ by path and by moment) as `<ms>`, and the service's own
/// `host` (each path has its own service) as `<service>`.
fn seen(app: &Backend, path: &str) -> Vec<(String, String)> {
    let request = app
        .requests()
        .into_iter()
        .find(|r| r["path"] == path)
        .unwrap_or_else(|| panic!("{path} reached no app"));
    let raw = request["raw"].as_array().expect("raw fields");
    raw.iter()
        .map(|f| {
            let name = f[0].as_str().unwrap_or("").to_ascii_lowercase();
            let value = f[1].as_str().unwrap_or("").to_owned();
            let value = match (name.as_str(), value.as_str()) {
                ("x-hostmesh-timeout", v) if v.ends_with("ms") => "<ms>".to_owned(),
                ("host", "orders.mesh:8080" | "billing.mesh:8081") => "<service>".to_owned(),
                _ => value,
            };
            (name, value)
        })
        .collect()
}

fn curl(host: &Host, h2: bool, headers: &[&str], url: &str) -> String {
    let mut args = vec!["-sS", "-o", "/dev/null", "-w", "%{http_code}"];
    if h2 {
        args.push("--http2-prior-knowledge");
    }
    for h in headers {
        args.extend(["-H", h]);
    }
    args.push(url);
    let out = host.run("curl", &args);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn every_path_writes_the_same_request_to_the_app() {
    let net = Net::new();
    let etcd = Etcd::start(&net);
    let a = net.host("a");
    let b = net.host("b");
    let local = Backend::http(&a, 18080, "ok\n");
    let remote = Backend::http(&b, 18081, "ok\n");
    let _agent_a = agent(
        &a,
        &etcd,
        AgentOpts::new().service("orders-1", &service("orders", 8080, 18080)),
    );
    let _agent_b = agent(
        &b,
        &etcd,
        AgentOpts::new().service("billing-1", &service("billing", 8081, 18081)),
    );
    for url in ["http://orders.mesh:8080/", "http://billing.mesh:8081/"] {
        wait_until(Duration::from_secs(10), &format!("{url} answers"), || {
            curl(&a, false, &[], url) == "200"
        });
    }

    let mut differences = Vec::new();
    for (case, headers, h2_can_send) in CASES {
        // The path names the case and the path, so each request is found in its app's log.
        let mut paths: Vec<(&str, Vec<(String, String)>)> = Vec::new();
        let lean = format!("/{case}/lean");
        assert_eq!(
            curl(
                &a,
                false,
                headers,
                &format!("http://orders.mesh:8080{lean}")
            ),
            "200",
            "{case} on the lean path"
        );
        paths.push(("lean HTTP/1 (same host)", seen(&local, &lean)));
        let inbound = format!("/{case}/inbound");
        assert_eq!(
            curl(
                &a,
                false,
                headers,
                &format!("http://billing.mesh:8081{inbound}")
            ),
            "200",
            "{case} through a peer"
        );
        paths.push(("inbound (other host)", seen(&remote, &inbound)));
        if *h2_can_send {
            let hyper = format!("/{case}/hyper");
            assert_eq!(
                curl(
                    &a,
                    true,
                    headers,
                    &format!("http://orders.mesh:8080{hyper}")
                ),
                "200",
                "{case} on hyper's path"
            );
            paths.push(("hyper (h2c client, same host)", seen(&local, &hyper)));
        }
        // HTTP/2 has no user-agent order or host line of its own to compare: the fields are
        // compared as a multiset per name, in the order each name's values came.
        let by_name = |fields: &[(String, String)]| {
            let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for (n, v) in fields {
                m.entry(n.clone()).or_default().push(v.clone());
            }
            m
        };
        let (first_path, first) = &paths[0];
        for (path, fields) in &paths[1..] {
            if by_name(first) != by_name(fields) {
                differences.push(format!(
                    "{case}: {first_path} wrote {:?}\n    but {path} wrote {:?}",
                    by_name(first),
                    by_name(fields)
                ));
            }
        }
    }
    assert!(
        differences.is_empty(),
        "the paths disagree on what the app receives:\n{}",
        differences.join("\n")
    );
}
