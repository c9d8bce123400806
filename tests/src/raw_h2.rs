//! HTTP/2 frames written and read by hand, for tests that need what a library client would never
//! do: hundreds of streams in one write, request bodies held back until the answer is in, frames
//! on streams the server has finished with. Payloads stay opaque (no HPACK decoding).

use tokio::io::{AsyncRead, AsyncReadExt};

/// RFC 9113 section 3.4: the client connection preface.
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const WINDOW_UPDATE: u8 = 0x8;

pub const END_STREAM: u8 = 0x1;
pub const ACK: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;

/// One frame as read.
#[derive(Debug, Clone)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

/// One frame's bytes.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len())
        .expect("a small frame")
        .to_be_bytes();
    let mut f = vec![len[1], len[2], len[3], kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// RFC 9113 section 7: the error code of a stream its sender no longer wants.
pub const CANCEL: u32 = 0x8;

/// An HPACK header block for a request: `:method`, `:scheme http`, `:path`, `:authority x`,
/// then `fields`. Every field is a literal the server never indexes, so blocks need no dynamic
/// table kept in step; names and values must be under 127 bytes (one-byte lengths, no Huffman).
pub fn request_block(method: &str, path: &str, fields: &[(&str, &str)]) -> Vec<u8> {
    fn literal(block: &mut Vec<u8>, s: &str) {
        block.push(
            u8::try_from(s.len())
                .ok()
                .filter(|n| *n < 127)
                .expect("a short string"),
        );
        block.extend_from_slice(s.as_bytes());
    }
    // Literals without indexing: by the static table's name (2 :method, 4 :path, 1 :authority),
    // or (0x00) with the name written out; 0x86 is the static `:scheme http`.
    let mut block = vec![0x02];
    literal(&mut block, method);
    block.extend([0x86, 0x04]);
    literal(&mut block, path);
    block.push(0x01);
    literal(&mut block, "x");
    for (name, value) in fields {
        block.push(0x00);
        literal(&mut block, name);
        literal(&mut block, value);
    }
    block
}

/// The next frame, or `None` once the connection is closed.
pub async fn read_frame<S: AsyncRead + Unpin>(s: &mut S) -> Option<Frame> {
    let mut head = [0u8; 9];
    s.read_exact(&mut head).await.ok()?;
    let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).await.ok()?;
    Some(Frame {
        kind: head[3],
        flags: head[4],
        stream,
        payload,
    })
}
