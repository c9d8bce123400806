//! Requests nobody waits for any more are dropped, not finished: the app's work on them stops
//! and its connection is not held for an answer that would go nowhere.

use std::net::SocketAddr;
use std::time::Duration;

use hostmesh_tests::raw_h2::{self, Frame};
use hostmesh_tests::raw_http::RawConn;
use hostmesh_tests::{AgentOpts, Backend, Etcd, Net, wait_until};
use tokio::io::AsyncWriteExt;

use crate::access_log;
use crate::proxy::agent;
use crate::resilience::ORDERS;

/// What the app is asked for: it waits this long (20 s) for its client to leave.
const HOLD: &str = "/hold?ms=20000";

/// A peer agent that resets a stream (its caller gave up, or its deadline passed) makes the
/// agent drop the app's request: the app sees its connection close, and the request is counted
/// as one whose client left, 499. The peer connection serves on.
#[test]
fn a_stream_the_peer_resets_drops_the_apps_request() {
    let net = Net::new();
    let etcd = Etcd::start(&net);
    let a = net.host("a");
    let b = net.host("b");
    let app = Backend::http(&b, 18080, "orders\n");
    let agent_a = agent(&a, &etcd, AgentOpts::new());
    let agent_b = agent(&b, &etcd, AgentOpts::new().service("orders-1", ORDERS));
    wait_until(Duration::from_secs(10), "a reaches orders on b", || {
        a.curl("http://orders.mesh:8080/")
            .is_ok_and(|(code, _)| code == 200)
    });
    let id = agent_a.status()["services"]["orders"]["endpoints"][0]["id"]
        .as_str()
        .expect("the instance's id")
        .to_owned();
    let dst = format!("orders/{id}");
    let fields = [("x-hostmesh-v", "1"), ("x-hostmesh-dst", dst.as_str())];
    let peer = SocketAddr::new(b.addr().into(), 4143);

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let answered = a.in_ns(|| {
        rt.block_on(async {
            // As agent a would: one h2c connection, a GET on stream 1.
            let mut s = tokio::net::TcpStream::connect(peer).await.expect("connect");
            let mut out = raw_h2::PREFACE.to_vec();
            out.extend(raw_h2::frame(raw_h2::SETTINGS, 0, 0, &[]));
            let block = raw_h2::request_block("GET", HOLD, &fields);
            let flags = raw_h2::END_HEADERS | raw_h2::END_STREAM;
            out.extend(raw_h2::frame(raw_h2::HEADERS, flags, 1, &block));
            s.write_all(&out).await.expect("write the request");
            wait_until(Duration::from_secs(10), "the app has the request", || {
                app.requests().iter().any(|r| r["path"] == HOLD)
            });

            let cancel = raw_h2::CANCEL.to_be_bytes();
            let reset = raw_h2::frame(raw_h2::RST_STREAM, 0, 1, &cancel);
            s.write_all(&reset).await.expect("write the reset");
            wait_until(
                Duration::from_secs(5),
                "the app sees its client leave",
                || app.gone().iter().any(|p| p == HOLD),
            );

            // The connection still serves: a GET on stream 3 is answered 200.
            let block = raw_h2::request_block("GET", "/", &fields);
            let request = raw_h2::frame(raw_h2::HEADERS, flags, 3, &block);
            s.write_all(&request)
                .await
                .expect("write the second request");
            let read = async {
                loop {
                    match raw_h2::read_frame(&mut s).await {
                        Some(Frame {
                            kind: raw_h2::HEADERS,
                            stream: 3,
                            payload,
                            ..
                        }) => return Some(payload),
                        Some(Frame {
                            kind: raw_h2::GOAWAY,
                            ..
                        })
                        | None => return None,
                        Some(_) => {}
                    }
                }
            };
            tokio::time::timeout(Duration::from_secs(10), read)
                .await
                .ok()
                .flatten()
        })
    });
    // 0x88: the static table's `:status 200`, which h2 writes first and indexed.
    let head = answered.expect("stream 3 answered on the same connection");
    assert_eq!(head.first(), Some(&0x88), "stream 3's head: {head:02x?}");
    assert_eq!(app.gone(), [HOLD], "only the reset request was dropped");
    assert_eq!(agent_b.sample(INBOUND_499), 1.0, "{INBOUND_499}");
}

/// The peer agent's count of requests whose caller left.
const INBOUND_499: &str =
    r#"hostmesh_requests_total{direction="inbound",service="orders",code="499"}"#;

/// An app's client that closes its connection before the answer takes its request with it, on
/// either kind of instance and either of the outbound side's paths (the lean one, hyper's for an
/// HTTP/2 client): the app's connection closes (the peer's stream is reset, or the same-host
/// connection dropped) instead of being held for an answer nobody reads, and the request is
/// counted and access-logged as nginx would log it, 499.
#[test]
fn a_client_that_leaves_drops_its_request() {
    let net = Net::new();
    let etcd = Etcd::start(&net);
    let a = net.host("a");
    let b = net.host("b");
    let app = Backend::http(&b, 18080, "orders\n");
    let dir = access_log::tempfile_dir();
    let (log_a, log_b) = (dir.join("a.log"), dir.join("b.log"));
    let agent_a = agent(&a, &etcd, access_log::logged("json", &log_a));
    let agent_b = agent(
        &b,
        &etcd,
        access_log::logged("json", &log_b).service("orders-1", ORDERS),
    );
    for (host, client, log) in [(&a, &agent_a, &log_a), (&b, &agent_b, &log_b)] {
        let from = host.name();
        wait_until(Duration::from_secs(10), "orders answers", || {
            host.curl("http://orders.mesh:8080/")
                .is_ok_and(|(code, _)| code == 200)
        });
        let vip = client.service_vip("orders").expect("orders' VIP");
        let gone_before = app.gone().len();
        host.in_ns(|| {
            let mut conn = RawConn::connect(SocketAddr::new(vip.into(), 8080));
            conn.send(format!("GET {HOLD} HTTP/1.1\r\nHost: orders.mesh\r\n\r\n").as_bytes());
            wait_until(Duration::from_secs(10), "the app has the request", || {
                app.requests().iter().filter(|r| r["path"] == HOLD).count() > gone_before
            });
        });
        // The connection closed as the scope ended: the app must see its own close well before
        // the 20 s it waits.
        wait_until(
            Duration::from_secs(5),
            &format!("the app sees the client on {from} leave"),
            || app.gone().len() > gone_before,
        );
        let series = r#"hostmesh_requests_total{direction="outbound",service="orders",code="499"}"#;
        assert_eq!(client.sample(series), 1.0, "{from}: {series}");
        wait_until(Duration::from_secs(5), "the access log's 499", || {
            access_log::json_lines(log)
                .iter()
                .any(|e| e["direction"] == "outbound" && e["path"] == HOLD && e["status"] == 499)
        });
    }
    // hyper's path the same: an HTTP/2 client that gives up after a second.
    let gone_before = app.gone().len();
    let url = format!("http://orders.mesh:8080{HOLD}");
    let gave_up = a.curl_args(&["--http2-prior-knowledge", "--max-time", "1", &url]);
    assert!(gave_up.is_err(), "curl got an answer: {gave_up:?}");
    wait_until(
        Duration::from_secs(5),
        "the app sees the HTTP/2 client leave",
        || app.gone().len() > gone_before,
    );
    let series = r#"hostmesh_requests_total{direction="outbound",service="orders",code="499"}"#;
    assert_eq!(agent_a.sample(series), 2.0, "{series}");
    wait_until(
        Duration::from_secs(5),
        "the access log's second 499",
        || {
            let lines = access_log::json_lines(&log_a);
            lines.iter().filter(|e| e["status"] == 499).count() == 2
        },
    );
    // b's side of the two that crossed (from a's lean path and from hyper's): the peer reset
    // both streams, and b finished both as 499 too.
    wait_until(Duration::from_secs(5), "b's two inbound 499s", || {
        agent_b.sample(INBOUND_499) == 2.0
    });
    wait_until(Duration::from_secs(5), "b's two inbound 499 lines", || {
        let lines = access_log::json_lines(&log_b);
        let held = lines
            .iter()
            .filter(|e| e["direction"] == "inbound" && e["path"] == HOLD);
        held.filter(|e| e["status"] == 499).count() == 2
    });
    std::fs::remove_dir_all(&dir).ok();
}
