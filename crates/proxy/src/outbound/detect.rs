//! Which HTTP version an app connection speaks, from its first bytes: the HTTP/2 connection
//! preface, or anything else (HTTP/1.x; hyper then rejects what is not HTTP at all). The bytes
//! read are handed back to be replayed in front of the stream.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

/// RFC 9113 section 3.4: what an h2 prior-knowledge client sends first.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Http1,
    Http2,
}

/// Reads until the first bytes match the preface or cannot: at most 24 bytes, within `timeout`.
/// `None` when the client closed or said nothing in time.
pub async fn sniff<S: AsyncRead + Unpin>(
    stream: &mut S,
    timeout: Duration,
) -> Option<(Version, Vec<u8>)> {
    let mut head = Vec::with_capacity(PREFACE.len());
    let decided = async {
        loop {
            let mut buf = [0u8; PREFACE.len()];
            let want = PREFACE.len() - head.len();
            let n = stream.read(&mut buf[..want]).await.ok()?;
            if n == 0 {
                return None;
            }
            head.extend_from_slice(&buf[..n]);
            if !PREFACE.starts_with(&head) {
                return Some(Version::Http1);
            }
            if head.len() == PREFACE.len() {
                return Some(Version::Http2);
            }
        }
    };
    let version = tokio::time::timeout(timeout, decided).await.ok()??;
    Some((version, head))
}

#[cfg(test)]
mod tests {
    use super::*;

    use tokio::io::AsyncWriteExt;

    async fn sniffed(chunks: &[&[u8]]) -> Option<(Version, Vec<u8>)> {
        let (mut client, mut server) = tokio::io::duplex(64);
        for c in chunks {
            client.write_all(c).await.expect("write");
        }
        drop(client);
        sniff(&mut server, Duration::from_secs(1)).await
    }

    #[tokio::test]
    async fn tells_http1_from_the_preface() {
        let (v, head) = sniffed(&[b"GET / HTTP/1.1\r\n"]).await.expect("decided");
        assert_eq!(
            (v, head.as_slice()),
            (Version::Http1, &b"GET / HTTP/1.1\r\n"[..])
        );
        // A method that starts like the preface is decided at the first differing byte.
        let (v, head) = sniffed(&[b"P", b"UT / HTTP/1.1\r\n"])
            .await
            .expect("decided");
        assert_eq!(
            (v, head.as_slice()),
            (Version::Http1, &b"PUT / HTTP/1.1\r\n"[..])
        );
        let (v, head) = sniffed(&[b"PRI * HTTP/2.0\r\n", b"\r\nSM\r\n\r\n\0\0"])
            .await
            .expect("decided");
        assert_eq!((v, head.as_slice()), (Version::Http2, PREFACE));
    }

    #[tokio::test]
    async fn a_client_that_closes_or_stalls_is_not_served() {
        assert_eq!(sniffed(&[]).await, None);
        assert_eq!(sniffed(&[b"PRI * HT"]).await, None);
        let (_client, mut server) = tokio::io::duplex(64);
        assert_eq!(sniff(&mut server, Duration::from_millis(20)).await, None);
    }
}
