//! The outbound side against hostile clients, over raw sockets to a service VIP: request
//! smuggling heads get 400 and a close and never reach the app, oversized heads get 431, a
//! client that trickles its head is cut off, and HTTP/2 clients meet explicit limits.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use hostmesh_tests::raw_h2;
use hostmesh_tests::raw_http::{Answer, exchange, read_until_closed};
use hostmesh_tests::{Agent, AgentOpts, Backend, Etcd, Host, Net, wait_until};

pub(crate) const MAX_HEADERS: usize = 20;
pub(crate) const MAX_HEADER_BYTES: usize = 4096;

fn orders() -> String {
    "name = \"orders\"\nport = 8080\ntarget = \"127.0.0.1:18080\"\n".to_owned()
}

/// Client agent `a` with small, explicit limits; the app on `b` behind its agent.
pub(crate) fn client_opts() -> AgentOpts {
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
pub(crate) fn vip(a: &Agent, service: &str, port: u16) -> SocketAddr {
    let url = format!("http://{service}.mesh:{port}/");
    wait_until(Duration::from_secs(10), &format!("{url} answers"), || {
        a.host().curl(&url).is_ok_and(|(code, _)| code == 200)
    });
    let vip = a.service_vip(service).expect("a VIP");
    SocketAddr::new(vip.into(), port)
}

/// Client agent `a` (with [`client_opts`]) and `orders` on `b` behind its agent, with the VIP
/// `a` reaches it at. Fields drop in order: agents and the app, then etcd, then the network.
struct Orders {
    a: Host,
    app: Backend,
    agent_a: Agent,
    vip: SocketAddr,
    _agent_b: Agent,
    _etcd: Etcd,
    _net: Net,
}

impl Orders {
    fn start() -> Orders {
        let net = Net::new();
        let etcd = Etcd::start(&net);
        let a = net.host("a");
        let b = net.host("b");
        let app = Backend::http(&b, 18080, "ok\n");
        let agent_a = agent(&a, &etcd, client_opts());
        let agent_b = agent(&b, &etcd, AgentOpts::new().service("orders-1", &orders()));
        let vip = vip(&agent_a, "orders", 8080);
        Orders {
            a,
            app,
            agent_a,
            vip,
            _agent_b: agent_b,
            _etcd: etcd,
            _net: net,
        }
    }
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
    let m = Orders::start();
    let (a, app, vip) = (&m.a, &m.app, m.vip);

    for (what, input) in SMUGGLING {
        let got = exchange(a, vip, input.as_bytes());
        assert_eq!(got.statuses, [400], "{what}: {got:?}");
        assert!(got.closed, "{what}: the connection stays open");
    }
    // Pipelined in one write: the good request is answered, then the bad one gets 400.
    let pipelined = format!("{}{}", get("/before", ""), SMUGGLING[0].1);
    let got = exchange(a, vip, pipelined.as_bytes());
    assert_eq!((got.statuses, got.closed), (vec![200, 400], true));

    // Limits: more than max_headers fields, or a head over max_header_bytes.
    let fields = |n: usize| (0..n).map(|i| format!("x-{i}: v\r\n")).collect::<String>();
    let at_limit = get(
        "/at-limit",
        &format!("{}connection: close\r\n", fields(MAX_HEADERS - 2)),
    );
    assert_eq!(exchange(a, vip, at_limit.as_bytes()).statuses, [200]);
    let too_many = get("/too-many", &fields(MAX_HEADERS));
    let got = exchange(a, vip, too_many.as_bytes());
    assert_eq!((got.statuses, got.closed), (vec![431], true));
    let big = get(
        "/too-big",
        &format!("x-big: {}\r\n", "a".repeat(MAX_HEADER_BYTES)),
    );
    let got = exchange(a, vip, big.as_bytes());
    assert_eq!((got.statuses, got.closed), (vec![431], true));

    // A valid request on a fresh connection still works; once it has arrived, everything that
    // was going to arrive has: only the good requests did.
    let last = get("/after", "connection: close\r\n");
    assert_eq!(exchange(a, vip, last.as_bytes()).statuses, [200]);
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

/// The `SETTINGS_MAX_CONCURRENT_STREAMS` the agent announces to apps (`h2_limits`).
const APP_MAX_STREAMS: u32 = 250;

#[test]
fn http2_clients_meet_the_stream_and_header_limits() {
    let net = Net::new();
    let etcd = Etcd::start(&net);
    let a = net.host("a");
    let _app = Backend::http(&a, 18080, "ok\n");
    // An app that takes connections and never answers: streams to it stay open.
    let silent = "name = \"silent\"\nport = 8081\ntarget = \"127.0.0.1:18081\"\n";
    let agent_a = agent(
        &a,
        &etcd,
        client_opts()
            .service("orders-1", &orders())
            .service("silent-1", silent),
    );
    vip(&agent_a, "orders", 8080);

    // A header list over max_header_bytes: h2 answers 431 itself.
    let big = format!("x-big: {}", "a".repeat(MAX_HEADER_BYTES));
    let out = a.run_ok(
        "curl",
        &[
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--http2-prior-knowledge",
            "-H",
            &big,
            "http://orders.mesh:8080/",
        ],
    );
    assert_eq!(out.trim(), "431");

    let silent_vip = agent_a.status()["services"]["silent"]["vip"]
        .as_str()
        .expect("the silent service's VIP")
        .to_owned();
    let addr = SocketAddr::new(silent_vip.parse().expect("an IP"), 8081);
    let (max_streams, refused) = a.in_ns(|| h2_one_stream_too_many(addr));
    assert_eq!(max_streams, Some(APP_MAX_STREAMS));
    // Exactly the stream past the limit is refused (REFUSED_STREAM: the client may retry it).
    assert_eq!(refused, [2 * APP_MAX_STREAMS + 1]);
}

/// Opens `APP_MAX_STREAMS + 1` request streams at once (all in one write, none finished) to
/// `addr`; returns the server's announced stream limit and the streams it refused.
fn h2_one_stream_too_many(addr: SocketAddr) -> (Option<u32>, Vec<u32>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(async {
        use tokio::io::AsyncWriteExt;

        let listener = tokio::net::TcpListener::bind("127.0.0.1:18081")
            .await
            .expect("bind the silent app");
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        });
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let mut out = raw_h2::PREFACE.to_vec();
        out.extend_from_slice(&raw_h2::frame(raw_h2::SETTINGS, 0, 0, &[]));
        // HPACK: :method POST, :scheme http, :path / (static table), :authority "x" (literal).
        let block = [0x83, 0x86, 0x84, 0x01, 0x01, b'x'];
        for i in 0..=APP_MAX_STREAMS {
            // END_HEADERS but not END_STREAM: the request body stays open.
            out.extend_from_slice(&raw_h2::frame(
                raw_h2::HEADERS,
                raw_h2::END_HEADERS,
                2 * i + 1,
                &block,
            ));
        }
        s.write_all(&out).await.expect("write the streams");

        let mut max_streams = None;
        let mut refused = Vec::new();
        let last = 2 * APP_MAX_STREAMS + 1;
        let read = async {
            while let Some(f) = raw_h2::read_frame(&mut s).await {
                match f.kind {
                    // SETTINGS (not an ACK): 6-byte entries; 0x3 is MAX_CONCURRENT_STREAMS.
                    raw_h2::SETTINGS if f.flags & raw_h2::ACK == 0 => {
                        for e in f.payload.chunks_exact(6) {
                            if u16::from_be_bytes([e[0], e[1]]) == 0x3 {
                                max_streams = Some(u32::from_be_bytes([e[2], e[3], e[4], e[5]]));
                            }
                        }
                    }
                    // RST_STREAM with REFUSED_STREAM (0x7).
                    raw_h2::RST_STREAM if f.payload == [0, 0, 0, 7] => {
                        refused.push(f.stream);
                        if f.stream == last {
                            return;
                        }
                    }
                    // GOAWAY: nothing more will come.
                    raw_h2::GOAWAY => return,
                    _ => {}
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(10), read).await;
        (max_streams, refused)
    })
}

/// Issue 14, finding 3: a client's broken chunked body is the client's fault. Each POST gets
/// 400 `bad-request` (not 502 `upstream-reset`), nothing reaches the app, the breaker ejects
/// nothing, and the next good request is served by the same instance.
#[test]
fn a_clients_broken_chunked_body_is_a_400_and_ejects_nothing() {
    let m = Orders::start();
    let (a, app, vip) = (&m.a, &m.app, m.vip);
    let seen_before = app.requests().len();

    let broken = |size: &str| {
        format!(
            "POST /upload HTTP/1.1\r\nhost: orders.mesh\r\ntransfer-encoding: chunked\r\n\r\n\
             5\r\nhello\r\n{size}\r\nmore\r\n"
        )
    };
    for size in ["zz", "ffffffffffffffffffff"] {
        for i in 0..13 {
            let got = exchange(a, vip, broken(size).as_bytes());
            assert_eq!(
                got.statuses,
                [400],
                "chunk size {size:?}, POST {i}: {got:?}"
            );
            assert!(got.closed, "chunk size {size:?}: the connection stays open");
        }
    }
    let metrics = m.agent_a.metrics();
    let ejections: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("hostmesh_ejections_total{"))
        .collect();
    assert!(
        ejections.iter().all(|l| l.ends_with(" 0")),
        "a client's framing error ejected an instance: {ejections:?}"
    );
    let status = m.agent_a.status();
    let endpoint = &status["services"]["orders"]["endpoints"][0];
    assert_ne!(endpoint["breaker"], "ejected", "{endpoint}");
    let last = get("/after", "connection: close\r\n");
    assert_eq!(exchange(a, vip, last.as_bytes()).statuses, [200]);
    // Whatever reached the app of the broken POSTs was never answered as if complete: the app
    // saw no /upload request end (its body never ended validly).
    let uploads = app.requests()[seen_before..]
        .iter()
        .filter(|r| r["path"] == "/upload")
        .count();
    assert_eq!(
        uploads, 0,
        "a broken body reached the app as a whole request"
    );
}
