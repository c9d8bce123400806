//! The outbound side's access log entries: what a request to a route was and what its attempts
//! did. Built only while access logs are on.

use std::net::SocketAddr;
use std::time::Duration;

use super::Outbound;
use super::attempts::Tally;
use super::route::Route;
use crate::access_log::{Direction, Entry, trace_id_of};

/// The entry of a request from an app at `client` to `route`, before it is sent.
pub(super) fn begin(
    ctx: &Outbound,
    route: &Route,
    client: Option<SocketAddr>,
    method: &str,
    path: &str,
    traceparent: Option<&str>,
) -> Entry {
    let mut e = Entry::new(Direction::Outbound, route.protocol.as_str(), &route.service);
    e.client = client;
    e.caller = Some(ctx.self_host.clone());
    e.method = Some(method.to_owned());
    e.path = Some(path.to_owned());
    e.trace_id = traceparent.and_then(trace_id_of);
    e
}

/// What the attempts did: how many, the instance of the last, the status the client gets and
/// the agent's reason when an agent answered, and how long until the response head.
pub(super) fn settle(
    e: &mut Entry,
    route: &Route,
    tally: &Tally,
    status: u16,
    error: Option<&str>,
    to_headers: Duration,
) {
    e.attempts = tally.attempts;
    e.instance = tally
        .last
        .and_then(|i| route.endpoints.get(i))
        .map(|ep| format!("{}/{}", ep.host, ep.id));
    e.status = Some(status);
    e.error = error.map(str::to_owned);
    e.to_headers = Some(to_headers);
}
