#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::Request;
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;

fn settings() -> Settings {
    Settings {
        connect_timeout: Duration::from_secs(1),
        request_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(30),
        header_read_timeout: Duration::from_secs(5),
        max_headers: 100,
        max_header_bytes: 65536,
    }
}

/// An app answering the requests on each connection with `answers` in turn (then closing; an
/// empty answer closes at once), and
/// what it received: per connection, the request heads.
async fn app(answers: &'static [&'static str]) -> (SocketAddr, Arc<Mutex<Vec<Vec<String>>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let conn = {
                let mut seen = record.lock().unwrap();
                seen.push(Vec::new());
                seen.len() - 1
            };
            let record = record.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                for answer in answers {
                    let end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        let mut more = [0u8; 4096];
                        match s.read(&mut more).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&more[..n]),
                        }
                    };
                    let mut head: Vec<u8> = buf.drain(..end).collect();
                    // The body, by its length, is recorded after the head.
                    let text = String::from_utf8_lossy(&head).to_lowercase();
                    let length = text
                        .split("content-length: ")
                        .nth(1)
                        .and_then(|v| v.split("\r\n").next()?.parse::<usize>().ok())
                        .unwrap_or(0);
                    while buf.len() < length {
                        let mut more = [0u8; 4096];
                        match s.read(&mut more).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&more[..n]),
                        }
                    }
                    head.extend(buf.drain(..length));
                    record.lock().unwrap()[conn].push(String::from_utf8(head).unwrap());
                    // An empty answer: close without one.
                    if answer.is_empty() || s.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, seen)
}

fn parts(method: &str, host: Option<&str>) -> Parts {
    let mut b = Request::builder()
        .method(method)
        .uri("/items?x=1")
        .header("x-keep", "1");
    if let Some(h) = host {
        b = b.header(HOST, h);
    }
    b.body(()).unwrap().into_parts().0
}

async fn call(
    addr: SocketAddr,
    method: &str,
    replayable: bool,
) -> Result<(u16, HeaderMap, Result<bytes::Bytes, String>), UpstreamError> {
    let parts = parts(method, Some("orders.mesh"));
    let authority = Authority::try_from(addr.to_string()).unwrap();
    let path = PathAndQuery::from_static("/items?x=1");
    let resp = send(
        &parts,
        None,
        &path,
        &authority,
        addr,
        &settings(),
        replayable,
        b"",
        soon(),
    )
    .await
    .expect("within the deadline")?;
    let (head, body) = resp.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| e.to_string());
    Ok((head.status.as_u16(), head.headers, body))
}

#[tokio::test]
async fn a_response_by_length_comes_whole_and_its_connection_is_used_again() {
    let (addr, seen) = app(&[
        "HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: keep-alive, x-private\r\nx-private: 1\r\nx-app: a\r\n\r\nhello",
        "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
    ])
    .await;
    let (status, fields, body) = call(addr, "GET", true).await.unwrap();
    assert_eq!((status, body.unwrap().as_ref()), (200, &b"hello"[..]));
    assert_eq!(fields.get("x-app").unwrap(), "a");
    assert_eq!(fields.get("content-length").unwrap(), "5");
    for hop in ["connection", "x-private"] {
        assert!(fields.get(hop).is_none(), "{hop} passed on");
    }
    assert_eq!(idle::kept(), 1);
    let (status, _, body) = call(addr, "GET", true).await.unwrap();
    assert_eq!((status, body.unwrap().len()), (404, 0));
    assert_eq!(
        idle::kept(),
        1,
        "an empty body gives the connection back at once"
    );
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1, "one connection for both: {seen:?}");
    assert_eq!(
        seen[0][0],
        "GET /items?x=1 HTTP/1.1\r\nx-keep: 1\r\nhost: orders.mesh\r\n\r\n"
    );
}

#[tokio::test]
async fn a_chunked_response_is_decoded_and_a_missing_host_is_the_apps_address() {
    let (addr, seen) = app(&[
        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 99\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nx-trailer: t\r\n\r\n",
    ])
    .await;
    let parts = parts("GET", None);
    let authority = Authority::try_from(addr.to_string()).unwrap();
    let resp = send(
        &parts,
        None,
        &PathAndQuery::from_static("/"),
        &authority,
        addr,
        &settings(),
        true,
        b"",
        soon(),
    )
    .await
    .expect("within the deadline")
    .unwrap();
    assert!(resp.headers().get("transfer-encoding").is_none());
    assert!(
        resp.headers().get("content-length").is_none(),
        "a length beside a coding is dropped"
    );
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body.as_ref(), b"hello world");
    assert_eq!(idle::kept(), 1);
    let head = seen.lock().unwrap()[0][0].clone();
    assert_eq!(
        head,
        format!("GET / HTTP/1.1\r\nhost: {addr}\r\nx-keep: 1\r\n\r\n")
    );
}

#[tokio::test]
async fn a_response_cut_short_fails_rather_than_ends_early() {
    let (addr, _) = app(&["HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhalf"]).await;
    let (status, _, body) = call(addr, "GET", true).await.unwrap();
    assert_eq!(status, 200);
    assert!(body.unwrap_err().contains("cut its response short"));
    let (addr, _) = app(&["HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n"]).await;
    let (_, _, body) = call(addr, "GET", true).await.unwrap();
    assert!(body.unwrap_err().contains("chunked"));
    assert_eq!(idle::kept(), 0);
}

#[tokio::test]
async fn a_body_until_close_ends_with_the_connection() {
    let (addr, _) = app(&["HTTP/1.1 200 OK\r\n\r\nall of it"]).await;
    let (_, _, body) = call(addr, "GET", true).await.unwrap();
    assert_eq!(body.unwrap().as_ref(), b"all of it");
    assert_eq!(idle::kept(), 0);
}

#[tokio::test]
async fn a_kept_connection_closed_under_a_request_is_retried_only_when_replayable() {
    // Each connection answers one request and closes under the next.
    let (addr, seen) = app(&["HTTP/1.1 204 No Content\r\n\r\n", ""]).await;
    let (status, _, _) = call(addr, "GET", true).await.unwrap();
    assert_eq!(status, 204);
    let (status, _, _) = call(addr, "GET", true).await.unwrap();
    assert_eq!(status, 204, "sent again on a new connection");
    assert_eq!(
        seen.lock()
            .unwrap()
            .iter()
            .map(Vec::len)
            .collect::<Vec<_>>(),
        [2, 1]
    );
    let err = call(addr, "POST", false).await.unwrap_err();
    assert!(err.before_response(), "{err}");
    assert_eq!(
        seen.lock()
            .unwrap()
            .iter()
            .map(Vec::len)
            .collect::<Vec<_>>(),
        [2, 2],
        "the POST was not sent again"
    );
}

#[tokio::test]
async fn a_refused_connection_never_reached_the_app() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let err = call(addr, "GET", true).await.unwrap_err();
    assert!(err.never_reached(), "{err}");
}

#[tokio::test]
async fn a_small_body_goes_with_the_head_and_a_kept_connection_takes_the_next() {
    let (addr, seen) = app(&[
        "HTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n",
        "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
    ])
    .await;
    let mut parts = parts("POST", Some("orders.mesh"));
    parts
        .headers
        .insert(http::header::CONTENT_LENGTH, HeaderValue::from_static("5"));
    let authority = Authority::try_from(addr.to_string()).unwrap();
    let path = PathAndQuery::from_static("/orders");
    let resp = send(
        &parts,
        None,
        &path,
        &authority,
        addr,
        &settings(),
        false,
        b"hello",
        soon(),
    )
    .await
    .expect("within the deadline")
    .unwrap();
    assert_eq!(resp.status(), 201);
    let resp = send(
        &parts,
        None,
        &path,
        &authority,
        addr,
        &settings(),
        false,
        b"again",
        soon(),
    )
    .await
    .expect("within the deadline")
    .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = seen.lock().unwrap();
    assert_eq!(
        *seen,
        [[
            "POST /orders HTTP/1.1\r\nx-keep: 1\r\nhost: orders.mesh\r\ncontent-length: 5\r\n\r\nhello",
            "POST /orders HTTP/1.1\r\nx-keep: 1\r\nhost: orders.mesh\r\ncontent-length: 5\r\n\r\nagain",
        ]]
    );
}

#[test]
fn bodies_without_a_small_length_are_not_taken() {
    use http_body_util::{Empty, Full};
    let get = parts("GET", None);
    assert!(takes(&get, &Empty::<bytes::Bytes>::new()));
    assert!(takes(&get, &Full::new(bytes::Bytes::from_static(b"small"))));
    let large = Full::new(bytes::Bytes::from(vec![0u8; 64 * 1024 + 1]));
    assert!(!takes(&get, &large), "over 64 KiB");
    assert!(!takes(&get, &Unsized), "no length");
    let connect = parts("CONNECT", None);
    assert!(!takes(&connect, &Empty::<bytes::Bytes>::new()));
}

/// A body of unknown length, as an HTTP/2 request without `content-length` has.
struct Unsized;

impl hyper::body::Body for Unsized {
    type Data = bytes::Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, std::io::Error>>> {
        std::task::Poll::Ready(None)
    }
}

/// A deadline no test here comes near.
fn soon() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(10)
}

#[tokio::test]
async fn an_app_that_does_not_answer_by_the_deadline_gets_none() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Takes the connection and never answers.
    let held = tokio::spawn(async move { listener.accept().await.map(|(s, _)| s) });
    let parts = parts("GET", Some("orders.mesh"));
    let authority = Authority::try_from(addr.to_string()).unwrap();
    let started = tokio::time::Instant::now();
    let resp = send(
        &parts,
        None,
        &PathAndQuery::from_static("/"),
        &authority,
        addr,
        &settings(),
        true,
        b"",
        started + Duration::from_millis(200),
    )
    .await;
    assert!(resp.is_none(), "{resp:?}");
    assert!(started.elapsed() >= Duration::from_millis(200));
    drop(held);
}

/// The head written from the peer's fields and `Added` is the one written from the map
/// `app_request::write_map` edits (the other legs' way): the same lines, whatever their order.
#[test]
fn the_head_from_the_peers_fields_is_the_edited_maps() {
    let parts = || {
        let mut req = Request::get("/p?q=1").body(()).unwrap().into_parts().0;
        for (n, v) in [
            ("host", "orders.mesh:8080"),
            ("te", "deflate"),
            ("te", "trailers, deflate"),
            ("te", "trailers"),
            ("x-hostmesh-dst", "orders/1"),
            ("x-hostmesh-src", "web-01"),
            ("x-hostmesh-version", "1"),
            ("x-hostmesh-timeout", "250ms"),
            ("x-hostmesh-caller", "evil"),
            ("forwarded", "for=192.0.2.1"),
            ("connection", "x-drop, close"),
            ("x-drop", "1"),
            ("keep-alive", "timeout=5"),
            ("x-keep", "1"),
            ("x-keep", "2"),
        ] {
            req.headers
                .append(HeaderName::from_static(n), HeaderValue::from_static(v));
        }
        req
    };
    let (caller, forwarded) = (
        HeaderValue::from_static("web-01"),
        HeaderValue::from_static("for=198.18.0.11"),
    );
    let timeout = hostmesh_wire::timeout_value(Duration::from_millis(240));
    let added = Added {
        caller: &caller,
        forwarded: &forwarded,
        timeout: &timeout,
        grpc: false,
    };
    let path = PathAndQuery::from_static("/p?q=1");
    let authority = Authority::from_static("127.0.0.1:8080");
    let lines = |head: Vec<u8>| {
        let text = String::from_utf8(head).unwrap();
        let mut lines: Vec<String> = text.split("\r\n").map(str::to_owned).collect();
        lines.sort();
        lines
    };
    let mut lean = Vec::new();
    write_head(&parts(), Some(&added), &path, &authority, &mut lean);
    let mut edited = parts();
    crate::app_request::write_map(&mut edited.headers, &added);
    let mut from_map = Vec::new();
    write_head(&edited, None, &path, &authority, &mut from_map);
    assert!(lean.ends_with(b"\r\n\r\n"));
    let lean = lines(lean);
    assert_eq!(lean, lines(from_map));
    for expected in [
        "GET /p?q=1 HTTP/1.1",
        "host: orders.mesh:8080",
        "te: trailers",
        "x-hostmesh-caller: web-01",
        "x-hostmesh-timeout: 240ms",
        "forwarded: for=198.18.0.11",
        "x-keep: 1",
        "x-keep: 2",
    ] {
        assert!(lean.iter().any(|l| l == expected), "{expected} in {lean:?}");
    }
    for gone in [
        "x-hostmesh-dst",
        "x-hostmesh-src",
        "x-drop",
        "keep-alive",
        "connection",
    ] {
        assert!(
            !lean.iter().any(|l| l.starts_with(gone)),
            "{gone} in {lean:?}"
        );
    }
}
