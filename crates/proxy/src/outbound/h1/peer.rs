//! The lean path's requests to instances on other hosts: the client's parsed request made once
//! into the HTTP/2 request the peer agent gets (the same fields as hyper's path sends, by the
//! same functions), and the peer's response written back to the client as HTTP/1.1.
//!
//! Why: an app's HTTP/1.1 connection served by hyper's server costs a dispatcher, a request
//! and response map and a task wake-up per request before the request even reaches the peer
//! connection; the profile of the two-host path put that side at about a third of both agents'
//! CPU. Here the head is parsed once in place, as for same-host instances, and only the map the
//! HTTP/2 client needs is built.

use std::io::{self, Write as _};

use http::header::{CONTENT_LENGTH, DATE, HeaderName, HeaderValue, TE};
use http::request::Parts;
use http::uri::PathAndQuery;
use http::{HeaderMap, Method, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Body as _;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::fields;
use super::request::Request;
use crate::app_request;
use hostmesh_wire::{self as wire, headers};

/// The request's head as hyper's path would have it before an attempt's own fields
/// (`instance_request::build`): the client's fields less the hop-by-hop ones and the agent's
/// own, `host` as the client sent it. `None` when a field cannot go into a map (bytes httparse
/// takes and `http` refuses): such a request is left to hyper's path, which answers it.
pub fn parts(req: &Request, buf: &[u8]) -> Option<Parts> {
    let named = req.connection_named(buf);
    let mut map = HeaderMap::with_capacity(req.fields.len() + 6);
    let mut trailers = false;
    for f in &req.fields {
        // What the peer does not get is left out here rather than removed from the map after
        // (each removal hashes its name again): what `headers::strip_hop_by_hop` and
        // `strip_client_internal` remove, and the client's retry promise (this agent retries).
        // Like the first, a `te` asking for trailers leaves one `te: trailers`, at the end.
        let name = f.name(buf);
        if name.eq_ignore_ascii_case(b"te") {
            trailers |= app_request::te_for_app(f.value(buf));
            continue;
        }
        if headers::is_hop_by_hop(name)
            || fields::is_named(&named, name)
            || headers::is_client_internal(name)
            || name.eq_ignore_ascii_case(wire::RETRYABLE.as_bytes())
        {
            continue;
        }
        let name = HeaderName::from_bytes(name).ok()?;
        let value = HeaderValue::from_bytes(f.value(buf)).ok()?;
        map.append(name, value);
    }
    if trailers {
        map.insert(TE, HeaderValue::from_static("trailers"));
    }
    let path = PathAndQuery::try_from(req.path(buf)).ok()?;
    let mut head = http::Request::new(());
    *head.method_mut() = req.method.clone();
    *head.uri_mut() = http::Uri::from(path);
    *head.headers_mut() = map;
    Some(head.into_parts().0)
}

/// Writes the peer's response to the client: its head as HTTP/1.1 (the agent's `date` when it
/// has none, `connection: close` when `close`), then its body as it arrives, by its length or
/// chunked. A body that fails midway returns the error: the caller closes the connection, which
/// is how HTTP/1 says the response was cut short. `sent` counts the body bytes, also when it
/// fails midway.
pub async fn relay(
    app: &mut TcpStream,
    resp: http::Response<crate::h2_client::RecvBody>,
    method: &Method,
    close: bool,
    out: &mut Vec<u8>,
    sent: &mut u64,
) -> io::Result<()> {
    let (head, mut body) = resp.into_parts();
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(head.status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(
        head.status
            .canonical_reason()
            .unwrap_or_default()
            .as_bytes(),
    );
    out.extend_from_slice(b"\r\n");
    let no_body = *method == Method::HEAD
        || head.status == StatusCode::NO_CONTENT
        || head.status == StatusCode::NOT_MODIFIED;
    // The length is written once, by the agent, from the first value that is one (h2 checks
    // the body against it): never beside a chunked coding, never twice.
    let length = head
        .headers
        .get_all(CONTENT_LENGTH)
        .iter()
        .find_map(|v| fields::digits(v.as_bytes()));
    let mut dated = false;
    for (name, value) in &head.headers {
        if name == CONTENT_LENGTH || headers::is_hop_by_hop(name.as_str().as_bytes()) {
            continue;
        }
        dated |= name == DATE;
        fields::write_line(out, name.as_str().as_bytes(), value.as_bytes());
    }
    if !dated {
        crate::date::write_line(out);
    }
    let chunked = !no_body && length.is_none() && !body.is_end_stream();
    if let Some(n) = length {
        fields::write_line(out, b"content-length", n.to_string().as_bytes());
    } else if chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    } else if !no_body {
        out.extend_from_slice(b"content-length: 0\r\n");
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if no_body {
        return app.write_all(out).await;
    }
    *sent = 0;
    while !body.is_end_stream() {
        let Some(frame) = body.frame().await else {
            break;
        };
        let frame = frame.map_err(io::Error::other)?;
        let Ok(data) = frame.into_data() else {
            // Trailers: HTTP/1.1 clients of an `http` app do not ask for them.
            continue;
        };
        if data.is_empty() {
            continue;
        }
        *sent += data.len() as u64;
        if chunked {
            // Writing into a Vec cannot fail.
            let _ = write!(out, "{:x}\r\n", data.len());
            out.extend_from_slice(&data);
            out.extend_from_slice(b"\r\n");
        } else {
            out.extend_from_slice(&data);
        }
        // A small response goes out in one write with its head; a large one as it comes.
        if !body.is_end_stream() {
            app.write_all(out).await?;
            out.clear();
        }
    }
    if length.is_some_and(|n| n != *sent) {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the peer's response was cut short",
        ));
    }
    if chunked {
        out.extend_from_slice(b"0\r\n\r\n");
    }
    app.write_all(out).await?;
    out.clear();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbound::h1::request::Parsed;

    /// The fields a peer gets are the client's less what the map-wide strips remove.
    #[test]
    fn the_peers_fields_are_the_clients_less_hop_by_hop_and_ours() {
        let head = "POST /a HTTP/1.1\r\nHost: orders.mesh\r\nConnection: keep-alive, X-Private\r\n\
                    X-Private: 1\r\nKeep-Alive: 5\r\nTE: trailers\r\nX-Hostmesh-Timeout: 1s\r\n\
                    X-Hostmesh-Dst: evil/1\r\nX-Hostmesh-Retryable: true\r\nAccept: */*\r\n\
                    accept: text/plain\r\nContent-Length: 2\r\nProxy-Connection: keep-alive\r\n\r\nhi";
        let Parsed::Lean(req) = Request::parse(head.as_bytes(), 100, 65536) else {
            panic!("not lean");
        };
        let parts = parts(&req, head.as_bytes()).expect("parts");

        let mut expected = HeaderMap::new();
        for f in &req.fields {
            let name = HeaderName::from_bytes(f.name(head.as_bytes())).expect("name");
            let value = HeaderValue::from_bytes(f.value(head.as_bytes())).expect("value");
            expected.append(name, value);
        }
        headers::strip_hop_by_hop(&mut expected);
        headers::strip_client_internal(&mut expected);
        expected.remove(wire::names::RETRYABLE);
        assert_eq!(parts.headers, expected);
        let names: Vec<&str> = parts.headers.keys().map(HeaderName::as_str).collect();
        assert_eq!(
            names,
            [
                "host",
                "x-hostmesh-timeout",
                "accept",
                "content-length",
                "te"
            ]
        );
        assert_eq!(parts.headers.get_all("accept").iter().count(), 2);
        assert_eq!(parts.uri, "/a");
    }
}
