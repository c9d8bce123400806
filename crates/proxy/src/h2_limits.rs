//! The HTTP/2 limits of every h2 server and client the agent runs, set explicitly rather than
//! left to hyper's and h2's defaults (which are documented as subject to change), each with the
//! reason for its value.

use hyper::server::conn::http2;

use crate::settings::Settings;

/// Streams one app connection may have open at once. Each is a task and an upstream request,
/// so this bounds what one connection can start (`max_connections` bounds the connections).
/// 250 is Go's net/http default, above the 100 RFC 9113 recommends as a minimum, so a gRPC
/// client multiplexing one connection is not throttled in practice.
pub const APP_MAX_STREAMS: u32 = 250;

/// Streams one peer agent may have open at once. A peer sends all of its host's traffic to this
/// host over one connection, so this is the concurrency between two hosts; past it the peer's
/// requests wait for a free stream (their deadlines still run) instead of starting more tasks
/// and app connections here.
pub const PEER_MAX_STREAMS: u32 = 1024;

/// Streams a client may open and reset before they are accepted ("rapid reset",
/// CVE-2023-44487) before it gets GOAWAY. hyper accepts streams at once, so a well-behaved
/// client hardly ever has one pending. Apps: h2's default of 20. Peers: more, because a
/// GOAWAY to a peer drops every request of every app on that host in flight to this one.
const APP_PENDING_ACCEPT_RESETS: usize = 20;
const PEER_PENDING_ACCEPT_RESETS: usize = 100;

/// Streams the agent may reset because the other side broke the protocol on them
/// (RUSTSEC-2024-0003) before it sends GOAWAY: hyper's current default, pinned.
const LOCAL_ERROR_RESETS: usize = 1024;

/// The response heads an h2 client takes (`SETTINGS_MAX_HEADER_LIST_SIZE`): as large as hyper's
/// HTTP/1 client takes by default (8 KiB + 100 × 4 KiB), so a response a same-host app may send
/// also passes through a peer agent (h2's default is only 16 KiB). The inbound side's HTTP/1
/// leg to apps (`inbound::app_h1`) reads response heads up to the same size.
pub const RESPONSE_HEAD_LIMIT: u32 = 8192 + 4096 * 100;

/// The h2 server for app connections: request heads within `max_header_bytes` (larger: 431).
pub fn app_server<E>(b: &mut http2::Builder<E>, settings: &Settings) {
    b.max_concurrent_streams(APP_MAX_STREAMS)
        .max_pending_accept_reset_streams(APP_PENDING_ACCEPT_RESETS)
        .max_local_error_reset_streams(LOCAL_ERROR_RESETS)
        .max_header_list_size(saturate(settings.max_header_bytes));
}

/// The h2 server for peer agents (`inbound::http`, on the h2 crate directly), with hyper's
/// server defaults otherwise (which it used before): 1 MiB windows per stream and per
/// connection, at most 400 KiB of a stream's data queued to send. Their requests were already
/// bounded by their own outbound side, and HPACK's list size counts 32 bytes per field more
/// than the field itself, to which the agent adds its own `x-hostmesh-*` fields: the limit
/// leaves room for that, so that a request one agent took is not refused by the next.
pub fn peer_server(settings: &Settings) -> h2::server::Builder {
    let fields = settings.max_headers.saturating_add(16);
    let list = settings
        .max_header_bytes
        .saturating_add(fields.saturating_mul(32))
        .saturating_add(1024);
    let mut b = h2::server::Builder::new();
    b.initial_window_size(1 << 20)
        .initial_connection_window_size(1 << 20)
        .max_frame_size(16 << 10)
        .max_send_buffer_size(400 << 10)
        .max_concurrent_streams(PEER_MAX_STREAMS)
        .max_pending_accept_reset_streams(PEER_PENDING_ACCEPT_RESETS)
        .max_local_error_reset_streams(Some(LOCAL_ERROR_RESETS))
        .max_header_list_size(saturate(list));
    b
}

/// The h2 client (`h2_client`: to peers, to `grpc` apps), with hyper's client defaults (which
/// it used before the agent drove h2 itself): windows of 2 MiB per stream and 5 MiB per
/// connection, so a large response is not held to the protocol's 64 KiB per round trip, and at
/// most 1 MiB of a stream's data queued to send. Servers cannot push to it. The stream limits
/// of a client only concern streams the server opens, so they are not set.
pub fn client() -> h2::client::Builder {
    let mut b = h2::client::Builder::new();
    b.initial_max_send_streams(100)
        .initial_window_size(2 << 20)
        .initial_connection_window_size(5 << 20)
        .max_frame_size(16 << 10)
        .max_send_buffer_size(1 << 20)
        .max_local_error_reset_streams(Some(LOCAL_ERROR_RESETS))
        .max_header_list_size(RESPONSE_HEAD_LIMIT)
        .enable_push(false);
    b
}

fn saturate(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}
