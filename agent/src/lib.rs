//! The hostmesh agent and command-line tool.
//!
//! # Layout
//! - [`outbound`]: apps' connections to VIPs: HTTP (h1/h2) and TCP, balanced, with failover.
//! - [`inbound`]: peers' connections to this host's apps; [`wire`]: the agent-to-agent protocol.
//! - [`pool`]: connections to peers and local apps; [`local`]: this host's instances.
//! - [`headers`], [`http_errors`], [`body`]: header hygiene, the agent's own answers, bodies.
//! - [`access_table`]: who may call each service, from access policies and the catalog.
//! - [`run`]: `hostmesh agent`: wiring, start-up order, shutdown order; [`reload`]: SIGHUP.
//! - [`admin`]: `/live`, `/ready`, `/status`, `/metrics`.
//! - [`metrics`]: the one Prometheus registry and its handles.
//! - [`cli`]: the command-line commands (`services`, `endpoints`, `check-config`, `dev`).
//! - [`signals`], [`telemetry`], [`notify`]: signals, logging, systemd's notify protocol.
//! - [`trace`]: W3C trace context across hops, spans exported over OTLP/HTTP.
//!
//! The etcd side (registration, health checks, VIPs, the catalog) is the `hostmesh-registrar`
//! crate; the DNS shim is `hostmesh-dns`; capture is `hostmesh-capture`; what listeners share (descriptors, idle eviction, draining) is `hostmesh-listen`;
//! route and access policies are `hostmesh-policy`; the agent config, service definitions and name rules are `hostmesh-config`; the wire
//! protocol and header hygiene are `hostmesh-wire`; balancing and breakers are `hostmesh-balance`.

pub mod admin;
pub mod cli;
// The one door the fuzz targets (`fuzz/`) and the corpus replay test (`tests/fuzz_corpus.rs`)
// go through to reach the parsers; not an API.
#[doc(hidden)]
pub mod fuzzing;
pub mod metrics;
pub mod notify;
pub mod reload;
pub mod run;
pub mod signals;
pub mod telemetry;

/// This build's version, as `hostmesh --version` prints it and `hostmesh_build_info` labels it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
