//! Heads on the lean path: what the app sees of the client's request head, and what the client
//! sees of the app's response head.

use std::net::SocketAddr;
use std::time::Duration;

use hostmesh_tests::{AgentOpts, Backend, Etcd, Net, RawConn, wait_until};

use super::{assert_dated, assert_lean, get, lean, one_host};
use crate::hardening::vip;
use crate::proxy::agent;
use crate::resilience::ORDERS;

#[test]
fn the_app_sees_the_caller_and_neither_side_sees_the_others_hop_by_hop_headers() {
    let m = one_host(AgentOpts::new());
    let req = get(
        "/who",
        "Connection: keep-alive, X-Conn-Named\r\nX-Conn-Named: secret\r\nKeep-Alive: timeout=5\r\n\
         TE: trailers, deflate\r\nProxy-Connection: keep-alive\r\nX-Hostmesh-Dst: evil/1\r\n\
         X-Hostmesh-Src: evil\r\nX-Hostmesh-Caller: evil\r\nX-Hostmesh-Error: spoofed\r\n\
         X-Hostmesh-Timeout: 800ms\r\nForwarded: for=203.0.113.9\r\nX-Keep: 1\r\nX-Empty:\r\n",
    );
    // A head far over one read, within max_header_bytes (64 KiB by default).
    let big = "b".repeat(40_000);
    let (who, hop, large) = m.conn(|c| {
        let who = c.request(&req);
        let hop = c.request(&get("/hop", ""));
        c.send(&get("/large", &format!("X-Big: {big}\r\n")));
        (who, hop, c.response(false))
    });
    assert_eq!((who.status, who.text()), (200, "ok\n".to_owned()));
    assert_lean(&who, "GET /who");

    let seen = m
        .app
        .requests()
        .into_iter()
        .find(|r| r["path"] == "/who")
        .expect("the app got /who");
    let raw: Vec<(String, String)> =
        serde_json::from_value(seen["raw"].clone()).expect("raw header fields");
    let mut names: Vec<String> = raw.iter().map(|(n, _)| n.to_lowercase()).collect();
    names.sort();
    // Exactly these, each once: the client's end-to-end fields, `te: trailers`, and the agent's.
    assert_eq!(
        names,
        [
            "forwarded",
            "host",
            "te",
            "x-empty",
            "x-hostmesh-caller",
            "x-hostmesh-timeout",
            "x-keep"
        ],
        "{raw:?}"
    );
    let h = &seen["headers"];
    assert_eq!(h["x-hostmesh-caller"], "a", "{raw:?}");
    assert_eq!(h["forwarded"], format!("for={}", m.a.addr()), "{raw:?}");
    assert_eq!(h["te"], "trailers", "{raw:?}");
    assert_eq!(h["host"], "orders.mesh:8080", "{raw:?}");
    assert_eq!(h["x-empty"], "", "{raw:?}");
    // The client's deadline, less what the agent spent.
    let left = h["x-hostmesh-timeout"].as_str().unwrap_or_default();
    let ms: u64 = left
        .strip_suffix("ms")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("x-hostmesh-timeout {left:?}"));
    assert!((1..=800).contains(&ms), "the app sees {left}");
    // The lean path passes the client's fields as written.
    assert!(
        raw.contains(&("X-Keep".to_owned(), "1".to_owned())),
        "{raw:?}"
    );

    // The app's hop-by-hop response fields stay between it and the agent.
    assert_eq!((hop.status, hop.text()), (200, "ok\n".to_owned()));
    assert_lean(&hop, "GET /hop");
    for name in [
        "connection",
        "x-app-private",
        "keep-alive",
        "proxy-connection",
    ] {
        assert!(
            hop.header(name).is_none(),
            "{name} reached the client:\n{}",
            hop.head
        );
    }
    assert_eq!(hop.header("x-app-public"), Some("1"), "{}", hop.head);

    assert_eq!(large.status, 200, "{}", large.head);
    assert_lean(&large, "a 40 KB head");
    let seen = m
        .app
        .requests()
        .into_iter()
        .find(|r| r["path"] == "/large")
        .expect("the app got /large");
    assert!(
        seen["headers"]["x-big"] == big.as_str(),
        "X-Big arrived altered"
    );
}

#[test]
fn status_lines_without_a_usable_reason_phrase_are_relayed() {
    let m = one_host(AgentOpts::new());
    let mut wrong = Vec::new();
    for (what, line) in [
        // httparse gives these an empty reason of its own, not a slice of the head.
        ("no reason phrase", "HTTP%2F1.1%20200"),
        (
            "a non-ASCII reason phrase",
            "HTTP%2F1.1%20200%20%C3%87a%20va",
        ),
        // A slice of the head, empty.
        ("an empty reason phrase", "HTTP%2F1.1%20200%20"),
    ] {
        let got = m.conn(|c| {
            c.send(&get(&format!("/statusline?s={line}"), ""));
            let r = c.try_response(false)?;
            c.send(&get("/next", ""));
            Ok::<_, String>((r, c.try_response(false)?))
        });
        match got {
            Ok((r, next)) if r.status == 200 && r.text() == "ok\n" && lean(&r) => {
                assert_eq!((next.status, next.text()), (200, "ok\n".to_owned()));
            }
            Ok((r, _)) => wrong.push(format!("{what} ({line}): got\n{}{}", r.head, r.text())),
            Err(e) => wrong.push(format!("{what} ({line}): {e}")),
        }
    }
    // A connection that ended without an answer: what the agent said about it.
    let log = m.agent.log();
    let lines: Vec<&str> = log.lines().collect();
    let panics: Vec<String> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.contains("panicked at"))
        .map(|(i, l)| format!("{l} {}", lines.get(i + 1).unwrap_or(&"")))
        .collect();
    assert!(
        wrong.is_empty(),
        "the app's 200 \"ok\" did not come through:\n{}\nagent panics:\n{}",
        wrong.join("\n"),
        panics.join("\n")
    );
}

/// Found by the fuzz targets' round trips: a `Connection` header naming `Content-Length` made the
/// lean path drop the body's length, and the app read the body as the next request. The body
/// must arrive as the POST's body, and nothing in it as a request of its own.
#[test]
fn a_connection_header_naming_content_length_never_smuggles_a_request() {
    let m = one_host(AgentOpts::new());
    let inner = b"GET /smuggled HTTP/1.1\r\nHost: orders.mesh:8080\r\n\r\n";
    let req = super::post("/echo", inner, "Connection: content-length\r\n");
    let (echo, next) = m.conn(|c| {
        let echo = c.request(&req);
        let next = c.request(&get("/after", ""));
        (echo, next)
    });
    assert_eq!(echo.status, 200, "{}", echo.head);
    assert_eq!(echo.body, inner, "the app got the body as the POST's body");
    assert_eq!(next.status, 200, "{}", next.head);
    let paths: Vec<String> = m
        .app
        .requests()
        .iter()
        .map(|r| r["path"].as_str().unwrap_or("").to_owned())
        .collect();
    assert!(
        !paths.iter().any(|p| p == "/smuggled"),
        "a request was smuggled: {paths:?}"
    );
    assert!(paths.iter().any(|p| p == "/after"), "{paths:?}");
}

/// Every response a client gets has one `Date`: the app's as it sent it (the test backend writes
/// `Date`), else the agent's, for an instance on the same host and one on another host alike
/// (there the peer's HTTP/2 answer has lowercase names, whoever wrote the field).
#[test]
fn a_response_without_a_date_gets_the_agents() {
    let net = Net::new();
    let etcd = Etcd::start(&net);
    let (a, b) = (net.host("a"), net.host("b"));
    let _app = Backend::http(&b, 18080, "ok\n");
    let agent_a = agent(&a, &etcd, AgentOpts::new());
    let agent_b = agent(&b, &etcd, AgentOpts::new().service("orders-1", ORDERS));
    // The app's status line as it is, then `Server` and `Content-Length`: no `Date`.
    let undated = get("/statusline?s=HTTP%2F1.1%20200%20OK", "");
    for (host, client) in [(&b, &agent_b), (&a, &agent_a)] {
        let from = host.name();
        wait_until(Duration::from_secs(10), "orders answers", || {
            host.curl("http://orders.mesh:8080/")
                .is_ok_and(|(code, _)| code == 200)
        });
        let to: SocketAddr = vip(client, "orders", 8080);
        let (dated, added) = host.in_ns(|| {
            let mut c = RawConn::connect(to);
            (c.request(&get("/who", "")), c.request(&undated))
        });
        for r in [&dated, &added] {
            assert_eq!(
                (r.status, r.text()),
                (200, "ok\n".to_owned()),
                "from {from}: {}",
                r.head
            );
            assert_dated(r);
        }
        if from == "b" {
            // Same host: names pass as the app wrote them, so whose date it is shows.
            assert_lean(&added, "the undated answer");
            assert!(
                dated.names().contains(&"Date"),
                "the app's Date: {}",
                dated.head
            );
            assert!(
                added.names().contains(&"date"),
                "the agent's date: {}",
                added.head
            );
        }
    }
}
