//! The request one attempt sends to an instance: to a same-host app directly (its fields as
//! `app_request` makes them) or to the peer agent (with the agent's own `x-hostmesh-*` fields).
//! Both of the outbound side's paths send it: hyper's (`http`) and the lean one (`h1`) for
//! instances on other hosts.

use std::net::SocketAddr;
use std::time::Duration;

use http::header::HeaderValue;
use http::request::Parts;
use http::{HeaderMap, Request, Uri};

use hostmesh_config::spec::Protocol;

use super::Outbound;
use super::route::{Endpoint, Route};
use crate::app_request;
use crate::body;
use crate::pool;
use hostmesh_wire as wire;

/// The request for one attempt, to the app directly (same host) or to the peer agent, and the
/// address it goes to: `parts`' method and URI, and `headers` (the request's, the attempt's own
/// to edit: a clone of `parts`' or, for a request's first attempt on the lean path, the map made
/// for it). `origin_form`: the URI carries only the path (a connection of our own to
/// the app); else the target's address too (the shared pools pick the connection by it).
// What the attempt is (context, route, endpoint), what it carries (method and URI, fields, body)
// and how (deadline, URI form) are all distinct; a struct would only rename them.
#[allow(clippy::too_many_arguments)]
pub fn build(
    ctx: &Outbound,
    route: &Route,
    ep: &Endpoint,
    parts: &Parts,
    headers: HeaderMap,
    remaining: Duration,
    body: body::Lent,
    origin_form: bool,
) -> Option<(Request<body::Lent>, SocketAddr)> {
    let mut req = Request::new(body);
    *req.method_mut() = parts.method.clone();
    *req.headers_mut() = headers;
    let h = req.headers_mut();
    let mut local_authority = None;
    let target = if ep.local {
        let spec = ctx.local.get(&route.service, &ep.id)?;
        local_authority = Some(spec.authority.clone());
        app_request::write_map(
            h,
            &app_request::Added {
                caller: &ctx.wire_headers.caller,
                forwarded: &ctx.wire_headers.forwarded,
                timeout: &wire::timeout_value(remaining),
                grpc: route.protocol == Protocol::Grpc,
            },
        );
        spec.target
    } else {
        // Sensitive means never indexed: HPACK's dynamic table is first in, first out, and a
        // value that differs on every request would push the fields that repeat (the
        // destination, the source) out of it every few dozen requests, on both agents.
        let mut timeout = wire::timeout_value(remaining);
        timeout.set_sensitive(true);
        h.insert(wire::names::TIMEOUT, timeout);
        h.insert(wire::names::DST, ep.dst.clone()?);
        h.insert(wire::names::SRC, ctx.wire_headers.caller.clone());
        h.insert(
            wire::names::VERSION_HEADER,
            HeaderValue::from_static(wire::VERSION),
        );
        ep.peer
    };
    let path = pool::path_of(&parts.uri);
    *req.uri_mut() = if origin_form {
        Uri::from(path)
    } else {
        // To a peer, its host rides in the user info: the pool keys connections by it and the
        // TLS connector demands that identity (`tls::connector`).
        let authority = match local_authority {
            Some(a) => a,
            None => ep.authority.clone()?,
        };
        pool::absolute_uri(authority, path)?
    };
    Some((req, target))
}
