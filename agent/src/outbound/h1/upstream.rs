//! The lean path's connections to same-host apps: owned by one app connection (like `paired`'s,
//! at most [`MAX_IDLE`] kept), used by one request at a time, on the app connection's own task.

use std::io;
use std::net::SocketAddr;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::response::{Parsed, Response};

/// Kept idle connections per app connection (an app connection balanced over more same-host
/// instances than this reconnects more often; nothing else changes).
pub const MAX_IDLE: usize = 4;

/// Room read at once from an app.
const READ_CHUNK: usize = 16 * 1024;

/// One connection to an app.
#[derive(Debug)]
pub struct Upstream {
    pub target: SocketAddr,
    pub stream: TcpStream,
    /// Bytes read and not yet relayed: the response head, then body bytes.
    pub buf: BytesMut,
}

/// Why an exchange with an app failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("connect to {0}: {1}")]
    Connect(SocketAddr, io::Error),
    #[error("connect to {0}: timed out")]
    ConnectTimeout(SocketAddr),
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("the app closed the connection before a response")]
    Closed,
    #[error("{0}")]
    Invalid(&'static str),
}

impl UpstreamError {
    /// Whether the request provably never reached the app.
    pub fn never_reached(&self) -> bool {
        matches!(
            self,
            UpstreamError::Connect(..) | UpstreamError::ConnectTimeout(_)
        )
    }
}

impl Upstream {
    pub async fn connect(target: SocketAddr, timeout: Duration) -> Result<Self, UpstreamError> {
        let stream = match tokio::time::timeout(timeout, TcpStream::connect(target)).await {
            Err(_) => return Err(UpstreamError::ConnectTimeout(target)),
            Ok(Err(e)) => return Err(UpstreamError::Connect(target, e)),
            Ok(Ok(s)) => s,
        };
        let _ = stream.set_nodelay(true);
        Ok(Upstream {
            target,
            stream,
            buf: BytesMut::with_capacity(READ_CHUNK),
        })
    }

    /// Whether an idle connection can take another request: the app has neither closed it nor
    /// sent anything unasked. Reads only when the reactor has seen it readable, so the usual
    /// answer costs no system call.
    fn still_open(&mut self) -> bool {
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
        if self.buf.capacity() - self.buf.len() < READ_CHUNK / 4 {
            self.buf.reserve(READ_CHUNK);
        }
        self.stream.read_buf(&mut self.buf).await
    }

    /// Writes a request and reads the final response head (interim 1xx heads are dropped).
    pub async fn exchange(
        &mut self,
        request: &[u8],
        head_request: bool,
        max_head: usize,
    ) -> Result<Response, UpstreamError> {
        self.stream.write_all(request).await?;
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
            if self.read_more().await? == 0 {
                return Err(UpstreamError::Closed);
            }
        }
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
        if self.conns.len() >= MAX_IDLE {
            self.conns.remove(0);
        }
        self.conns.push(conn);
    }
}
