//! The outbound side against hostile clients, over raw sockets to a service VIP: request
//! smuggling heads get 400 and a close and never reach the app, oversized heads get 431, a
//! client that trickles its head is cut off, and HTTP/2 clients meet explicit limits.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use hostmesh_tests::{Agent, AgentOpts, Backend, Etcd, Host, Net, wait_until};

const MAX_HEADERS: usize = 20;
const MAX_HEADER_BYTES: usize = 4096;

fn orders() -> String {
    "name = \"orders\"\nport = 8080\ntarget = \"127.0.0.1:18080\"\n".to_owned()
}

/// Client agent `a` with small, explicit limits; the app on `b` behind its agent.
fn client_opts() -> AgentOpts {
    AgentOpts::new()
        .set("proxy", "max_headers", &MAX_HEADERS.to_string())
        .set("proxy", "max_header_bytes", &MAX_HEADER_BYTES.to_string())
        .set_str("proxy", "header_read_timeout", "1s")
}

fn agent(host: &Host, etcd: &Etcd, opts: AgentOpts) -> Agent {
    let mut a = Agent::start(host, etcd, opts);
    a.wait_ready(Duration::from_secs(15));
    a
}

/// The service's VIP:port as agent `a` sees it, once a request through it succeeds.
fn vip(a: &Agent, service: &str, port: u16) -> SocketAddr {
    let url = format!("http://{service}.mesh:{port}/");
    wait_until(Duration::from_secs(10), &format!("{url} answers"), || {
        a.host().curl(&url).is_ok_and(|(code, _)| code == 200)
    });
    let vip = a.status()["services"][service]["vip"]
        .as_str()
        .expect("a VIP")
        .to_owned();
    SocketAddr::new(vip.parse().expect("an IP"), port)
}

/// What came back on one connection.
#[derive(Debug)]
struct Answer {
    statuses: Vec<u16>,
    /// Closed by the agent (EOF or reset) within the deadline.
    closed: bool,
}

/// Opens a fresh connection to `addr` inside `host`, writes `bytes` in one go, and reads until
/// the agent closes the connection (at most 10 s).
fn exchange(host: &Host, addr: SocketAddr, bytes: &[u8]) -> Answer {
    host.in_ns(|| {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect");
        // The agent may close before taking every byte; what it answered is still read.
        let _ = s.write_all(bytes);
        read_until_closed(&mut s, Duration::from_secs(10))
    })
}

fn read_until_closed(s: &mut TcpStream, within: Duration) -> Answer {
    let deadline = Instant::now() + within;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break false;
        }
        s.set_read_timeout(Some(left)).expect("set a read timeout");
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break true,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                break false;
            }
            Err(e) => panic!("reading: {e}"),
        }
    };
    let text = String::from_utf8_lossy(&out);
    let statuses = text
        .match_indices("HTTP/1.1 ")
        .filter_map(|(i, m)| text.get(i + m.len()..i + m.len() + 3)?.parse().ok())
        .collect();
    Answer { statuses, closed }
}

const SMUGGLING: &[(&str, &str)] = &[
    (
        "CL+TE",
        "POST /smuggled HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
    ),
    (
        "TE+CL",
        "POST /smuggled HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\ncontent-length: 5\r\n\r\n0\r\n\r\n",
    ),
    (
        "differing CL",
        "POST /smuggled HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello!",
    ),
    (
        "TE gzip",
        "POST /smuggled HTTP/1.1\r\nhost: x\r\ntransfer-encoding: gzip\r\n\r\nhello",
    ),
    (
        "TE chunked, gzip",
        "POST /smuggled HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
    ),
    (
        "obs-fold",
        "GET /smuggled HTTP/1.1\r\nhost: x\r\nx-a: 1\r\n folded\r\n\r\n",
    ),
    (
        "bare LF in the request line",
        "GET /smuggled HTTP/1.1\nhost: x\r\n\r\n",
    ),
    (
        "bare LF in a header line",
        "GET /smuggled HTTP/1.1\r\nhost: x\n\r\n",
    ),
    (
        "NUL in a header value",
        "GET /smuggled HTTP/1.1\r\nhost: x\r\nx-a: a\0b\r\n\r\n",
    ),
];

fn get(path: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nhost: orders.mesh\r\n{extra}\r\n")
}

#[test]
fn malformed_and_oversized_heads_are_refused_and_reach_nothing() {
    let net = Net::new();
    let etcd = Etcd::start(&net);
    let a = net.host("a");
    let b = net.host("b");
    let app = Backend::http(&b, 18080, "ok\n");
    let agent_a = agent(&a, &etcd, client_opts());
    let _agent_b = agent(&b, &etcd, AgentOpts::new().service("orders-1", &orders()));
    let vip = vip(&agent_a, "orders", 8080);

    for (what, input) in SMUGGLING {
        let got = exchange(&a, vip, input.as_bytes());
        assert_eq!(got.statuses, [400], "{what}: {got:?}");
        assert!(got.closed, "{what}: the connection stays open");
    }
    // Pipelined in one write: the good request is answered, then the bad one gets 400.
    let pipelined = format!("{}{}", get("/before", ""), SMUGGLING[0].1);
    let got = exchange(&a, vip, pipelined.as_bytes());
    assert_eq!((got.statuses, got.closed), (vec![200, 400], true));

    // Limits: more than max_headers fields, or a head over max_header_bytes.
    let fields = |n: usize| (0..n).map(|i| format!("x-{i}: v\r\n")).collect::<String>();
    let at_limit = get(
        "/at-limit",
        &format!("{}connection: close\r\n", fields(MAX_HEADERS - 2)),
    );
    assert_eq!(exchange(&a, vip, at_limit.as_bytes()).statuses, [200]);
    let too_many = get("/too-many", &fields(MAX_HEADERS));
    let got = exchange(&a, vip, too_many.as_bytes());
    assert_eq!((got.statuses, got.closed), (vec![431], true));
    let big = get(
        "/too-big",
        &format!("x-big: {}\r\n", "a".repeat(MAX_HEADER_BYTES)),
    );
    let got = exchange(&a, vip, big.as_bytes());
    assert_eq!((got.statuses, got.closed), (vec![431], true));

    // A valid request on a fresh connection still works; once it has arrived, everything that
    // was going to arrive has: only the good requests did.
    let last = get("/after", "connection: close\r\n");
    assert_eq!(exchange(&a, vip, last.as_bytes()).statuses, [200]);
    wait_until(Duration::from_secs(5), "/after reaches the app", || {
        app.requests().iter().any(|r| r["path"] == "/after")
    });
    let paths: Vec<String> = app
        .requests()
        .iter()
        .filter_map(|r| r["path"].as_str().map(str::to_owned))
        .filter(|p| p != "/")
        .collect();
    assert_eq!(paths, ["/before", "/at-limit", "/after"]);
}

#[test]
fn a_client_that_trickles_its_head_is_cut_off() {
    let net = Net::new();
    let etcd = Etcd::start(&net);
    let a = net.host("a");
    let _app = Backend::http(&a, 18080, "ok\n");
    let agent_a = agent(&a, &etcd, client_opts().service("orders-1", &orders()));
    let vip = vip(&agent_a, "orders", 8080);

    let (elapsed, got) = a.in_ns(|| {
        let mut s = TcpStream::connect_timeout(&vip, Duration::from_secs(2)).expect("connect");
        let started = Instant::now();
        s.write_all(b"GET / HTTP/1.1\r\n").expect("write");
        // One byte of a header line every 100 ms (the read timeout paces it), until the agent
        // hangs up or 10 s pass.
        let mut got = Answer {
            statuses: vec![],
            closed: false,
        };
        for b in b"x-slow: ".iter().cycle() {
            if started.elapsed() > Duration::from_secs(10) || s.write_all(&[*b]).is_err() {
                got.closed = true;
                break;
            }
            got = read_until_closed(&mut s, Duration::from_millis(100));
            if got.closed {
                break;
            }
        }
        (started.elapsed(), got)
    });
    assert!(got.closed, "still open after {elapsed:?}");
    assert!(got.statuses.is_empty(), "{got:?}");
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(5),
        "cut off after {elapsed:?}, header_read_timeout is 1s"
    );
}
