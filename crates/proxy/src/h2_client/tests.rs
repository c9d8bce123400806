#![allow(clippy::unwrap_used)]

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;

use http_body_util::{BodyExt, Empty};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use super::*;
use crate::pool::WorkerPools;
use hostmesh_tls::PeerTls;

/// A peer answering every request 200 over h2c; the count of connections it accepted, and
/// a way to cut them all.
async fn peer() -> (String, Arc<AtomicUsize>, Arc<Mutex<JoinSet<()>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let conns = Arc::new(Mutex::new(JoinSet::new()));
    let (count, set) = (accepted.clone(), conns.clone());
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let svc = service_fn(|_req| async {
                Ok::<_, Infallible>(Response::new(http_body_util::Full::new(
                    bytes::Bytes::from_static(b"ok"),
                )))
            });
            let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(s), svc);
            set.lock().unwrap().spawn(async move {
                let _ = conn.await;
            });
        }
    });
    (format!("http://peer-b@{addr}/x"), accepted, conns)
}

fn client() -> H2Client {
    let pools = WorkerPools::new(
        1,
        Duration::from_secs(1),
        Duration::from_secs(30),
        PeerTls::disabled(),
    );
    pools.get().peers.clone()
}

fn get(uri: &str) -> Request<Lent> {
    let empty = Empty::new().map_err(|never| match never {});
    let mut req = Request::new(crate::body::lend(crate::body::boxed(empty)).0);
    *req.uri_mut() = uri.parse().unwrap();
    req
}

fn open(client: &H2Client) -> usize {
    let conns = client.conns.lock().unwrap();
    conns
        .by_authority
        .values()
        .filter(
            |p| matches!(p.attempt.get(), Some(Ok(s)) if !s.state.closed.load(Ordering::Relaxed)),
        )
        .count()
}

#[tokio::test]
async fn requests_share_one_connection_and_a_closed_one_is_replaced() {
    let (uri, accepted, conns) = peer().await;
    let client = client();
    let mut calls = JoinSet::new();
    for _ in 0..20 {
        let (client, req) = (client.clone(), get(&uri));
        calls.spawn(async move { client.request(req).await.map(|r| r.status()) });
    }
    while let Some(status) = calls.join_next().await {
        assert_eq!(status.unwrap().unwrap(), 200);
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "one connection for all");

    conns.lock().unwrap().abort_all();
    tokio::time::timeout(Duration::from_secs(5), async {
        while open(&client) > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the client saw its connection close");
    let resp = client.request(get(&uri)).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(accepted.load(Ordering::SeqCst), 2, "a new connection");
}

#[tokio::test]
async fn a_peer_that_is_not_there_never_saw_the_request() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let err = client()
        .request(get(&format!("http://peer-b@{addr}/x")))
        .await
        .unwrap_err();
    assert!(err.never_reached(), "{err}");
}

/// A request body fed by the test, a chunk at a time; it ends when the sender is dropped.
struct Fed(tokio::sync::mpsc::UnboundedReceiver<bytes::Bytes>);

impl hyper::body::Body for Fed {
    type Data = bytes::Bytes;
    type Error = crate::body::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|c| Ok(hyper::body::Frame::data(c))))
    }
}

fn post(uri: &str, body: Fed) -> Request<Lent> {
    let mut req = Request::new(crate::body::lend(crate::body::boxed(body)).0);
    *req.method_mut() = Method::POST;
    *req.uri_mut() = uri.parse().unwrap();
    req
}

/// A peer that answers every request at once, before its body, and then reports how its body
/// ended: the bytes read, or the error (a reset).
async fn answers_first() -> (
    String,
    tokio::sync::mpsc::UnboundedReceiver<Result<usize, String>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (report, reports) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let report = report.clone();
            let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                let report = report.clone();
                async move {
                    tokio::spawn(async move {
                        let ended = req.into_body().collect().await;
                        let _ = report.send(
                            ended
                                .map(|c| c.to_bytes().len())
                                .map_err(|e| format!("{e:?}")),
                        );
                    });
                    Ok::<_, Infallible>(Response::new(Empty::<bytes::Bytes>::new()))
                }
            });
            let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(s), svc);
            tokio::spawn(conn);
        }
    });
    (format!("http://peer-b@{addr}/x"), reports)
}

#[tokio::test]
async fn a_request_body_goes_on_after_the_response_head() {
    let (uri, mut reports) = answers_first().await;
    let (feed, fed) = tokio::sync::mpsc::unbounded_channel();
    feed.send(bytes::Bytes::from_static(b"first")).unwrap();
    let resp = client().request(post(&uri, Fed(fed))).await.unwrap();
    assert_eq!(resp.status(), 200);
    // The answer came while the body was still open: the rest of it still goes.
    feed.send(bytes::Bytes::from(vec![b'x'; 100_000])).unwrap();
    drop(feed);
    let read = tokio::time::timeout(Duration::from_secs(5), reports.recv())
        .await
        .expect("the peer read the body to its end")
        .unwrap();
    assert_eq!(read, Ok(100_005));
}

#[tokio::test]
async fn a_request_given_up_before_its_answer_resets_its_stream() {
    // A peer that reads the body before it answers, so no answer comes while the body is open.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (report, mut reports) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let (s, _) = listener.accept().await.unwrap();
        let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
            let report = report.clone();
            async move {
                let ended = req.into_body().collect().await;
                let _ = report.send(ended.map(|_| ()).map_err(|e| format!("{e:?}")));
                Ok::<_, Infallible>(Response::new(Empty::<bytes::Bytes>::new()))
            }
        });
        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(s), svc)
            .await;
    });
    let (feed, fed) = tokio::sync::mpsc::unbounded_channel();
    feed.send(bytes::Bytes::from_static(b"never finished"))
        .unwrap();
    let client = client();
    let uri = format!("http://peer-b@{addr}/x");
    let given_up = tokio::time::timeout(
        Duration::from_millis(200),
        client.request(post(&uri, Fed(fed))),
    )
    .await;
    assert!(given_up.is_err(), "no answer while the body is open");
    let ended = tokio::time::timeout(Duration::from_secs(5), reports.recv())
        .await
        .expect("the peer saw the stream end")
        .unwrap();
    let err = ended.expect_err("a reset, not the body's end");
    assert!(err.contains("CANCEL"), "{err}");
    drop(feed);
}

#[tokio::test]
async fn a_peer_that_stops_answering_pings_is_given_up() {
    // A peer that takes the request and then never reads its connection again.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (s, _) = listener.accept().await.unwrap();
        let mut conn = h2::server::handshake(s).await.unwrap();
        let stream = conn.accept().await;
        std::future::pending::<()>().await;
        drop((conn, stream));
    });
    let mut client = client();
    client.pings = Pings {
        interval: Duration::from_millis(50),
        timeout: Duration::from_millis(100),
    };
    let uri = format!("http://peer-b@{addr}/x");
    let err = tokio::time::timeout(Duration::from_secs(5), client.request(get(&uri)))
        .await
        .expect("given up at the unanswered ping, not left waiting")
        .unwrap_err();
    assert!(matches!(err, H2Error::Stream(_)), "{err}");
    assert_eq!(open(&client), 0, "the connection is not used again");
}
