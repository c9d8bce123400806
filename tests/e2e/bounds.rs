//! Every listener bounded (issue 14, finding 4): idle HTTP/2 app connections get a GOAWAY after
//! `idle_timeout`, DNS over TCP makes room at its cap by closing the connection idle longest,
//! admin connections are capped so they never take the data path's descriptors, and an agent
//! out of descriptors counts it, logs it sparingly and still answers `/ready`.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use hostmesh_tests::{Agent, AgentOpts, Backend, Etcd, Host, Net, wait_until};

const ORDERS: &str = "name = \"orders\"\nport = 8080\ntarget = \"127.0.0.1:18080\"\n";
/// The admin endpoint's connection cap (`admin::MAX_CONNECTIONS`).
const ADMIN_MAX: usize = 128;

/// Agent `a` running `orders` itself (its app on 127.0.0.1:18080), and the VIP:port to reach it.
struct Local {
    host: Host,
    agent: Agent,
    vip: SocketAddr,
    _app: Backend,
    _etcd: Etcd,
    _net: Net,
}

fn local(opts: AgentOpts) -> Local {
    let net = Net::new();
    let etcd = Etcd::start(&net);
    let host = net.host("a");
    let app = Backend::http(&host, 18080, "ok\n");
    let mut agent = Agent::start(&host, &etcd, opts.service("orders-1", ORDERS));
    agent.wait_ready(Duration::from_secs(15));
    wait_until(Duration::from_secs(10), "orders answers", || {
        orders_ok(&host)
    });
    let vip = SocketAddr::new(agent.service_vip("orders").expect("a VIP").into(), 8080);
    Local {
        host,
        agent,
        vip,
        _app: app,
        _etcd: etcd,
        _net: net,
    }
}

fn orders_ok(host: &Host) -> bool {
    host.curl("http://orders.mesh:8080/")
        .is_ok_and(|(code, _)| code == 200)
}

/// Opens `n` TCP connections to `addr` inside `host` (each written `hello`, then left alone).
pub(crate) fn hold(host: &Host, addr: SocketAddr, n: usize, hello: &[u8]) -> Vec<TcpStream> {
    host.in_ns(|| {
        (0..n)
            .map(|i| {
                let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
                    .unwrap_or_else(|e| panic!("connection {i} to {addr}: {e}"));
                if !hello.is_empty() {
                    s.write_all(hello).expect("write");
                }
                s
            })
            .collect()
    })
}

/// How many of `conns` the other side has not closed (reads: EOF or reset means closed).
fn still_open(conns: &mut [TcpStream]) -> usize {
    conns
        .iter_mut()
        .map(|s| {
            s.set_nonblocking(true).expect("nonblocking");
            let mut buf = [0u8; 4096];
            loop {
                match s.read(&mut buf) {
                    Ok(0) => return false,
                    Ok(_) => continue, // frames the agent sent (SETTINGS, GOAWAY): keep reading
                    Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
                    Err(_) => return false,
                }
            }
        })
        .filter(|open| *open)
        .count()
}

fn open_descriptors(agent: &Agent) -> usize {
    let pid = agent.pid().expect("the agent runs");
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("the agent's descriptors")
        .count()
}

/// Sets the running agent's `nofile` (soft and hard) to `n`.
fn limit_descriptors(agent: &Agent, n: usize) {
    let pid = agent.pid().expect("the agent runs").to_string();
    let out = std::process::Command::new("prlimit")
        .args(["--pid", &pid, &format!("--nofile={n}:{n}")])
        .output()
        .expect("prlimit (util-linux) runs");
    assert!(out.status.success(), "prlimit: {out:?}");
}

fn metric(agent: &Agent, line_start: &str) -> u64 {
    agent
        .metrics()
        .lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

#[test]
fn idle_http2_app_connections_get_a_goaway_after_idle_timeout() {
    let m = local(AgentOpts::new().set_str("proxy", "idle_timeout", "2s").set(
        "proxy",
        "max_connections",
        "50",
    ));
    // 60 clients that send the preface and SETTINGS and nothing more: more than the cap.
    let started = Instant::now();
    let mut idle = hold(&m.host, m.vip, 60, H2_PREFACE);
    wait_until(
        Duration::from_secs(15),
        "the agent closes every idle h2 connection",
        || still_open(&mut idle) == 0,
    );
    let took = started.elapsed();
    // 50 at once, then the 10 that waited for a slot: two idle timeouts and change.
    assert!(took >= Duration::from_secs(2), "closed after {took:?}");
    assert!(orders_ok(&m.host), "a new app connection is served");
}

#[test]
fn dns_over_tcp_makes_room_by_closing_the_idlest_connection() {
    let m = local(AgentOpts::new());
    let dns: SocketAddr = "127.0.0.1:53".parse().expect("addr");
    // More than the cap (256), all idle.
    let mut held = hold(&m.host, dns, 300, b"");
    let answer = m.host.dig(&["+tcp", "orders.mesh"]);
    assert_eq!(answer.status, "NOERROR", "{}", answer.raw);
    assert_eq!(answer.data("A"), [m.vip.ip().to_string()]);
    assert!(
        metric(
            &m.agent,
            "hostmesh_dns_tcp_connections_closed_total{reason=\"evicted\"}"
        ) >= 45,
        "{}",
        m.agent.metrics()
    );
    assert!(still_open(&mut held) <= 256);
}

#[test]
fn admin_connections_never_take_the_data_paths_descriptors() {
    let m = local(AgentOpts::new());
    // A small nofile: room for the admin cap and a little more, not for 1,000 connections.
    let limit = open_descriptors(&m.agent) + ADMIN_MAX + 64;
    limit_descriptors(&m.agent, limit);
    let admin: SocketAddr = m.agent.admin_addr().parse().expect("admin addr");
    let mut held = hold(&m.host, admin, 1000, b"GET /live HTTP/1.1\r\n");
    wait_until(
        Duration::from_secs(10),
        "the agent keeps at most its cap of admin connections",
        || still_open(&mut held) <= ADMIN_MAX,
    );
    assert!(orders_ok(&m.host), "apps' requests still work");
    let dig = m.host.dig(&["+tcp", "orders.mesh"]);
    assert_eq!(dig.status, "NOERROR", "{}", dig.raw);
    assert_eq!(m.agent.admin_get("/ready").0, 200);
    assert!(open_descriptors(&m.agent) < limit);
    // A trickled head is cut off after the header timeout (5 s).
    wait_until(
        Duration::from_secs(10),
        "slowloris admin connections closed",
        || still_open(&mut held) == 0,
    );
}

#[test]
fn out_of_descriptors_is_counted_logged_sparingly_and_ready_still_answers() {
    let m = local(AgentOpts::new());
    let limit = open_descriptors(&m.agent) + 8;
    limit_descriptors(&m.agent, limit);
    // Idle app connections take every descriptor left (and more wait in the backlog).
    let held = hold(&m.host, m.vip, 40, b"");
    wait_until(
        Duration::from_secs(10),
        "the agent counts the failed accepts",
        || {
            metric(
                &m.agent,
                "hostmesh_descriptors_exhausted_total{listener=\"outbound\"}",
            ) >= 1
        },
    );
    for _ in 0..3 {
        assert_eq!(m.agent.admin_get("/ready").0, 200);
    }
    let logged = m
        .agent
        .log()
        .lines()
        .filter(|l| l.contains("cannot accept a connection"))
        .count();
    assert!(
        (1..=3).contains(&logged),
        "{logged} lines:\n{}",
        m.agent.log_tail(20)
    );
    drop(held);
    wait_until(Duration::from_secs(15), "apps are served again", || {
        orders_ok(&m.host)
    });
}
