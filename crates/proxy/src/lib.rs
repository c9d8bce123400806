//! The data path: apps' connections to VIPs (outbound) and peers' connections to this host's
//! apps (inbound), HTTP (h1/h2) and TCP, balanced, retried within a budget, under deadlines
//! that travel across hops, with breakers and access policy applied, traced and counted.
//!
//! - [`outbound`]: from a captured connection to an instance: the route table per snapshot, the
//!   lean HTTP/1 path and hyper's path, the strict HTTP/1 guard, retries, TCP.
//! - [`inbound`]: from a peer (mTLS, ALPN `h2` or `hostmesh-tcp/1`) to the local app.
//! - [`h2_client`], [`pool`], [`connect`], [`h2_limits`]: connections to peers and `grpc` apps
//!   (HTTP/2, one per peer or app per worker) and to `http` apps; [`h2_stream`]: bodies on
//!   HTTP/2 streams, both ways; [`prefixed`]: a
//!   stream with its sniffed head put back; [`settings`]: the `[proxy]` settings both sides read.
//! - [`workers`]: the per-core runtimes connections are served on.
//! - [`local`]: this host's instances, as the inbound side resolves them.
//! - [`app_request`]: what an app receives, decided once for the three paths that write it.
//! - [`access_log`]: a line per request or TCP connection, written off the data path.
//! - [`access_table`]: who may call each service, from access policies and the catalog.
//! - [`http_errors`], [`body`]: the agent's own answers, and bodies passed through; `date`:
//!   the `date` line of responses the lean path writes.
//! - [`trace`]: W3C trace context across hops, spans exported over OTLP/HTTP.
//! - [`metrics`]: the data path's metric handles.

pub mod access_log;
pub mod access_table;
pub mod app_request;
pub mod body;
pub mod client_left;
pub mod connect;
mod date;
// The fuzz targets' entry points, re-exported by the agent's `hostmesh::fuzzing`; not an API.
#[doc(hidden)]
pub mod fuzzing;
pub mod h2_client;
pub mod h2_limits;
pub mod h2_stream;
pub mod http_errors;
pub mod inbound;
pub mod local;
pub mod metrics;
pub mod outbound;
pub mod pool;
pub mod prefixed;
pub mod settings;
mod sweep;
pub mod trace;
pub mod workers;

/// This build's version, as spans carry it (`service.version`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
