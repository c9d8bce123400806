//! Access logs (`[access_log]`): a line per request and TCP connection on both agents, with
//! what the request was and what happened, in JSON or HAProxy's formats.

use std::path::Path;
use std::time::Duration;

use hostmesh_tests::{Agent, AgentOpts, Backend, Etcd, Net, RedisServer, Signal, wait_until};
use serde_json::Value;

use crate::proxy::redis_mesh;
use crate::resilience::{ORDERS, agent};

const REDIS: &str =
    "name = \"redis\"\nport = 6379\ntarget = \"127.0.0.1:16379\"\nprotocol = \"tcp\"\n";

pub(crate) fn logged(format: &str, path: &Path) -> AgentOpts {
    AgentOpts::new().extra_toml(&format!(
        "[access_log]\nenabled = true\nformat = \"{format}\"\npath = \"{}\"\n",
        path.display()
    ))
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The JSON lines of `path` so far, each parsed (a line that is not JSON fails the test).
pub(crate) fn json_lines(path: &Path) -> Vec<Value> {
    lines(path)
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn both_agents_log_each_request_and_connection_with_what_happened() {
    let net = Net::new();
    let etcd = Etcd::start(&net);
    let (a, b) = (net.host("a"), net.host("b"));
    let _app = Backend::http(&b, 18080, "b\n");
    let _redis = RedisServer::start(&b, 16379);
    let dir = tempfile_dir();
    let (log_a, log_b) = (dir.join("a.log"), dir.join("b.log"));
    let mut agent_a: Agent = agent(&a, &etcd, logged("json", &log_a));
    let _agent_b = agent(
        &b,
        &etcd,
        logged("haproxy", &log_b)
            .service("orders-1", ORDERS)
            .service("redis-1", REDIS),
    );
    wait_until(Duration::from_secs(10), "orders and redis answer", || {
        a.curl("http://orders.mesh:8080/")
            .is_ok_and(|(c, _)| c == 200)
            && redis_mesh(&a, &["PING"]).contains("PONG")
    });

    // The lean HTTP/1.1 path, with a trace and a body each way.
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let (code, _) = a
        .curl_args(&[
            "-H",
            &format!("traceparent: {traceparent}"),
            "--data-binary",
            "0123456789",
            "http://orders.mesh:8080/echo?x=1",
        ])
        .expect("POST");
    assert_eq!(code, 200);
    // hyper's path: HTTP/2 from the app.
    let (code, body) = a
        .curl_args(&[
            "--http2-prior-knowledge",
            "http://orders.mesh:8080/bytes?n=5000",
        ])
        .expect("h2 GET");
    assert_eq!((code, body.len()), (200, 5000));
    // A TCP connection.
    assert!(redis_mesh(&a, &["SET", "k", "v"]).contains("OK"));

    // Lines are written in batches, so wait for these three rather than for a count (the
    // readiness checks above have lines of their own, which may come late).
    let wanted = |e: &Value| {
        e["path"] == "/echo?x=1" || e["path"] == "/bytes?n=5000" || e["protocol"] == "tcp"
    };
    wait_until(Duration::from_secs(10), "the three lines on a", || {
        let entries = json_lines(&log_a);
        ["/echo?x=1", "/bytes?n=5000"]
            .iter()
            .all(|p| entries.iter().any(|e| e["path"] == *p))
            && entries.iter().any(|e| e["protocol"] == "tcp")
    });
    let new: Vec<Value> = json_lines(&log_a).into_iter().filter(wanted).collect();
    let post = new
        .iter()
        .find(|e| e["method"] == "POST")
        .unwrap_or_else(|| panic!("no POST in {new:?}"));
    assert_eq!(post["direction"], "outbound");
    assert_eq!(post["protocol"], "http");
    assert_eq!(post["caller"], "a");
    assert_eq!(post["service"], "orders");
    assert_eq!(post["instance"], "b/orders-1");
    assert_eq!(post["path"], "/echo?x=1");
    assert_eq!(post["status"], 200);
    assert_eq!(
        (post["bytes_in"].as_u64(), post["bytes_out"].as_u64()),
        (Some(10), Some(10))
    );
    assert_eq!(post["attempts"], 1);
    assert_eq!(post["error"], Value::Null);
    assert_eq!(post["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert!(post["duration_ms"].as_f64().is_some_and(|d| d > 0.0));
    assert!(
        post["client"]
            .as_str()
            .is_some_and(|c| c.starts_with("127.0.0.1:"))
    );
    let h2 = new
        .iter()
        .find(|e| e["path"] == "/bytes?n=5000")
        .unwrap_or_else(|| panic!("no h2 GET in {new:?}"));
    assert_eq!(
        (h2["status"].as_u64(), h2["bytes_out"].as_u64()),
        (Some(200), Some(5000))
    );
    let tcp = new
        .iter()
        .find(|e| e["protocol"] == "tcp")
        .unwrap_or_else(|| panic!("no TCP line in {new:?}"));
    assert_eq!(
        (tcp["service"].as_str(), tcp["instance"].as_str()),
        (Some("redis"), Some("b/redis-1"))
    );
    assert!(tcp["bytes_in"].as_u64() > Some(0) && tcp["bytes_out"].as_u64() > Some(0));
    assert!(tcp.get("status").is_none());

    // b's side, in HAProxy's format: the same requests as they came in from a.
    wait_until(Duration::from_secs(10), "b's lines", || {
        let l = lines(&log_b);
        l.iter().any(|l| l.contains("\"POST /echo?x=1 HTTP/1.1\""))
            && l.iter()
                .any(|l| l.contains("hostmesh-inbound redis/b:redis-1"))
    });
    let b_lines = lines(&log_b);
    let post_b = b_lines
        .iter()
        .find(|l| l.contains("\"POST /echo?x=1 HTTP/1.1\""))
        .expect("POST on b");
    let http = regex_like(post_b);
    assert_eq!(http.frontend, "hostmesh-inbound", "{post_b}");
    assert_eq!(http.backend_server, "orders/b:orders-1", "{post_b}");
    assert_eq!(
        (http.status, http.bytes, http.termination),
        ("200", "10", "----"),
        "{post_b}"
    );
    assert!(
        http.client.starts_with(&format!("{}:", a.addr())),
        "{post_b}"
    );

    // Nothing was dropped.
    assert_eq!(
        agent_a.sample("hostmesh_access_log_dropped_total"),
        0.0,
        "{}",
        agent_a.metrics()
    );
    assert!(
        agent_a
            .metrics()
            .contains("hostmesh_access_log_dropped_total 0")
    );

    // The request served just before the agent stops is in the log when it has stopped.
    let (code, _) = a.curl("http://orders.mesh:8080/last").expect("last GET");
    assert_eq!(code, 200);
    agent_a.signal(Signal::Term);
    assert!(
        agent_a.wait_exit(Duration::from_secs(15)).is_some(),
        "a did not stop"
    );
    assert!(
        json_lines(&log_a).iter().any(|e| e["path"] == "/last"),
        "the last request's line was lost at stop"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn the_agents_own_answers_are_logged_with_their_reason() {
    let net = Net::new();
    let etcd = Etcd::start(&net);
    let (a, b) = (net.host("a"), net.host("b"));
    // b registers orders but nothing listens at its target.
    let dir = tempfile_dir();
    let log_a = dir.join("a.log");
    let _agent_a = agent(&a, &etcd, logged("json", &log_a));
    let _agent_b = agent(&b, &etcd, AgentOpts::new().service("orders-1", ORDERS));
    wait_until(Duration::from_secs(10), "orders resolves", || {
        a.curl("http://orders.mesh:8080/")
            .is_ok_and(|(c, _)| c >= 500)
    });
    wait_until(Duration::from_secs(10), "a's line for the 502", || {
        json_lines(&log_a).iter().any(|e| e["status"] == 502)
    });
    let entries = json_lines(&log_a);
    let last = entries
        .iter()
        .find(|e| e["status"] == 502)
        .expect("a 502 line");
    assert_eq!(last["status"], 502, "{last}");
    assert_eq!(last["error"], "upstream-unreachable", "{last}");
    assert_eq!(last["instance"], "b/orders-1", "{last}");
    std::fs::remove_dir_all(&dir).ok();
}

/// A fresh directory for log files, readable by the agents (which run as root here).
pub(crate) fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "hostmesh-e2e-access-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::create_dir_all(&dir).expect("log dir");
    dir
}

/// The fields of an HAProxy HTTP log line that the tests read.
struct HaproxyHttp<'a> {
    client: &'a str,
    frontend: &'a str,
    backend_server: &'a str,
    status: &'a str,
    bytes: &'a str,
    termination: &'a str,
}

/// Splits a line as grok's `HAPROXYHTTPBASE` does: `client [date] frontend backend/server
/// timers status bytes - - term conns queues "request"`.
fn regex_like(line: &str) -> HaproxyHttp<'_> {
    let f: Vec<&str> = line.split(' ').collect();
    assert!(f.len() >= 14, "too few fields: {line}");
    assert!(f[1].starts_with('[') && f[1].ends_with(']'), "date: {line}");
    let timers: Vec<&str> = f[4].split('/').collect();
    assert_eq!(timers.len(), 5, "timers: {line}");
    assert_eq!((f[7], f[8]), ("-", "-"), "cookies: {line}");
    assert_eq!(f[10].split('/').count(), 5, "connection counts: {line}");
    assert_eq!(f[11].split('/').count(), 2, "queues: {line}");
    HaproxyHttp {
        client: f[0],
        frontend: f[2],
        backend_server: f[3],
        status: f[5],
        bytes: f[6],
        termination: f[9],
    }
}
