//! Request forms at the edge of the lean path: `Expect: 100-continue` and absolute-form targets
//! are hyper's (handed over, then answered in full), an extension method is the lean path's.

use hostmesh_tests::AgentOpts;

use super::{assert_lean, get, lean, one_host};

#[test]
fn expect_100_continue_gets_100_then_the_answer_and_the_body_arrives() {
    let m = one_host(AgentOpts::new());
    let before = m.app.request_count();
    let (first, interim, last, next) = m.conn(|c| {
        let first = c.request(&get("/first", ""));
        c.send(
            b"POST /echo HTTP/1.1\r\nHost: orders.mesh:8080\r\nContent-Length: 5\r\n\
              Expect: 100-continue\r\n\r\n",
        );
        // The client waits for the go-ahead before its body.
        let interim = c.response(false);
        let last = c.request(b"hello");
        c.send(&get("/next", ""));
        (first, interim, last, c.response(false))
    });
    assert_lean(&first, "GET /first");
    assert_eq!(interim.status, 100, "{}", interim.head);
    assert_eq!(
        (last.status, last.text()),
        (200, "hello".to_owned()),
        "{}",
        last.head
    );
    assert!(!lean(&last), "Expect was not handed over:\n{}", last.head);
    assert_eq!(
        (next.status, next.text()),
        (200, "ok\n".to_owned()),
        "{}",
        next.head
    );
    assert_eq!(m.seen_since(before), ["GET /first", "GET /next"]);
}

#[test]
fn an_absolute_form_request_is_answered_and_the_app_sees_the_origin_form() {
    let m = one_host(AgentOpts::new());
    let before = m.app.request_count();
    let (first, absolute) = m.conn(|c| {
        let first = c.request(&get("/first", ""));
        c.send(b"GET http://orders.mesh:8080/x?y=1 HTTP/1.1\r\nHost: orders.mesh:8080\r\n\r\n");
        (first, c.response(false))
    });
    assert_lean(&first, "GET /first");
    assert_eq!(
        (absolute.status, absolute.text()),
        (200, "ok\n".to_owned()),
        "{}",
        absolute.head
    );
    assert!(
        !lean(&absolute),
        "an absolute-form request was not handed over:\n{}",
        absolute.head
    );
    assert_eq!(m.seen_since(before), ["GET /first", "GET /x?y=1"]);
}

#[test]
fn an_extension_method_goes_through_the_lean_path() {
    let m = one_host(AgentOpts::new());
    let before = m.app.request_count();
    let rs = m.conn(|c| {
        let mut rs = Vec::new();
        for req in [
            b"PROPFIND /dav HTTP/1.1\r\nHost: orders.mesh:8080\r\nDepth: 1\r\n\r\n".to_vec(),
            b"PROPFIND /dav/body HTTP/1.1\r\nHost: orders.mesh:8080\r\nDepth: 0\r\n\
              Content-Type: application/xml\r\nContent-Length: 6\r\n\r\n<a/>\r\n"
                .to_vec(),
            get("/after", ""),
        ] {
            c.send(&req);
            rs.push(c.response(false));
        }
        rs
    });
    for r in &rs {
        assert_eq!((r.status, r.text()), (200, "ok\n".to_owned()), "{}", r.head);
        assert_lean(r, "PROPFIND");
    }
    assert_eq!(
        m.seen_since(before),
        ["PROPFIND /dav", "PROPFIND /dav/body", "GET /after"]
    );
    let with_body = &m.app.requests()[before + 1];
    assert_eq!(with_body["body_len"], 6);
    assert_eq!(with_body["headers"]["depth"], "0");
}
