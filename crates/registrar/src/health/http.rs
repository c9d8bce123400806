//! `http = "/path"`: one `GET` against the target over a fresh HTTP/1.1 connection; 2xx passes.
//!
//! Deliberately minimal and strict:
//! - Redirects are not followed: a check that "passes" by landing on some other page (a login
//!   form, another host) tells us nothing about the app, so 3xx fails and names the Location.
//! - A fresh connection per probe, closed afterwards: a pooled connection could keep passing
//!   while the app no longer accepts new ones.
//! - The connection is driven inside the probe's own future, never a spawned task, so when the
//!   caller's timeout drops the probe, the socket is closed with it and nothing lingers.
//! - At most [`MAX_BODY`] bytes of a 2xx body are read and discarded: a health endpoint that
//!   streams a huge (or endless) body must not hold the probe until the timeout.

use std::net::SocketAddr;
use std::pin::pin;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::header::{CONNECTION, HOST, LOCATION, USER_AGENT};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::ProbeError;
use super::error::truncate;

/// How much of a 2xx response body is read before the probe declares success anyway.
const MAX_BODY: usize = 64 * 1024;

const AGENT: &str = concat!("hostmesh-health/", env!("CARGO_PKG_VERSION"));

/// Longest Location quoted back in a failure message; it comes from the app and ends up in logs.
const MAX_LOCATION: usize = 200;

pub(super) async fn probe(target: SocketAddr, path: &str) -> Result<(), ProbeError> {
    // Config validation should already guarantee this; an absolute URL here would make the
    // request line name some other host.
    if !path.starts_with('/') {
        return Err(ProbeError::RelativePath {
            path: path.to_owned(),
        });
    }
    let req = Request::builder()
        .method(Method::GET)
        .uri(path)
        .header(HOST, target.to_string())
        .header(USER_AGENT, AGENT)
        // One request per connection: tell the app not to keep an idle socket for us.
        .header(CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|error| ProbeError::BadPath {
            path: path.to_owned(),
            error,
        })?;

    let stream = TcpStream::connect(target)
        .await
        .map_err(|error| ProbeError::Connect { target, error })?;
    // Small request, latency matters more than batching.
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|error| ProbeError::Handshake { error })?;

    let exchange = async move {
        let resp = sender
            .send_request(req)
            .await
            .map_err(|error| ProbeError::Request { error })?;
        let status = resp.status();
        if status.is_redirection() {
            let status = status.as_u16();
            return Err(match resp.headers().get(LOCATION) {
                Some(loc) => {
                    let loc = String::from_utf8_lossy(loc.as_bytes());
                    ProbeError::Redirect {
                        status,
                        location: truncate(&loc, MAX_LOCATION).into_owned(),
                    }
                }
                None => ProbeError::RedirectWithoutLocation { status },
            });
        }
        if !status.is_success() {
            // The status says it all; no point reading an error page.
            return Err(ProbeError::Status {
                status: status.as_u16(),
            });
        }
        let mut body = resp.into_body();
        let mut seen = 0usize;
        while seen < MAX_BODY {
            match body.frame().await {
                None => break,
                Some(Ok(frame)) => seen += frame.data_ref().map_or(0, Bytes::len),
                // A 2xx whose body breaks off is not a healthy answer.
                Some(Err(error)) => {
                    return Err(ProbeError::Body {
                        status: status.as_u16(),
                        error,
                    });
                }
            }
        }
        Ok(())
    };

    let mut exchange = pin!(exchange);
    let mut conn = pin!(conn);
    tokio::select! {
        res = &mut exchange => res,
        // The connection finished first (the server closed it, or failed). Whatever it managed
        // to deliver is already queued for the exchange, which now completes promptly with the
        // response or with the error that explains it.
        _ = &mut conn => exchange.await,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::net::SocketAddr;
    use std::time::{Duration, Instant};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::task::JoinHandle;

    use hostmesh_config::spec::CheckKind;

    use super::super::probe;

    const TIMEOUT: Duration = Duration::from_secs(2);

    fn http(path: &str) -> CheckKind {
        CheckKind::Http {
            path: path.to_string(),
        }
    }

    /// Reads a request head (up to the blank line).
    async fn read_head(stream: &mut TcpStream) -> String {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 1024];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "client closed before finishing its request");
            buf.extend_from_slice(&chunk[..n]);
        }
        String::from_utf8(buf).unwrap()
    }

    /// A one-shot server: accepts one connection, reads the request head, writes `response`
    /// verbatim and closes. Resolves to the request head it received.
    async fn serve_once(response: impl Into<Vec<u8>>) -> (SocketAddr, JoinHandle<String>) {
        let response = response.into();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let head = read_head(&mut stream).await;
            stream.write_all(&response).await.unwrap();
            stream.shutdown().await.unwrap();
            head
        });
        (addr, task)
    }

    #[tokio::test]
    async fn ok_passes_and_sends_expected_request() {
        let (addr, server) = serve_once(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
        probe(&http("/healthz?full=1"), addr, TIMEOUT)
            .await
            .unwrap();
        let head = server.await.unwrap().to_ascii_lowercase();
        assert!(
            head.starts_with("get /healthz?full=1 http/1.1\r\n"),
            "{head}"
        );
        assert!(head.contains(&format!("\r\nhost: {addr}\r\n")), "{head}");
        let agent = format!(
            "\r\nuser-agent: hostmesh-health/{}\r\n",
            env!("CARGO_PKG_VERSION")
        );
        assert!(head.contains(&agent), "{head}");
    }

    #[tokio::test]
    async fn any_2xx_passes() {
        let (addr, _server) = serve_once(b"HTTP/1.1 204 No Content\r\n\r\n").await;
        probe(&http("/"), addr, TIMEOUT).await.unwrap();
    }

    #[tokio::test]
    async fn server_error_fails() {
        let (addr, _server) =
            serve_once(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\n\r\noops")
                .await;
        let err = probe(&http("/healthz"), addr, TIMEOUT).await.unwrap_err();
        assert_eq!(err.to_string(), "HTTP 500");
    }

    #[tokio::test]
    async fn redirect_fails_and_is_not_followed() {
        // Where the redirect points: a live server that must never see a request.
        let elsewhere = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let elsewhere_addr = elsewhere.local_addr().unwrap();
        let response = format!(
            "HTTP/1.1 301 Moved Permanently\r\nLocation: http://{elsewhere_addr}/healthz\r\n\
             Content-Length: 0\r\n\r\n"
        );
        let (addr, _server) = serve_once(response).await;

        let err = probe(&http("/healthz"), addr, TIMEOUT).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("HTTP 301 redirect to http://{elsewhere_addr}/healthz (not followed)")
        );
        let followed = tokio::time::timeout(Duration::from_millis(200), elsewhere.accept()).await;
        assert!(followed.is_err(), "the redirect target got a connection");
    }

    #[tokio::test]
    async fn silent_server_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _server = tokio::spawn(async move {
            // Accept and hold the connection without ever answering.
            let (stream, _) = listener.accept().await.unwrap();
            std::future::pending::<()>().await;
            drop(stream);
        });
        let start = Instant::now();
        let err = probe(&http("/healthz"), addr, Duration::from_millis(200))
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "timed out after 200ms");
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
    }

    #[tokio::test]
    async fn huge_body_is_not_waited_for() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            read_head(&mut stream).await;
            // Announce 1 GiB, send a little more than the probe reads, then stall.
            stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1073741824\r\n\r\n")
                .await
                .unwrap();
            let chunk = vec![b'x'; 16 * 1024];
            for _ in 0..5 {
                if stream.write_all(&chunk).await.is_err() {
                    return;
                }
            }
            std::future::pending::<()>().await;
        });
        let start = Instant::now();
        probe(&http("/"), addr, Duration::from_secs(5))
            .await
            .unwrap();
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
    }

    #[tokio::test]
    async fn truncated_body_fails() {
        let (addr, _server) =
            serve_once(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort").await;
        let err = probe(&http("/"), addr, TIMEOUT)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("HTTP 200: reading body: "), "{err}");
    }

    #[tokio::test]
    async fn refused_fails() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let err = probe(&http("/healthz"), addr, TIMEOUT).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("connect {addr}: connection refused")
        );
    }

    #[tokio::test]
    async fn absolute_url_is_rejected() {
        let (addr, _server) = serve_once(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").await;
        let err = probe(&http("http://elsewhere/"), addr, TIMEOUT)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("invalid check path"), "{err}");
    }
}
