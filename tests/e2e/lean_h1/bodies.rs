//! Bodies on the lean path: request bodies it buffers (and larger ones it hands over), response
//! bodies relayed as they come, chunked framing verbatim, and answers without a body.

use hostmesh_tests::{AgentOpts, Backend, RawResponse, pseudo_random};

use super::{assert_lean, chunked_wire, get, head, lean, one_host, post};

#[test]
fn request_bodies_arrive_intact_and_larger_ones_go_to_hyper() {
    let m = one_host(AgentOpts::new());
    let small = pseudo_random(1000, 1);
    // The largest body the lean path takes, in two writes.
    let limit = pseudo_random(64 * 1024, 2);
    let large = pseudo_random(100 * 1024, 3);
    let (r_small, r_limit, r_large, after) = m.conn(|c| {
        let r_small = c.request(&post("/echo", &small, ""));
        let req = post("/echo", &limit, "");
        let (first, rest) = req.split_at(req.len() / 2);
        c.send(first);
        let r_limit = c.request(rest);
        let r_large = c.request(&post("/echo", &large, ""));
        (r_small, r_limit, r_large, c.request(&get("/after", "")))
    });
    assert_echoed(&r_small, &small, "1000 bytes");
    assert_lean(&r_small, "a 1000-byte POST");
    assert_echoed(&r_limit, &limit, "64 KiB");
    assert_lean(&r_limit, "a 64 KiB POST");
    // Over 64 KiB: hyper's path streams it.
    assert_echoed(&r_large, &large, "100 KiB");
    assert!(
        !lean(&r_large),
        "a 100 KiB body was not handed over:\n{}",
        r_large.head
    );
    assert_eq!((after.status, after.text()), (200, "ok\n".to_owned()));
}

#[test]
fn a_10_mib_response_and_a_chunked_one_arrive_intact_and_as_they_come() {
    let m = one_host(AgentOpts::new());
    let n = 10 * 1024 * 1024;
    let (big, chunked, after) = m.conn(|c| {
        let big = c.request(&get(&format!("/bytes?n={n}"), ""));
        let chunked = c.request(&get("/chunked?n=1000000&size=4096", ""));
        c.send(&get("/after", ""));
        (big, chunked, c.response(false))
    });
    assert_eq!(big.status, 200, "{}", big.head);
    assert_lean(&big, "GET /bytes");
    assert_eq!(big.body.len(), n);
    assert!(big.body == Backend::bytes(n), "10 MiB arrived altered");

    assert_eq!(chunked.status, 200, "{}", chunked.head);
    assert_lean(&chunked, "GET /chunked");
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
    // Relayed as the app framed it: chunk sizes, extensions and trailer included.
    assert!(
        chunked.wire_body == chunked_wire(1_000_000, 4096),
        "the chunked body was altered ({} bytes on the wire)",
        chunked.wire_body.len()
    );
    assert_eq!((after.status, after.text()), (200, "ok\n".to_owned()));

    // The first chunk reaches the client while the app still holds back the rest.
    let first = chunked_wire(1000, 1000);
    let first = &first[..first.len() - b"0\r\nx-done: 1\r\n\r\n".len()];
    let held = m.conn(|c| {
        c.send(&get("/chunked?n=100000&size=1000&hold=1", ""));
        c.wait_for_bytes("the first chunk", |got| {
            got.windows(first.len()).any(|w| w == first)
        });
        m.app.release();
        c.response(false)
    });
    assert_eq!(held.status, 200, "{}", held.head);
    assert!(
        held.wire_body == chunked_wire(100_000, 1000),
        "the held body was altered"
    );
}

#[test]
fn a_chunked_response_goes_on_without_the_content_length_beside_it() {
    let m = one_host(AgentOpts::new());
    // RFC 9112 §6.3: Transfer-Encoding overrides Content-Length, and an intermediary that
    // forwards such a message removes the Content-Length first.
    let (r, next) = m.conn(|c| {
        let r = c.request(&get("/chunked?n=100&size=10&cl=5", ""));
        c.send(&get("/next", ""));
        (r, c.response(false))
    });
    assert_eq!(r.status, 200, "{}", r.head);
    assert_lean(&r, "GET /chunked");
    assert!(r.body == Backend::bytes(100), "{:?}", r.text());
    assert_eq!(r.header("transfer-encoding"), Some("chunked"), "{}", r.head);
    assert_eq!(
        r.header("content-length"),
        None,
        "both framings reached the client:\n{}",
        r.head
    );
    assert_eq!((next.status, next.text()), (200, "ok\n".to_owned()));
}

#[test]
fn head_204_and_304_answers_leave_the_connection_usable() {
    let m = one_host(AgentOpts::new());
    let (rs, last) = m.conn(|c| {
        let mut rs = Vec::new();
        for (req, is_head) in [
            (head("/"), true),
            (get("/empty?status=204", ""), false),
            (get("/empty?status=304", ""), false),
            (head("/bytes?n=5"), true),
        ] {
            c.send(&req);
            rs.push(c.response(is_head));
        }
        c.send(&get("/last", ""));
        (rs, c.response(false))
    });
    let statuses: Vec<u16> = rs.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200, 204, 304, 200]);
    for r in &rs {
        assert_lean(r, "a bodiless answer");
    }
    assert_eq!(rs[0].header("content-length"), Some("3"), "{}", rs[0].head);
    assert_eq!(rs[3].header("content-length"), Some("5"), "{}", rs[3].head);
    // The next response on the connection comes whole and right after: nothing was waited for
    // or left over.
    assert_eq!((last.status, last.text()), (200, "ok\n".to_owned()));
    assert_lean(&last, "GET after the bodiless answers");
}

/// `/echo` sent `sent` back whole.
#[track_caller]
fn assert_echoed(r: &RawResponse, sent: &[u8], what: &str) {
    assert_eq!(r.status, 200, "{}", r.head);
    assert!(r.body == sent, "{what} echoed: {} back", r.body.len());
}
