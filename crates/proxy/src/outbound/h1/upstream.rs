//! The lean path's connections to same-host apps: owned by one app connection (at most
//! [`MAX_UPSTREAMS`] kept idle, as `paired` keeps on hyper's path), used by one request at a
//! time, on the app connection's own task.

use std::io;
use std::net::SocketAddr;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::response::{Parsed, Response};
use super::timer::LazyTimer;
use crate::connect::{ConnectError, connect};
use crate::outbound::paired::MAX_UPSTREAMS;

/// Room read at once from an app.
const READ_CHUNK: usize = 16 * 1024;

/// One connection to an app.
#[derive(Debug)]
pub struct Upstream {
    pub target: SocketAddr,
    pub stream: TcpStream,
    /// Bytes read and not yet relayed: the response head, then body bytes.
    pub buf: BytesMut,
    /// The deadline timer of the requests on this connection, one after another, when the
    /// inbound leg uses it (`inbound::app_h1`): kept with the connection, it is moved rather
    /// than registered anew per request. The lean outbound path keeps one per client
    /// connection instead and leaves this `None`.
    pub timer: Option<LazyTimer>,
}

/// Why an exchange with an app failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The connection ended before a byte of the response: on a kept connection, most likely
    /// the app closing it as idle just as the request went out.
    #[error("the app closed the connection before a response")]
    Closed,
    #[error("{0}")]
    Invalid(&'static str),
}

impl UpstreamError {
    /// Whether the connection ended before any byte of a response came back.
    pub fn before_response(&self) -> bool {
        match self {
            UpstreamError::Closed => true,
            UpstreamError::Io(e) => matches!(
                e.kind(),
                io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
            ),
            _ => false,
        }
    }

    /// Whether the request provably never reached the app.
    pub fn never_reached(&self) -> bool {
        matches!(self, UpstreamError::Connect(_))
    }
}

impl Upstream {
    pub async fn connect(target: SocketAddr, timeout: Duration) -> Result<Self, UpstreamError> {
        let stream = connect(target, timeout).await?;
        Ok(Upstream {
            target,
            stream,
            buf: BytesMut::with_capacity(READ_CHUNK),
            timer: None,
        })
    }

    /// Whether an idle connection can take another request: the app has neither closed it nor
    /// sent anything unasked. Reads only when the reactor has seen it readable, so the usual
    /// answer costs no system call.
    pub fn still_open(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(Waker::noop());
        match self.stream.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            Poll::Ready(Ok(())) => {
                let mut probe = [0u8; 1];
                matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
        }
    }

    /// Reads more of what the app sends; `Ok(0)` when it closed.
    pub async fn read_more(&mut self) -> io::Result<usize> {
        super::read_into(&mut self.stream, &mut self.buf, READ_CHUNK).await
    }

    /// Writes a request and reads the final response head (interim 1xx heads are dropped).
    pub async fn exchange(
        &mut self,
        request: &[u8],
        head_request: bool,
        max_head: usize,
    ) -> Result<Response, UpstreamError> {
        self.stream.write_all(request).await?;
        let mut got_any = false;
        loop {
            match Response::parse(&self.buf, head_request, max_head) {
                Parsed::Final(resp) => return Ok(resp),
                Parsed::Interim(n) => {
                    let _ = self.buf.split_to(n);
                    continue;
                }
                Parsed::Invalid(why) => return Err(UpstreamError::Invalid(why)),
                Parsed::Partial => {}
            }
            match self.read_more().await {
                Ok(0) if got_any => return Err(UpstreamError::Invalid("response cut short")),
                Ok(0) => return Err(UpstreamError::Closed),
                Ok(_) => got_any = true,
                Err(e) if got_any => return Err(UpstreamError::Invalid(reset_kind(&e))),
                Err(e) => return Err(e.into()),
            }
        }
    }
}

fn reset_kind(e: &io::Error) -> &'static str {
    match e.kind() {
        io::ErrorKind::ConnectionReset => "connection reset during the response head",
        _ => "read error during the response head",
    }
}

/// An app connection's idle upstream connections, oldest first.
#[derive(Debug, Default)]
pub struct Idle {
    conns: Vec<Upstream>,
}

impl Idle {
    /// An open idle connection to `target`, if there is one.
    pub fn take(&mut self, target: SocketAddr) -> Option<Upstream> {
        while let Some(at) = self.conns.iter().position(|c| c.target == target) {
            let mut conn = self.conns.remove(at);
            if conn.still_open() {
                return Some(conn);
            }
        }
        None
    }

    pub fn put(&mut self, conn: Upstream) {
        if self.conns.len() >= MAX_UPSTREAMS {
            self.conns.remove(0);
        }
        self.conns.push(conn);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    /// An app that reads a request head, then does `then` with the connection.
    async fn app(then: &'static [u8]) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let mut got = 0;
                    while !buf[..got].windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut buf[got..]).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => got += n,
                        }
                    }
                    let _ = s.write_all(then).await;
                });
            }
        });
        addr
    }

    const GET: &[u8] = b"GET / HTTP/1.1\r\nhost: app\r\n\r\n";

    #[tokio::test]
    async fn an_answer_a_silent_close_and_a_cut_head_are_told_apart() {
        let ok = app(b"HTTP/1.1 204 No Content\r\n\r\n").await;
        let mut up = Upstream::connect(ok, Duration::from_secs(1))
            .await
            .expect("connect");
        let head = up.exchange(GET, false, 65536).await.expect("answer");
        assert_eq!(head.status, http::StatusCode::NO_CONTENT);

        let silent = app(b"").await;
        let mut up = Upstream::connect(silent, Duration::from_secs(1))
            .await
            .expect("connect");
        let err = up.exchange(GET, false, 65536).await.expect_err("closed");
        assert!(err.before_response() && !err.never_reached(), "{err}");

        let cut = app(b"HTTP/1.1 200 OK\r\ncontent-").await;
        let mut up = Upstream::connect(cut, Duration::from_secs(1))
            .await
            .expect("connect");
        let err = up.exchange(GET, false, 65536).await.expect_err("cut");
        assert!(!err.before_response(), "{err}");
    }

    #[tokio::test]
    async fn a_refused_connect_never_reached_the_app() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        let err = Upstream::connect(addr, Duration::from_secs(1))
            .await
            .expect_err("nothing listens");
        assert!(err.never_reached(), "{err}");
    }

    #[tokio::test]
    async fn an_idle_connection_the_app_closed_is_not_handed_out() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut idle = Idle::default();
        let open = Upstream::connect(addr, Duration::from_secs(1))
            .await
            .expect("connect");
        let (_kept, _) = listener.accept().await.expect("accept");
        idle.put(open);
        assert!(idle.take(addr).is_some(), "an open connection is reused");

        let closing = Upstream::connect(addr, Duration::from_secs(1))
            .await
            .expect("connect");
        let (closed, _) = listener.accept().await.expect("accept");
        drop(closed);
        // Wait until the reactor has seen the close, as it has by the time a request reuses a
        // connection the app closed while it was idle.
        closing.stream.readable().await.expect("readable");
        idle.put(closing);
        assert!(idle.take(addr).is_none(), "a closed connection is dropped");
    }
}
