//! The message boundaries of an HTTP/1.1 request stream, found the way hyper's server finds
//! them, without hyper's leniencies: a head is released only once it is complete and has no
//! line ending in a bare LF and not both `Content-Length` and `Transfer-Encoding`. Bodies are
//! skipped by count; only chunk-size lines and trailers are looked at byte by byte, mirroring
//! hyper's chunked decoder (`hyper::proto::h1::decode`) so that both agree on where a body ends.
//!
//! Everything else about a head (tokens, obs-fold, NUL, header count and size) is hyper's to
//! check: the framer reads only what it needs to frame the body, and refuses what it cannot
//! frame (an unparsable or ambiguous length, a last coding other than chunked).

use memchr::{memchr, memchr2};

/// What the framer decided about the bytes it was shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feed {
    /// The first `n` bytes (at least one) may go to hyper: a whole valid head, or body bytes.
    Release(usize),
    /// The bytes are the start of a head that is not complete: show them again with more.
    More,
    /// The head must not reach hyper (smuggling, bare LF, a body it cannot frame): 400.
    Malformed,
    /// The head is longer than the limit: hyper, given it as it is, answers 431.
    TooLarge,
    /// The chunked framing of a body is broken: the connection must end.
    BadChunk,
}

#[derive(Debug)]
pub struct Framer {
    max_head: usize,
    state: State,
}

#[derive(Debug)]
enum State {
    Head(Head),
    /// A body of known length: bytes left (never 0).
    Fixed(u64),
    Chunked(Chunk, u64),
}

/// What is known of the head being read. Offsets count from the head's first byte.
#[derive(Debug, Default)]
struct Head {
    /// Where the next unfinished line starts: everything before it was checked.
    line_start: usize,
    /// No LF was found before here (so a head trickled in is searched once, not per byte).
    searched: usize,
    request_line: bool,
    content_length: Option<u64>,
    /// Whether the last coding of the last `Transfer-Encoding` line is `chunked`.
    chunked: Option<bool>,
    /// A `Content-Length` that does not parse, or that differs from an earlier one.
    bad_length: bool,
}

/// Where in a chunked body the framer is; hyper's `ChunkedState`, less its bookkeeping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Expecting the first hex digit of a chunk size.
    Start,
    Size,
    /// Spaces or tabs after the size.
    Lws,
    /// A chunk extension, up to CR.
    Ext,
    SizeLf,
    /// Chunk data; the count is in `State::Chunked`'s second field.
    Data,
    DataCr,
    DataLf,
    /// After the last chunk: a trailer line or the final CRLF.
    EndCr,
    Trailer,
    TrailerLf,
    EndLf,
}

impl Framer {
    /// A framer for a connection whose heads may be at most `max_head` bytes.
    pub fn new(max_head: usize) -> Self {
        Framer {
            max_head,
            state: State::Head(Head::default()),
        }
    }

    /// Whether the next bytes are body bytes (so they can go to hyper as they come).
    pub fn in_body(&self) -> bool {
        !matches!(self.state, State::Head(_))
    }

    /// Looks at `data`, the bytes not yet released. In a head, `data` starts at the head's first
    /// byte and grows between calls answered `More`.
    pub fn feed(&mut self, data: &[u8]) -> Feed {
        match &mut self.state {
            State::Head(head) => match head.scan(data, self.max_head) {
                Ok(Some((len, next))) => {
                    self.state = next;
                    Feed::Release(len)
                }
                Ok(None) => Feed::More,
                Err(f) => f,
            },
            State::Fixed(left) => {
                let n = usize::try_from(*left).unwrap_or(usize::MAX).min(data.len());
                *left -= n as u64;
                if *left == 0 {
                    self.state = State::Head(Head::default());
                }
                Feed::Release(n)
            }
            State::Chunked(chunk, size) => match chunked(chunk, size, data, &mut |_| {}) {
                Some((n, true)) => {
                    self.state = State::Head(Head::default());
                    Feed::Release(n)
                }
                Some((n, false)) => Feed::Release(n),
                None => Feed::BadChunk,
            },
        }
    }
}

impl Head {
    /// The head's length and what follows it once the head is complete and valid; `None` while
    /// it is incomplete.
    fn scan(&mut self, data: &[u8], max: usize) -> Result<Option<(usize, State)>, Feed> {
        loop {
            let from = self.searched.max(self.line_start);
            let Some(i) = memchr(b'\n', &data[from..]) else {
                self.searched = data.len();
                return if data.len() > max {
                    Err(Feed::TooLarge)
                } else {
                    Ok(None)
                };
            };
            let lf = from + i;
            // A line must end in CRLF; httparse also takes a bare LF, which other servers read
            // differently (request smuggling).
            if lf == self.line_start || data[lf - 1] != b'\r' {
                return Err(Feed::Malformed);
            }
            let line = &data[self.line_start..lf - 1];
            self.line_start = lf + 1;
            if self.line_start > max {
                return Err(Feed::TooLarge);
            }
            if line.is_empty() {
                // Empty lines before the request line are skipped (RFC 9112 section 2.2), as
                // httparse does.
                if self.request_line {
                    return self.body().map(|next| Some((self.line_start, next)));
                }
            } else if !self.request_line {
                self.request_line = true;
            } else {
                self.field(line);
            }
        }
    }

    /// Notes the framing fields; every other line is hyper's to judge.
    fn field(&mut self, line: &[u8]) {
        let Some(colon) = memchr(b':', line) else {
            return;
        };
        let (name, value) = (&line[..colon], trim(&line[colon + 1..]));
        if name.eq_ignore_ascii_case(b"content-length") {
            match digits(value) {
                Some(n) if self.content_length.is_none_or(|c| c == n) => {
                    self.content_length = Some(n);
                }
                _ => self.bad_length = true,
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            // Like hyper: the last coding of the last line decides.
            let last = value.rsplit(|b| *b == b',').next().unwrap_or_default();
            self.chunked = Some(trim(last).eq_ignore_ascii_case(b"chunked"));
        }
    }

    /// How the body after this head is framed (RFC 9112 section 6.3).
    fn body(&self) -> Result<State, Feed> {
        match (self.content_length, self.chunked) {
            _ if self.bad_length => Err(Feed::Malformed),
            // Both: the classic smuggling pair. RFC 9112 section 6.1 lets a server reject it,
            // and a proxy must not pass on a request whose length others may read differently.
            (Some(_), Some(_)) => Err(Feed::Malformed),
            (None, Some(true)) => Ok(State::Chunked(Chunk::Start, 0)),
            (None, Some(false)) => Err(Feed::Malformed),
            (None | Some(0), None) => Ok(State::Head(Head::default())),
            (Some(n), None) => Ok(State::Fixed(n)),
        }
    }
}

/// Where a chunked body ends, for a body relayed as it is (the lean path's responses): the same
/// framing rules as for requests.
#[derive(Debug)]
pub struct ChunkedBody {
    chunk: Chunk,
    size: u64,
}

impl Default for ChunkedBody {
    fn default() -> Self {
        ChunkedBody {
            chunk: Chunk::Start,
            size: 0,
        }
    }
}

impl ChunkedBody {
    /// How many of `data`'s bytes belong to the body and whether it ends there; `None` when
    /// the framing is broken.
    pub fn feed(&mut self, data: &[u8]) -> Option<(usize, bool)> {
        chunked(&mut self.chunk, &mut self.size, data, &mut |_| {})
    }

    /// [`feed`](Self::feed), also handing `payload` where in `data` each run of chunk data is
    /// (for a body that is decoded rather than relayed as it is: an app's response passed on
    /// over HTTP/2). Trailers are walked over, not handed on.
    pub fn decode(
        &mut self,
        data: &[u8],
        payload: &mut impl FnMut(std::ops::Range<usize>),
    ) -> Option<(usize, bool)> {
        chunked(&mut self.chunk, &mut self.size, data, payload)
    }
}

/// Walks chunked framing over `data`: how many bytes belong to the body and whether it ended
/// there; `None` when the framing is broken. `payload` gets the ranges of chunk data.
fn chunked(
    chunk: &mut Chunk,
    size: &mut u64,
    data: &[u8],
    payload: &mut impl FnMut(std::ops::Range<usize>),
) -> Option<(usize, bool)> {
    let mut i = 0;
    while i < data.len() {
        match *chunk {
            Chunk::Data => {
                let n = usize::try_from(*size)
                    .unwrap_or(usize::MAX)
                    .min(data.len() - i);
                if n > 0 {
                    payload(i..i + n);
                }
                i += n;
                *size -= n as u64;
                if *size == 0 {
                    *chunk = Chunk::DataCr;
                }
            }
            Chunk::Ext | Chunk::Trailer => match memchr2(b'\r', b'\n', &data[i..]) {
                None => i = data.len(),
                // hyper refuses a bare LF in an extension; in a trailer it is refused here, as
                // in a head.
                Some(j) if data[i + j] == b'\n' => return None,
                Some(j) => {
                    i += j + 1;
                    *chunk = if *chunk == Chunk::Ext {
                        Chunk::SizeLf
                    } else {
                        Chunk::TrailerLf
                    };
                }
            },
            state => {
                *chunk = step(state, size, data[i])?;
                i += 1;
                if *chunk == Chunk::Data && *size == 0 {
                    // The last chunk: trailers or the final CRLF follow.
                    *chunk = Chunk::EndCr;
                }
                if state == Chunk::EndLf {
                    return Some((i, true));
                }
            }
        }
    }
    Some((i, false))
}

/// One byte of a chunk-size line or of the CRLFs around data and trailers.
fn step(state: Chunk, size: &mut u64, b: u8) -> Option<Chunk> {
    Some(match (state, b) {
        (Chunk::Start | Chunk::Size, _) if b.is_ascii_hexdigit() => {
            let digit = (b as char).to_digit(16)?;
            *size = size.checked_mul(16)?.checked_add(u64::from(digit))?;
            Chunk::Size
        }
        (Chunk::Size | Chunk::Lws, b' ' | b'\t') => Chunk::Lws,
        (Chunk::Size | Chunk::Lws, b';') => Chunk::Ext,
        (Chunk::Size | Chunk::Lws, b'\r') => Chunk::SizeLf,
        // `Data` with a size of 0 is the last chunk (the caller turns it into `EndCr`).
        (Chunk::SizeLf, b'\n') => Chunk::Data,
        (Chunk::DataCr, b'\r') => Chunk::DataLf,
        (Chunk::DataLf, b'\n') => Chunk::Start,
        (Chunk::EndCr, b'\r') => Chunk::EndLf,
        (Chunk::EndCr, b'\n') => return None,
        (Chunk::EndCr, _) => Chunk::Trailer,
        (Chunk::TrailerLf, b'\n') => Chunk::EndCr,
        // The message's last byte: the caller sees `EndLf` accepted and ends the body.
        (Chunk::EndLf, b'\n') => Chunk::EndLf,
        _ => return None,
    })
}

/// `Content-Length`'s value as hyper reads it: digits only, no sign, no list.
pub fn digits(v: &[u8]) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    v.iter().try_fold(0u64, |n, &b| {
        if !b.is_ascii_digit() {
            return None;
        }
        n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
}

fn trim(v: &[u8]) -> &[u8] {
    let ws = |b: &u8| *b == b' ' || *b == b'\t';
    let start = v.iter().position(|b| !ws(b)).unwrap_or(v.len());
    let end = v.iter().rposition(|b| !ws(b)).map_or(start, |e| e + 1);
    &v[start..end]
}

#[cfg(test)]
#[path = "framer_tests.rs"]
mod tests;
