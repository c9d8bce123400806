//! HTTP/1 over a plain socket, for tests that need exact bytes on the wire: requests pipelined
//! in one write, heads curl would never send, and responses exactly as the agent wrote them
//! (header names as written, chunked framing as it came). Sockets belong to the host whose
//! [`Host::in_ns`] opens them.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::net::Host;

/// How long [`RawConn`] waits for what it expects before panicking.
const READ_WITHIN: Duration = Duration::from_secs(10);

/// One response as it came on the wire.
#[derive(Debug, Clone)]
pub struct RawResponse {
    /// `HTTP/1.1` or `HTTP/1.0`.
    pub version: String,
    pub status: u16,
    /// The head, status line to the empty line, as it came.
    pub head: String,
    /// The header fields in order, names as written.
    pub headers: Vec<(String, String)>,
    /// The body's bytes as they came: a chunked body with its framing, extensions and trailers.
    pub wire_body: Vec<u8>,
    /// The body without its chunked framing.
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every header name, as written.
    pub fn names(&self) -> Vec<&str> {
        self.headers.iter().map(|(n, _)| n.as_str()).collect()
    }

    /// The body, lossily decoded.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A client connection that reads responses by their framing (RFC 9112 §6.3), so several can
/// follow one another on it.
#[derive(Debug)]
pub struct RawConn {
    stream: TcpStream,
    /// Read and not yet taken by a response.
    buf: Vec<u8>,
    /// The peer closed its side.
    eof: bool,
}

impl RawConn {
    /// Connects to `addr` (2 s at most); panics if it cannot. Call it inside [`Host::in_ns`].
    #[track_caller]
    pub fn connect(addr: SocketAddr) -> RawConn {
        RawConn::try_connect(addr).unwrap_or_else(|e| panic!("connecting to {addr}: {e}"))
    }

    /// [`RawConn::connect`], returning the error.
    pub fn try_connect(addr: SocketAddr) -> std::io::Result<RawConn> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        let _ = stream.set_nodelay(true);
        Ok(RawConn {
            stream,
            buf: Vec::new(),
            eof: false,
        })
    }

    /// Writes `bytes` in one write call, returning the error.
    pub fn try_send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Writes `bytes` in one write call.
    #[track_caller]
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .unwrap_or_else(|e| panic!("writing {:?}: {e}", String::from_utf8_lossy(bytes)));
    }

    /// Shuts the sending side (a half-close): the other side reads the end of the stream and may
    /// still answer.
    #[track_caller]
    pub fn shut_write(&mut self) {
        self.stream
            .shutdown(std::net::Shutdown::Write)
            .unwrap_or_else(|e| panic!("shutting the sending side: {e}"));
    }

    /// The next response, or what is wrong: the connection closed or nothing whole came within
    /// 10 s (an error once the head came says `body of a STATUS: …`). `head_request`: it answers
    /// a HEAD (no body whatever its head says). Interim (1xx) responses are returned like final
    /// ones.
    pub fn try_response(&mut self, head_request: bool) -> Result<RawResponse, String> {
        let deadline = Instant::now() + READ_WITHIN;
        let head_len = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            self.read_more(deadline)?;
        };
        let head = String::from_utf8_lossy(&self.buf[..head_len]).into_owned();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default().to_owned();
        let status: u16 = parts
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("not a status line: {status_line:?}"))?;
        let headers: Vec<(String, String)> = lines
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (n, v) = l.split_once(':').unwrap_or((l, ""));
                (n.to_owned(), v.trim().to_owned())
            })
            .collect();
        self.buf.drain(..head_len);
        let mut resp = RawResponse {
            version,
            status,
            head,
            headers,
            wire_body: Vec::new(),
            body: Vec::new(),
        };
        let chunked = resp.header("transfer-encoding").is_some_and(|te| {
            te.rsplit(',')
                .next()
                .is_some_and(|c| c.trim().eq_ignore_ascii_case("chunked"))
        });
        let length = resp.header("content-length").map(str::to_owned);
        if head_request || status < 200 || status == 204 || status == 304 {
            return Ok(resp);
        }
        self.read_body(&mut resp, chunked, length, deadline)
            .map_err(|e| format!("body of a {status}: {e}"))?;
        Ok(resp)
    }

    fn read_body(
        &mut self,
        resp: &mut RawResponse,
        chunked: bool,
        length: Option<String>,
        deadline: Instant,
    ) -> Result<(), String> {
        if chunked {
            self.read_chunked(resp, deadline)?;
        } else if let Some(n) = length {
            let n: usize = n.parse().map_err(|_| format!("content-length {n:?}"))?;
            while self.buf.len() < n {
                self.read_more(deadline)
                    .map_err(|e| format!("{e} after {} of {n} body bytes", self.buf.len()))?;
            }
            resp.body = self.buf.drain(..n).collect();
            resp.wire_body = resp.body.clone();
        } else {
            // Until the connection closes.
            while !self.eof {
                if let Err(e) = self.read_more(deadline)
                    && !self.eof
                {
                    return Err(e);
                }
            }
            resp.body = std::mem::take(&mut self.buf);
            resp.wire_body = resp.body.clone();
        }
        Ok(())
    }

    /// The next response; panics if none comes whole (see [`RawConn::try_response`]).
    #[track_caller]
    pub fn response(&mut self, head_request: bool) -> RawResponse {
        self.try_response(head_request)
            .unwrap_or_else(|e| panic!("reading a response: {e}"))
    }

    /// Sends one request (not HEAD) and reads its response.
    #[track_caller]
    pub fn request(&mut self, bytes: &[u8]) -> RawResponse {
        self.send(bytes);
        self.response(false)
    }

    /// Reads until `done` holds for what arrived and is not yet taken by a response (which it
    /// stays available to); panics naming `what` after 10 s or on a close first.
    #[track_caller]
    pub fn wait_for_bytes(&mut self, what: &str, done: impl Fn(&[u8]) -> bool) {
        let deadline = Instant::now() + READ_WITHIN;
        while !done(&self.buf) {
            if let Err(e) = self.read_more(deadline) {
                panic!(
                    "waiting for {what}: {e}; got {:?}",
                    String::from_utf8_lossy(&self.buf)
                );
            }
        }
    }

    /// Whether the peer closes the connection (EOF or reset) within `within` without sending
    /// anything more; what it sent meanwhile otherwise.
    pub fn closes_within(&mut self, within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        while !self.eof {
            if let Err(e) = self.read_more(deadline)
                && !self.eof
            {
                return Err(format!(
                    "still open ({e}); got {:?}",
                    String::from_utf8_lossy(&self.buf)
                ));
            }
        }
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "closed after sending {:?}",
                String::from_utf8_lossy(&self.buf)
            ))
        }
    }

    fn read_more(&mut self, deadline: Instant) -> Result<(), String> {
        if self.eof {
            return Err("the connection is closed".to_owned());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("timed out".to_owned());
        }
        self.stream
            .set_read_timeout(Some(left))
            .map_err(|e| format!("setting a read timeout: {e}"))?;
        let mut chunk = [0u8; 64 * 1024];
        match self.stream.read(&mut chunk) {
            Ok(0) => {
                self.eof = true;
                Err("the connection closed".to_owned())
            }
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(())
            }
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {
                self.eof = true;
                Err("the connection was reset".to_owned())
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                Err("timed out".to_owned())
            }
            Err(e) => Err(format!("reading: {e}")),
        }
    }

    /// A chunked body: chunks (extensions ignored), the last chunk, trailers, the empty line.
    fn read_chunked(&mut self, resp: &mut RawResponse, deadline: Instant) -> Result<(), String> {
        loop {
            let line_end = loop {
                if let Some(i) = find(&self.buf, b"\r\n") {
                    break i;
                }
                self.read_more(deadline)?;
            };
            let line = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
            let size_hex = line.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size_hex, 16)
                .map_err(|_| format!("bad chunk size line {line:?}"))?;
            if size == 0 {
                // Trailer fields, then the empty line.
                let end = loop {
                    if let Some(i) = find(&self.buf[line_end..], b"\r\n\r\n") {
                        break line_end + i + 4;
                    }
                    self.read_more(deadline)?;
                };
                resp.wire_body.extend(self.buf.drain(..end));
                return Ok(());
            }
            let whole = line_end + 2 + size + 2;
            while self.buf.len() < whole {
                self.read_more(deadline)?;
            }
            if &self.buf[whole - 2..whole] != b"\r\n" {
                return Err(format!("chunk of {size} bytes not followed by CRLF"));
            }
            resp.body
                .extend_from_slice(&self.buf[line_end + 2..line_end + 2 + size]);
            resp.wire_body.extend(self.buf.drain(..whole));
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// What came back on one connection until it closed.
#[derive(Debug)]
pub struct Answer {
    /// The status of every `HTTP/1.1` status line that came back, in order.
    pub statuses: Vec<u16>,
    /// Closed by the peer (EOF or reset) within the deadline.
    pub closed: bool,
}

/// Opens a fresh connection to `addr` inside `host`, writes `bytes` in one go, and reads until
/// the peer closes the connection (at most 10 s).
pub fn exchange(host: &Host, addr: SocketAddr, bytes: &[u8]) -> Answer {
    host.in_ns(|| {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect");
        // The agent may close before taking every byte; what it answered is still read.
        let _ = s.write_all(bytes);
        read_until_closed(&mut s, Duration::from_secs(10))
    })
}

/// Reads from `s` until the peer closes it or `within` passes.
pub fn read_until_closed(s: &mut TcpStream, within: Duration) -> Answer {
    let deadline = Instant::now() + within;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break false;
        }
        s.set_read_timeout(Some(left)).expect("set a read timeout");
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break true,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                break false;
            }
            Err(e) => panic!("reading: {e}"),
        }
    };
    let text = String::from_utf8_lossy(&out);
    let statuses = text
        .match_indices("HTTP/1.1 ")
        .filter_map(|(i, m)| text.get(i + m.len()..i + m.len() + 3)?.parse().ok())
        .collect();
    Answer { statuses, closed }
}
