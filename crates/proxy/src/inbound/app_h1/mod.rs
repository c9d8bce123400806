//! The inbound side's HTTP/1.1 leg to this host's `http` apps, without hyper's client: the
//! request head is written from the peer's HTTP/2 request in one piece, the response head is
//! parsed in place (the lean outbound path's parser, `outbound::h1::response`), and the body is
//! read from the app connection by the peer's stream itself ([`AppBody`]). Connections are kept
//! per data path worker ([`idle`]).
//!
//! Why not hyper's pooled client, as before: each request there was a pool checkout, a channel
//! to the connection's own task and back, and that task's wake-ups: the profile of the two-host
//! path put the inbound app leg at about a quarter of both agents' CPU. Here the peer's stream
//! writes the request and reads the answer on its own task.
//!
//! The leg takes requests without a body (the peer's HEADERS ended the stream) and requests
//! whose `content-length` is at most 64 KiB (`retry::MAX_REPLAY_BODY`, what the outbound side
//! buffers too): their body is read whole first and written with the head, so no upload runs
//! while the answer is read. Larger or unsized bodies stream through hyper's client, and `grpc`
//! apps (h2c) use `h2_client`.

mod body;
mod idle;

use std::net::SocketAddr;

use http::header::{CONNECTION, FORWARDED, HOST, HeaderName, HeaderValue};
use http::request::Parts;
use http::uri::{Authority, PathAndQuery};
use http::{HeaderMap, Method, Response};
use tokio::time::Instant;

use crate::app_request::Added;
use crate::body::{ProxyBody, boxed};
use crate::outbound::h1::fields::{write_for_app, write_line};
use crate::outbound::h1::response::{Coding, Response as Head};
use crate::outbound::h1::timer::LazyTimer;
use crate::outbound::h1::upstream::{Upstream, UpstreamError};
use crate::settings::Settings;
pub use body::AppBody;
use hostmesh_wire::{self as wire, headers};

/// Whether a request takes this leg rather than hyper's client: it is not a `CONNECT`, and its
/// body (as the peer's stream describes it) has ended or has a length of at most 64 KiB.
pub fn takes(parts: &Parts, body: &impl hyper::body::Body) -> bool {
    let small = body
        .size_hint()
        .exact()
        .is_some_and(|n| n <= crate::outbound::retry::MAX_REPLAY_BODY);
    (body.is_end_stream() || small) && parts.method != Method::CONNECT
}

/// Sends a request the app is to receive as `parts` and `body` to `target`: its fields as
/// `app_request` makes them, from `parts` as they came with `added` (`None`: `parts` has them
/// already), and returns the app's response as the peer gets it, or
/// `None` when `deadline` passed first. `replayable`: the request may be sent again when a kept
/// connection turns out closed under it (as Go's and hyper's clients do for idempotent
/// requests).
///
/// The deadline is kept by the connection's own timer (`Upstream::timer`), not by a new
/// `tokio::time::timeout` per request: registering one woke the worker's reactor (an eventfd
/// write and an extra `epoll_wait`) for about a third of the requests on the two-host bench,
/// whenever no earlier timer was pending.
// The request's parts, where it goes and its deadline are all distinct; a struct would only
// rename them.
#[allow(clippy::too_many_arguments)]
pub async fn send(
    parts: &Parts,
    added: Option<&Added<'_>>,
    path: &PathAndQuery,
    authority: &Authority,
    target: SocketAddr,
    settings: &Settings,
    replayable: bool,
    body: &[u8],
    deadline: Instant,
) -> Option<Result<Response<ProxyBody>, UpstreamError>> {
    let mut head = Vec::with_capacity(512 + body.len());
    write_head(parts, added, path, authority, &mut head);
    head.extend_from_slice(body);
    let head_request = parts.method == Method::HEAD;
    // As large as hyper's client took, and the peer's h2 client takes (`h2_limits`).
    let max = crate::h2_limits::RESPONSE_HEAD_LIMIT as usize;
    let mut timer = None;
    if let Some(mut up) = idle::take(target, settings.idle_timeout) {
        let mut t = up.timer.take().unwrap_or_else(|| LazyTimer::new(deadline));
        match t
            .until(deadline, up.exchange(&head, head_request, max))
            .await
            .ok()?
        {
            Ok(resp) => {
                up.timer = Some(t);
                return Some(respond(resp, up, settings));
            }
            Err(e) if e.before_response() && replayable => {
                tracing::debug!(%target, "kept app connection closed under a request: {e}");
                timer = Some(t);
            }
            Err(e) => return Some(Err(e)),
        }
    }
    let mut t = timer.unwrap_or_else(|| LazyTimer::new(deadline));
    let mut up = match t
        .until(
            deadline,
            Upstream::connect(target, settings.connect_timeout),
        )
        .await
        .ok()?
    {
        Ok(up) => up,
        Err(e) => return Some(Err(e)),
    };
    let resp = match t
        .until(deadline, up.exchange(&head, head_request, max))
        .await
        .ok()?
    {
        Ok(resp) => resp,
        Err(e) => return Some(Err(e)),
    };
    up.timer = Some(t);
    Some(respond(resp, up, settings))
}

/// The request line and fields as the app gets them: `parts`' fields as they are, or, with
/// `added`, as `app_request::write_map` would leave them (kept or dropped by
/// `fields::write_for_app`, as the lean outbound path writes them). A request without
/// `host` gets the app's own address, as hyper's client gave it (port 80 left out).
fn write_head(
    parts: &Parts,
    added: Option<&Added<'_>>,
    path: &PathAndQuery,
    authority: &Authority,
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_str().as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    if !parts.headers.contains_key(HOST) {
        let host = match authority.port_u16() {
            Some(80) => authority.host(),
            _ => authority.as_str(),
        };
        write_line(out, b"host", host.as_bytes());
    }
    let Some(added) = added else {
        for (name, value) in &parts.headers {
            write_line(out, name.as_str().as_bytes(), value.as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        return;
    };
    // HTTP/2 has no `Connection` field (h2 refuses a request with one), so this is empty but
    // for a request some other way makes.
    let values = parts.headers.get_all(CONNECTION);
    let named = headers::named_by_connection(values.iter().map(HeaderValue::as_bytes));
    let fields = parts.headers.iter();
    let fields = fields.map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes()));
    write_for_app(fields, &named, |_| false, out);
    write_line(out, wire::CALLER.as_bytes(), added.caller.as_bytes());
    write_line(
        out,
        FORWARDED.as_str().as_bytes(),
        added.forwarded.as_bytes(),
    );
    write_line(out, wire::TIMEOUT.as_bytes(), added.timeout.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// The response the peer gets for the app's `head`: its status and end-to-end fields, and the
/// body still to come on `up`.
fn respond(
    head: Head,
    mut up: Upstream,
    settings: &Settings,
) -> Result<Response<ProxyBody>, UpstreamError> {
    // The values are slices of the head's bytes, not copies (an allocation each).
    let bytes = up.buf.split_to(head.head_len).freeze();
    let mut fields = HeaderMap::with_capacity(16);
    for f in head.passed_on(&bytes, Coding::Decoded) {
        // httparse took only tokens and visible values, which these accept; anything else is
        // a response hyper's client refused too.
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(f.name(&bytes)),
            HeaderValue::from_maybe_shared(bytes.slice(f.value_range())),
        ) else {
            return Err(UpstreamError::Invalid(
                "a response field HTTP/2 cannot carry",
            ));
        };
        fields.append(name, value);
    }
    let body = AppBody::new(up, head.framing, head.reusable, settings.idle_timeout);
    let mut resp = Response::new(boxed(body));
    *resp.status_mut() = head.status;
    *resp.headers_mut() = fields;
    Ok(resp)
}

#[cfg(test)]
mod tests;
