//! What the lean path hands to hyper's path mid-connection, and the answers hyper's path gives.

use std::time::Duration;

use hostmesh_tests::raw_http::exchange;
use hostmesh_tests::{AgentOpts, Backend, Etcd, Net, RawConn, wait_until};

use super::{assert_lean, get, head, lean, one_host};
use crate::hardening::{MAX_HEADER_BYTES, MAX_HEADERS, client_opts, vip};
use crate::proxy::agent;
use crate::resilience::ORDERS;

#[test]
fn a_chunked_request_mid_connection_goes_to_hyper_and_the_connection_goes_on() {
    let m = one_host(AgentOpts::new());
    let chunked: &[u8] = b"POST /upload HTTP/1.1\r\nHost: orders.mesh:8080\r\n\
        Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    let before = m.app.request_count();
    let one_by_one = m.conn(|c| {
        let mut rs = Vec::new();
        for req in [get("/one", ""), chunked.to_vec(), get("/three", "")] {
            c.send(&req);
            rs.push(c.response(false));
        }
        rs
    });
    let mut burst = get("/one", "");
    burst.extend_from_slice(chunked);
    burst.extend(get("/three", ""));
    let pipelined = m.conn(|c| {
        c.send(&burst);
        (0..3).map(|_| c.response(false)).collect::<Vec<_>>()
    });
    for rs in [&one_by_one, &pipelined] {
        let got: Vec<(u16, String)> = rs.iter().map(|r| (r.status, r.text())).collect();
        assert_eq!(got, vec![(200, "ok\n".to_owned()); 3]);
        assert_lean(&rs[0], "GET /one");
        // Handed over at the chunked request; hyper serves the connection from then on.
        assert!(
            !lean(&rs[1]),
            "the chunked request was not handed over:\n{}",
            rs[1].head
        );
        assert!(
            !lean(&rs[2]),
            "GET /three after the handover:\n{}",
            rs[2].head
        );
    }
    assert_eq!(
        m.seen_since(before),
        [
            "GET /one",
            "POST /upload",
            "GET /three",
            "GET /one",
            "POST /upload",
            "GET /three"
        ]
    );
    let uploads: Vec<u64> = m
        .app
        .requests()
        .iter()
        .filter(|r| r["path"] == "/upload")
        .filter_map(|r| r["body_len"].as_u64())
        .collect();
    assert_eq!(uploads, [11, 11], "the chunked bodies arrived whole");
}

#[test]
fn an_http_1_0_request_is_served_alone_or_after_lean_ones() {
    let m = one_host(AgentOpts::new());
    let old = b"GET /old HTTP/1.0\r\nHost: orders.mesh:8080\r\n\r\n";
    let (alone, closed) = m.conn(|c| {
        let r = c.request(old);
        (r, c.closes_within(Duration::from_secs(5)))
    });
    assert_eq!(
        (alone.status, alone.text()),
        (200, "ok\n".to_owned()),
        "{}",
        alone.head
    );
    assert_eq!(
        closed,
        Ok(()),
        "an HTTP/1.0 connection without keep-alive ends"
    );
    let (first, then, closed) = m.conn(|c| {
        let first = c.request(&get("/new", ""));
        let then = c.request(old);
        (first, then, c.closes_within(Duration::from_secs(5)))
    });
    assert_lean(&first, "GET /new");
    assert_eq!(
        (then.status, then.text()),
        (200, "ok\n".to_owned()),
        "{}",
        then.head
    );
    assert!(!lean(&then), "HTTP/1.0 was not handed over:\n{}", then.head);
    assert_eq!(closed, Ok(()));
    let olds = m
        .app
        .requests()
        .iter()
        .filter(|r| r["path"] == "/old")
        .count();
    assert_eq!(olds, 2);
}

#[test]
fn bare_lf_heads_get_400_oversized_ones_431_and_none_reaches_the_app() {
    let m = one_host(client_opts());
    let before = m.app.request_count();
    let bare_lf_line = b"GET /bare HTTP/1.1\nHost: orders.mesh:8080\r\n\r\n".to_vec();
    let bare_lf_field = b"GET /bare HTTP/1.1\r\nHost: orders.mesh:8080\nx-a: 1\r\n\r\n".to_vec();
    let fields = |n: usize| (0..n).map(|i| format!("x-{i}: v\r\n")).collect::<String>();
    let too_many = get("/too-many", &fields(MAX_HEADERS));
    let too_big = get(
        "/too-big",
        &format!("x-big: {}\r\n", "a".repeat(MAX_HEADER_BYTES)),
    );
    for (what, bad, status) in [
        ("a bare LF ending the request line", bare_lf_line, 400),
        ("a bare LF ending a field", bare_lf_field, 400),
        ("more than max_headers fields", too_many, 431),
        ("a head over max_header_bytes", too_big, 431),
    ] {
        let got = exchange(&m.a, m.vip, &bad);
        assert_eq!(
            (&got.statuses[..], got.closed),
            (&[status][..], true),
            "{what} alone"
        );
        // After a lean request on the same connection, pipelined.
        let mut burst = get("/before", "");
        burst.extend(&bad);
        let got = exchange(&m.a, m.vip, &burst);
        assert_eq!(
            (&got.statuses[..], got.closed),
            (&[200, status][..], true),
            "{what} after a lean request"
        );
    }
    // At the limit: served (lean), and the app sees it.
    let at_limit = get(
        "/at-limit",
        &format!("{}Connection: close\r\n", fields(MAX_HEADERS - 2)),
    );
    let r = m.conn(|c| c.request(&at_limit));
    assert_eq!(r.status, 200, "{}", r.head);
    assert_lean(&r, "a head at max_headers");
    // Once /at-limit has arrived, all that was going to has: only the good requests did.
    assert_eq!(
        m.seen_since(before),
        [
            "GET /before",
            "GET /before",
            "GET /before",
            "GET /before",
            "GET /at-limit"
        ]
    );
}

#[test]
fn a_service_with_an_instance_on_another_host_reaches_both_on_one_connection() {
    let net = Net::new();
    let etcd = Etcd::start(&net);
    let a = net.host("a");
    let b = net.host("b");
    let app_a = Backend::http(&a, 18080, "a\n");
    let app_b = Backend::http(&b, 18080, "b\n");
    let agent_a = agent(&a, &etcd, AgentOpts::new().service("orders-1", ORDERS));
    let _agent_b = agent(&b, &etcd, AgentOpts::new().service("orders-2", ORDERS));
    wait_until(
        Duration::from_secs(10),
        "both instances in a's route",
        || {
            agent_a.status()["services"]["orders"]["endpoints"]
                .as_array()
                .is_some_and(|e| e.len() == 2)
        },
    );
    let vip = vip(&agent_a, "orders", 8080);
    // The lean path serves both (same-host answers keep the app's header case, which shows
    // which path carried them; a peer's come over HTTP/2, lowercase either way), and the
    // client's connection carries on from one to the other.
    a.in_ns(|| {
        let mut c = RawConn::connect(vip);
        wait_until(Duration::from_secs(10), "both instances answer", || {
            let r = c.request(&get("/", ""));
            assert_eq!(r.status, 200, "{}", r.head);
            match r.text().as_str() {
                "a\n" => assert_lean(&r, "same-host answer"),
                "b\n" => assert_eq!(r.header("content-length"), Some("2"), "{}", r.head),
                other => panic!("unexpected body {other:?}"),
            }
            app_a.request_count() > 0 && app_b.request_count() > 0
        });
    });
}

#[test]
fn answers_from_another_host_keep_their_framing_on_the_lean_path() {
    let net = Net::new();
    let etcd = Etcd::start(&net);
    let a = net.host("a");
    let b = net.host("b");
    let app_b = Backend::http(&b, 18080, "b\n");
    let agent_a = agent(&a, &etcd, AgentOpts::new());
    let _agent_b = agent(&b, &etcd, AgentOpts::new().service("orders-2", ORDERS));
    let vip = vip(&agent_a, "orders", 8080);
    a.in_ns(|| {
        let mut c = RawConn::connect(vip);
        // A body by length, one the app sent chunked (decoded into HTTP/2 DATA by b, chunked
        // again for this HTTP/1.1 client), a HEAD, and an empty answer, on one connection.
        let sized = c.request(&get("/bytes?n=100000", ""));
        assert_eq!(sized.status, 200, "{}", sized.head);
        assert_eq!(
            sized.header("content-length"),
            Some("100000"),
            "{}",
            sized.head
        );
        assert_eq!(sized.body, Backend::bytes(100_000));
        let chunked = c.request(&get("/chunked?n=70000", ""));
        assert_eq!(chunked.status, 200, "{}", chunked.head);
        assert_eq!(
            chunked.header("transfer-encoding"),
            Some("chunked"),
            "{}",
            chunked.head
        );
        assert!(
            chunked.header("content-length").is_none(),
            "{}",
            chunked.head
        );
        assert_eq!(chunked.body, Backend::bytes(70_000));
        c.send(&head("/bytes?n=5"));
        let headed = c.response(true);
        assert_eq!(headed.status, 200, "{}", headed.head);
        assert_eq!(
            headed.header("content-length"),
            Some("5"),
            "{}",
            headed.head
        );
        assert!(headed.body.is_empty());
        let empty = c.request(&get("/empty?status=404", ""));
        assert_eq!(empty.status, 404, "{}", empty.head);
        assert!(empty.body.is_empty());
        let after = c.request(&get("/", ""));
        assert_eq!(after.text(), "b\n");
    });
    let paths: Vec<String> = app_b
        .requests()
        .iter()
        .map(|r| r["path"].to_string())
        .collect();
    assert!(paths.iter().any(|p| p.contains("/chunked")), "{paths:?}");
}
