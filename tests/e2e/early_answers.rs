//! Answers that come before the request body has all arrived (an access policy's 403, an app
//! that replies without reading): the agents read the rest of the body instead of resetting the
//! stream, so a client's late DATA lands on a stream that is still open.
//!
//! Why it matters: h2 remembers only its 50 most recent resets (for 1 s). DATA on a stream it has
//! reset and forgotten counts as the peer's protocol error, and after 1,024 of those in a
//! connection's life it ends the connection with GOAWAY (ENHANCE_YOUR_CALM), failing every
//! request on it: an app's connection, or the one peer connection between two hosts.

use std::net::SocketAddr;
use std::time::Duration;

use hostmesh_tests::raw_h2::{self, Frame};
use hostmesh_tests::{AgentOpts, Backend, Etcd, Net, wait_until};
use tokio::io::AsyncWriteExt;

use crate::proxy::agent;

const ORDERS: &str = "name = \"orders\"\nport = 8080\ntarget = \"127.0.0.1:18080\"\n";

/// Streams opened together, answered, then given their bodies. Well past the 50 resets h2
/// remembers, under the 250 streams an app connection may have open.
const STREAMS: u32 = 200;
/// Enough rounds that the streams forgotten without the fix (150 a round) pass h2's 1,024.
const ROUNDS: u32 = 10;

#[test]
fn bodies_that_arrive_after_the_answer_cost_no_connection() {
    let net = Net::new();
    let etcd = Etcd::start(&net);
    let a = net.host("a");
    let b = net.host("b");
    let _app = Backend::http(&b, 18080, "orders\n");
    let agent_a = agent(&a, &etcd, AgentOpts::new());
    // b refuses every caller: its 403 comes at once, before the body is read.
    let agent_b = agent(
        &b,
        &etcd,
        AgentOpts::new()
            .set_str("policy", "default", "deny")
            .service("orders-1", ORDERS),
    );
    wait_until(Duration::from_secs(10), "b refuses orders to a", || {
        a.curl("http://orders.mesh:8080/")
            .is_ok_and(|(code, _)| code == 403)
    });
    let vip = agent_a.service_vip("orders").expect("orders' VIP");
    let vip = SocketAddr::new(vip.into(), 8080);

    // An app's connection to a: a passes each body on to b, which reads it to its end.
    let got = a.in_ns(|| answers_first(vip, &raw_h2::request_block("POST", "/", &[])));
    assert_eq!(got.goaway, None, "a ended the connection: {got:?}");
    assert_eq!(got.resets, [], "a reset streams: {got:?}");
    assert_eq!(got.answered, ROUNDS * STREAMS, "{got:?}");
    assert!(got.last_answered, "a's connection serves on: {got:?}");

    // A peer's connection to b, as a's agent would send (the bodies' DATA on their way when b's
    // answer leaves): b reads each body to its end.
    let id = agent_a.status()["services"]["orders"]["endpoints"][0]["id"]
        .as_str()
        .expect("the instance's id")
        .to_owned();
    let dst = format!("orders/{id}");
    let wire = raw_h2::request_block(
        "POST",
        "/",
        &[("x-hostmesh-v", "1"), ("x-hostmesh-dst", &dst)],
    );
    let peer = SocketAddr::new(b.addr().into(), 4143);
    let got = a.in_ns(|| answers_first(peer, &wire));
    assert_eq!(got.goaway, None, "b ended the peer connection: {got:?}");
    assert_eq!(got.resets, [], "b reset streams: {got:?}");
    assert_eq!(got.answered, ROUNDS * STREAMS, "{got:?}");
    assert!(got.last_answered, "b's peer connection serves on: {got:?}");
    for agent in [&agent_a, &agent_b] {
        let log = agent.log();
        assert!(
            !log.contains("locally-reset streams reached limit"),
            "h2 ended a connection on {}:\n{log}",
            agent.host().name()
        );
    }
}

/// What the client saw.
#[derive(Debug)]
struct Seen {
    /// Streams whose answer ended (END_STREAM) before their body was sent.
    answered: u32,
    /// Streams the agent reset: (stream, error code).
    resets: Vec<(u32, u32)>,
    /// A GOAWAY's error code and debug data.
    goaway: Option<(u32, String)>,
    /// Whether one more request afterwards, on the same connection, was answered.
    last_answered: bool,
}

/// Over one h2c connection to `addr`: `ROUNDS` times, opens `STREAMS` POSTs with the header
/// `block` (no body yet), waits until every one is answered, then sends each its body. Then one
/// more whole request.
fn answers_first(addr: SocketAddr, block: &[u8]) -> Seen {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(async {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let mut seen = Seen {
            answered: 0,
            resets: Vec::new(),
            goaway: None,
            last_answered: false,
        };
        // Windows large enough that the answers never wait for a WINDOW_UPDATE.
        let mut out = raw_h2::PREFACE.to_vec();
        let initial_window = [0, 4, 0x7f, 0xff, 0xff, 0xff];
        out.extend_from_slice(&raw_h2::frame(raw_h2::SETTINGS, 0, 0, &initial_window));
        out.extend_from_slice(&raw_h2::frame(
            raw_h2::WINDOW_UPDATE,
            0,
            0,
            &0x7fff_0000u32.to_be_bytes(),
        ));
        s.write_all(&out).await.expect("write the preface");
        let mut next = 1u32;
        for _ in 0..ROUNDS {
            let ids: Vec<u32> = (0..STREAMS).map(|i| next + 2 * i).collect();
            next += 2 * STREAMS;
            let mut out = Vec::new();
            for id in &ids {
                out.extend_from_slice(&raw_h2::frame(
                    raw_h2::HEADERS,
                    raw_h2::END_HEADERS,
                    *id,
                    block,
                ));
            }
            s.write_all(&out).await.expect("write the heads");
            let mut open = ids.len();
            while open > 0 {
                match until_answered(&mut s, &mut seen).await {
                    Some(id) if ids.contains(&id) => open -= 1,
                    Some(_) => {}
                    None => return seen,
                }
            }
            seen.answered += STREAMS;
            let mut out = Vec::new();
            for id in &ids {
                out.extend_from_slice(&raw_h2::frame(
                    raw_h2::DATA,
                    raw_h2::END_STREAM,
                    *id,
                    b"a late body",
                ));
            }
            s.write_all(&out).await.expect("write the bodies");
        }
        let last = raw_h2::frame(
            raw_h2::HEADERS,
            raw_h2::END_HEADERS | raw_h2::END_STREAM,
            next,
            block,
        );
        s.write_all(&last).await.expect("write the last request");
        seen.last_answered = until_answered(&mut s, &mut seen).await == Some(next);
        seen
    })
}

/// Reads frames (acknowledging SETTINGS and PING, noting resets) until a stream's answer ends;
/// returns that stream, or `None` on GOAWAY, a closed connection or 10 s without an answer.
async fn until_answered(s: &mut tokio::net::TcpStream, seen: &mut Seen) -> Option<u32> {
    let read = async {
        loop {
            let Frame {
                kind,
                flags,
                stream,
                payload,
            } = raw_h2::read_frame(s).await?;
            match kind {
                raw_h2::SETTINGS if flags & raw_h2::ACK == 0 => {
                    let ack = raw_h2::frame(raw_h2::SETTINGS, raw_h2::ACK, 0, &[]);
                    s.write_all(&ack).await.ok()?;
                }
                raw_h2::PING if flags & raw_h2::ACK == 0 => {
                    let ack = raw_h2::frame(raw_h2::PING, raw_h2::ACK, 0, &payload);
                    s.write_all(&ack).await.ok()?;
                }
                raw_h2::HEADERS | raw_h2::DATA if flags & raw_h2::END_STREAM != 0 => {
                    return Some(stream);
                }
                raw_h2::RST_STREAM => {
                    let code = u32::from_be_bytes(payload[..4].try_into().ok()?);
                    seen.resets.push((stream, code));
                }
                raw_h2::GOAWAY => {
                    let code = u32::from_be_bytes(payload.get(4..8)?.try_into().ok()?);
                    let debug = String::from_utf8_lossy(payload.get(8..)?).into_owned();
                    seen.goaway = Some((code, debug));
                    return None;
                }
                _ => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .ok()
        .flatten()
}
