//! The guard in front of a real hyper HTTP/1 server, configured as the outbound configures it;
//! and what hyper does alone, so a hyper upgrade that changes it shows up here.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use super::{REJECTED_HEAD, StrictH1};
use crate::outbound::Settings;
use crate::outbound::http::http1_server;

const MAX_HEAD: usize = 1024;

fn settings() -> Settings {
    Settings {
        connect_timeout: Duration::from_secs(1),
        request_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(1),
        header_read_timeout: Duration::from_secs(5),
        max_headers: 100,
        max_header_bytes: MAX_HEAD,
    }
}

/// What the app got: `METHOD path body`, one per request.
type Seen = Arc<Mutex<Vec<String>>>;

/// Serves one connection (guarded or not) whose client is returned.
fn serve(guarded: bool) -> (DuplexStream, Seen) {
    let (client, server) = tokio::io::duplex(1 << 16);
    let seen = Seen::default();
    let svc = {
        let seen = seen.clone();
        service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            let seen = seen.clone();
            async move {
                let line = format!("{} {}", req.method(), req.uri());
                let body = req.into_body().collect().await?.to_bytes();
                let body = String::from_utf8_lossy(&body).into_owned();
                seen.lock().expect("lock").push(format!("{line} {body}"));
                Ok::<_, hyper::Error>(hyper::Response::new(Full::new(Bytes::from_static(b"ok"))))
            }
        })
    };
    tokio::spawn(async move {
        let builder = http1_server(&settings());
        let _ = if guarded {
            let io = TokioIo::new(StrictH1::new(server, MAX_HEAD));
            builder.serve_connection(io, svc).await
        } else {
            builder.serve_connection(TokioIo::new(server), svc).await
        };
    });
    (client, seen)
}

/// Writes `input` (in pieces of `step` bytes) and reads until the server closes; the statuses
/// of the responses and the requests the app got. Panics if the server does not close in 5 s.
async fn exchange_in(input: &[u8], step: usize, guarded: bool) -> (Vec<u16>, Vec<String>) {
    let (mut client, seen) = serve(guarded);
    for piece in input.chunks(step) {
        if client.write_all(piece).await.is_err() {
            break; // the server closed while bytes were still coming
        }
    }
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut out))
        .await
        .expect("the server closes the connection")
        .expect("read");
    let text = String::from_utf8_lossy(&out);
    let statuses = text
        .match_indices("HTTP/1.1 ")
        .filter_map(|(i, m)| text.get(i + m.len()..i + m.len() + 3)?.parse().ok())
        .collect();
    let seen = seen.lock().expect("lock").clone();
    (statuses, seen)
}

async fn exchange(input: &str, guarded: bool) -> (Vec<u16>, Vec<String>) {
    exchange_in(input.as_bytes(), input.len().max(1), guarded).await
}

const CLOSE: &str = "GET /last HTTP/1.1\r\nconnection: close\r\n\r\n";

fn many_headers(n: usize) -> String {
    let fields: String = (0..n).map(|i| format!("x-{i}: v\r\n")).collect();
    format!("GET / HTTP/1.1\r\n{fields}\r\n")
}

/// Each smuggling case, as a head followed by a few body bytes.
const SMUGGLING: &[(&str, &str)] = &[
    (
        "CL+TE",
        "POST / HTTP/1.1\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
    ),
    (
        "TE+CL",
        "POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\ncontent-length: 5\r\n\r\n0\r\n\r\n",
    ),
    (
        "differing CL",
        "POST / HTTP/1.1\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello!",
    ),
    (
        "TE gzip",
        "POST / HTTP/1.1\r\ntransfer-encoding: gzip\r\n\r\nhello",
    ),
    (
        "TE chunked, gzip",
        "POST / HTTP/1.1\r\ntransfer-encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
    ),
    ("obs-fold", "GET / HTTP/1.1\r\nx-a: 1\r\n folded\r\n\r\n"),
    (
        "bare LF in the request line",
        "GET / HTTP/1.1\nhost: a\r\n\r\n",
    ),
    (
        "bare LF in a header line",
        "GET / HTTP/1.1\r\nhost: a\n\r\n",
    ),
    (
        "NUL in a header value",
        "GET / HTTP/1.1\r\nx-a: a\0b\r\n\r\n",
    ),
];

#[tokio::test]
async fn hyper_alone_refuses_some_smuggling_and_takes_the_rest() {
    for (what, input) in SMUGGLING {
        let (statuses, seen) = exchange(&format!("{input}{CLOSE}"), false).await;
        match *what {
            // The gaps the guard closes: hyper takes these and passes them on.
            "CL+TE" | "TE+CL" | "bare LF in the request line" | "bare LF in a header line" => {
                assert_eq!(statuses.first(), Some(&200), "{what}: {statuses:?}");
                assert!(!seen.is_empty(), "{what}");
            }
            _ => assert_eq!((statuses, seen), (vec![400], vec![]), "{what}"),
        }
    }
    // The fixed head the guard substitutes is one hyper refuses.
    let rejected = String::from_utf8_lossy(REJECTED_HEAD);
    assert_eq!(exchange(&rejected, false).await, (vec![400], vec![]));
}

#[tokio::test]
async fn every_smuggling_case_gets_400_and_a_close_and_reaches_nothing() {
    for (what, input) in SMUGGLING {
        for step in [input.len(), 1] {
            let got = exchange_in(input.as_bytes(), step, true).await;
            assert_eq!(got, (vec![400], vec![]), "{what} in steps of {step}");
        }
    }
}

#[tokio::test]
async fn limits_get_431() {
    for guarded in [false, true] {
        let (statuses, seen) = exchange(&many_headers(101), guarded).await;
        assert_eq!((statuses, seen), (vec![431], vec![]), "101 headers");
        let big = format!("GET / HTTP/1.1\r\nx: {}\r\n\r\n", "a".repeat(MAX_HEAD));
        assert_eq!(exchange(&big, guarded).await, (vec![431], vec![]), "big");
        // Never complete, and bigger than the limit.
        let endless = format!("GET / HTTP/1.1\r\nx: {}", "a".repeat(2 * MAX_HEAD));
        assert_eq!(exchange(&endless, guarded).await, (vec![431], vec![]));
    }
    // At the limits: served.
    let (statuses, _) = exchange(
        &many_headers(99).replace("\r\n\r\n", "\r\nconnection: close\r\n\r\n"),
        true,
    )
    .await;
    assert_eq!(statuses, vec![200]);
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_before_the_400() {
    let input = format!(
        "GET /a HTTP/1.1\r\n\r\nPOST /b HTTP/1.1\r\ncontent-length: 5\r\n\r\nhello\
         POST /c HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n\
         5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-trailer: t\r\n\r\n\
         POST /smuggled HTTP/1.1\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n\
         0\r\n\r\n{CLOSE}"
    );
    let want = (
        vec![200, 200, 200, 400],
        vec![
            "GET /a ".to_owned(),
            "POST /b hello".to_owned(),
            "POST /c hello world".to_owned(),
        ],
    );
    for step in [input.len(), 1, 13] {
        assert_eq!(
            exchange_in(input.as_bytes(), step, true).await,
            want,
            "steps of {step}"
        );
    }
    // Without the bad one, all are served, in one write or byte by byte.
    let good =
        format!("GET /a HTTP/1.1\r\n\r\nPOST /b HTTP/1.1\r\ncontent-length: 2\r\n\r\nhi{CLOSE}");
    for step in [good.len(), 1] {
        let (statuses, seen) = exchange_in(good.as_bytes(), step, true).await;
        assert_eq!(statuses, vec![200, 200, 200]);
        assert_eq!(seen, vec!["GET /a ", "POST /b hi", "GET /last "]);
    }
}

#[tokio::test]
async fn a_broken_chunked_body_ends_the_connection() {
    let input = format!(
        "POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nx: 1\n\r\n{CLOSE}"
    );
    let (_, seen) = exchange(&input, true).await;
    // The body never completed, so no request with it was taken; nothing after it was read.
    assert!(seen.is_empty(), "{seen:?}");
}
