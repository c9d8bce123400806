//! The lean HTTP/1 path (`crates/proxy/src/outbound/h1`): an app's HTTP/1.1 connection to an
//! `http` service, proxied without hyper's server. Mostly one host, one agent, the apps beside
//! it, and raw sockets where the bytes on the wire matter; `handover` also has instances on
//! another host.
//!
//! Where the app answers, the tests also check which path carried the answer ([`lean`]), so that
//! a change quietly sending these requests to hyper's path (or keeping on the lean path what it
//! should hand over) shows.

use std::net::SocketAddr;

use hostmesh_tests::{Agent, AgentOpts, Backend, Etcd, Host, Net, RawConn, RawResponse};

use crate::hardening::vip;
use crate::proxy::agent;
use crate::resilience::ORDERS;

mod bodies;
mod connection;
mod drain;
mod failures;
mod forms;
mod handover;
mod headers;
mod metrics;
mod reload;
mod trace;

/// Host `a`: the app `orders` (one instance, `127.0.0.1:18080`) and its agent, serving through
/// the VIP. Fields drop in order: app and agent, then etcd, then the network.
struct OneHost {
    a: Host,
    app: Backend,
    agent: Agent,
    vip: SocketAddr,
    _etcd: Etcd,
    _net: Net,
}

fn one_host(opts: AgentOpts) -> OneHost {
    let net = Net::new();
    let etcd = Etcd::start(&net);
    let a = net.host("a");
    let app = Backend::http(&a, 18080, "ok\n");
    let agent = agent(&a, &etcd, opts.service("orders-1", ORDERS));
    let vip = vip(&agent, "orders", 8080);
    OneHost {
        a,
        app,
        agent,
        vip,
        _etcd: etcd,
        _net: net,
    }
}

impl OneHost {
    /// Runs `f` with a fresh connection to the VIP, from inside the host.
    fn conn<T: Send>(&self, f: impl FnOnce(&mut RawConn) -> T + Send) -> T {
        self.a.in_ns(|| f(&mut RawConn::connect(self.vip)))
    }

    /// `METHOD path` of the requests the app recorded after the first `skip`.
    fn seen_since(&self, skip: usize) -> Vec<String> {
        self.app.requests()[skip..]
            .iter()
            .map(|r| {
                format!(
                    "{} {}",
                    r["method"].as_str().unwrap_or(""),
                    r["path"].as_str().unwrap_or("")
                )
            })
            .collect()
    }
}

/// Whether the lean path answered. It passes the app's header names on as the app wrote them
/// (the test backend writes `Server:`); hyper's path writes every name in lowercase.
fn lean(r: &RawResponse) -> bool {
    r.names().contains(&"Server")
}

#[track_caller]
fn assert_lean(r: &RawResponse, what: &str) {
    assert!(
        lean(r),
        "{what}: not answered by the lean path:\n{}",
        r.head
    );
}

/// The agent's own answer (docs/reference/http.md): `status`, `x-hostmesh-error: reason` and the body
/// naming it.
#[track_caller]
fn assert_agent_answer(r: &RawResponse, status: u16, reason: &str) {
    assert_eq!(r.status, status, "{}", r.head);
    assert_eq!(r.header("x-hostmesh-error"), Some(reason), "{}", r.head);
    assert_eq!(r.text().trim(), format!("hostmesh: {reason}"));
    assert_dated(r);
}

/// The response has one `Date` field (any case), an HTTP date (RFC 9110 §6.6.1).
#[track_caller]
fn assert_dated(r: &RawResponse) {
    let dates: Vec<&str> = (r.headers.iter())
        .filter(|(n, _)| n.eq_ignore_ascii_case("date"))
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(dates.len(), 1, "one date field: {}", r.head);
    assert!(
        httpdate::parse_http_date(dates[0]).is_ok(),
        "not an HTTP date: {}",
        r.head
    );
}

fn get(path: &str, extra: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: orders.mesh:8080\r\n{extra}\r\n").into_bytes()
}

fn head(path: &str) -> Vec<u8> {
    format!("HEAD {path} HTTP/1.1\r\nHost: orders.mesh:8080\r\n\r\n").into_bytes()
}

fn post(path: &str, body: &[u8], extra: &str) -> Vec<u8> {
    let mut out = format!(
        "POST {path} HTTP/1.1\r\nHost: orders.mesh:8080\r\nContent-Length: {}\r\n{extra}\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// `/chunked?n=N&size=S` exactly as the app writes it: chunks with extensions, a trailer.
fn chunked_wire(n: usize, size: usize) -> Vec<u8> {
    let data = Backend::bytes(n);
    let mut out = Vec::new();
    for (seq, piece) in data.chunks(size).enumerate() {
        out.extend_from_slice(format!("{:x};seq={seq}\r\n", piece.len()).as_bytes());
        out.extend_from_slice(piece);
        out.extend_from_slice(b"\r\n");
    }
    let chunks = data.chunks(size).count();
    out.extend_from_slice(format!("0\r\nx-done: {chunks}\r\n\r\n").as_bytes());
    out
}
