//! One app connection over many requests: pipelining, and when the connection ends.

use std::time::{Duration, Instant};

use hostmesh_tests::{AgentOpts, Backend, RawResponse};

use super::{assert_lean, get, head, one_host, post};
use crate::hardening::client_opts;

#[test]
fn pipelined_requests_are_answered_in_order_on_one_connection() {
    let m = one_host(AgentOpts::new());
    let before = m.app.request_count();
    let mut burst = get("/bytes?n=5", "");
    burst.extend(post("/echo", b"second", ""));
    burst.extend(head("/"));
    burst.extend(get("/chunked?n=30&size=7", ""));
    burst.extend(get("/empty?status=204", ""));
    burst.extend(get("/bytes?n=7", ""));
    let (rs, again) = m.conn(|c| {
        c.send(&burst);
        let rs: Vec<RawResponse> = [false, false, true, false, false, false]
            .into_iter()
            .map(|is_head| c.response(is_head))
            .collect();
        c.send(&get("/again", ""));
        (rs, c.response(false))
    });
    let got: Vec<(u16, String)> = rs.iter().map(|r| (r.status, r.text())).collect();
    assert_eq!(
        got,
        [
            (200, "01234".to_owned()),
            (200, "second".to_owned()),
            (200, String::new()),
            (200, String::from_utf8(Backend::bytes(30)).expect("ascii")),
            (204, String::new()),
            (200, "0123456".to_owned()),
        ]
    );
    for r in &rs {
        assert_lean(r, "a pipelined request");
    }
    assert_eq!((again.status, again.text()), (200, "ok\n".to_owned()));
    assert_eq!(
        m.seen_since(before),
        [
            "HEAD /",
            "GET /chunked?n=30&size=7",
            "GET /empty?status=204",
            "GET /again"
        ]
    );
}

/// A client that pipelines its requests and then shuts its sending side still gets every
/// answer, the last one included: on a connection that pipelines, the end of the stream says
/// the client sends nothing more, not that it left. (Elsewhere it is taken to have left, as
/// hyper's server and nginx do: `cancel.rs`.)
#[test]
fn pipelined_requests_then_a_half_close_are_all_answered() {
    let m = one_host(AgentOpts::new());
    // The app answers /hold after 500 ms unless its client leaves first.
    let mut burst = get("/hold?ms=500", "");
    burst.extend(get("/bytes?n=5", ""));
    let rs = m.conn(|c| {
        c.send(&burst);
        c.shut_write();
        [c.response(false), c.response(false)]
    });
    let got: Vec<(u16, String)> = rs.iter().map(|r| (r.status, r.text())).collect();
    assert_eq!(got, [(200, "ok\n".to_owned()), (200, "01234".to_owned())]);
    assert_eq!(m.app.gone(), Vec::<String>::new(), "the app's client left");
}

#[test]
fn a_close_ends_the_connection_only_when_the_client_the_framing_or_idleness_needs_it() {
    // header_read_timeout 1s: also how long an app connection may idle between requests.
    let m = one_host(client_opts());
    // The app closes its connection after answering: the client's goes on.
    let (closing, next) = m.conn(|c| {
        let closing = c.request(&get("/closing", ""));
        c.send(&get("/next", ""));
        (closing, c.response(false))
    });
    assert_eq!(
        (closing.status, closing.text()),
        (200, "closing\n".to_owned())
    );
    assert_lean(&closing, "GET /closing");
    assert!(closing.header("connection").is_none(), "{}", closing.head);
    assert_eq!((next.status, next.text()), (200, "ok\n".to_owned()));

    // A body framed by the app's close alone: the client's connection closes after it.
    let n = 200_000;
    let (until, closed) = m.conn(|c| {
        let r = c.request(&get(&format!("/untilclose?n={n}"), ""));
        (r, c.closes_within(Duration::from_secs(5)))
    });
    assert_eq!(until.status, 200, "{}", until.head);
    assert_lean(&until, "GET /untilclose");
    assert!(
        until.body == Backend::bytes(n),
        "{} bytes arrived",
        until.body.len()
    );
    assert_eq!(until.header("connection"), Some("close"), "{}", until.head);
    assert_eq!(closed, Ok(()));

    // The client says close: the answer says so, and the agent closes.
    let (r, closed) = m.conn(|c| {
        let r = c.request(&get("/bye", "Connection: close\r\n"));
        (r, c.closes_within(Duration::from_secs(5)))
    });
    assert_eq!((r.status, r.text()), (200, "ok\n".to_owned()));
    assert_lean(&r, "GET /bye");
    assert_eq!(r.header("connection"), Some("close"), "{}", r.head);
    assert_eq!(closed, Ok(()));

    // Idle after a request for header_read_timeout: closed without a word.
    let (r, idle, closed) = m.conn(|c| {
        let r = c.request(&get("/idle", ""));
        let answered = Instant::now();
        let closed = c.closes_within(Duration::from_secs(5));
        (r, answered.elapsed(), closed)
    });
    assert_eq!(r.status, 200, "{}", r.head);
    assert_lean(&r, "GET /idle");
    assert_eq!(closed, Ok(()));
    assert!(
        idle >= Duration::from_millis(900) && idle < Duration::from_secs(3),
        "closed after {idle:?} idle, header_read_timeout is 1s"
    );
}
