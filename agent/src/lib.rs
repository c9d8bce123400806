//! The hostmesh binary: the command line, the agent's start-up and shutdown order, and what
//! the process owns around the data path.
//!
//! # Layout
//! - [`cli`]: the command-line commands (`agent`, `services`, `endpoints`, `check-config`,
//!   `dev`, `route`, `policy`, `ca`, `dns`, `explain`, `maint`).
//! - [`run`]: `hostmesh agent`: wiring, start-up order, shutdown order; [`reload`]: SIGHUP.
//! - [`admin`]: `/live`, `/ready`, `/status`, `/metrics`, `/explain`, `/maint`.
//! - [`metrics`]: the one Prometheus registry, holding the handles each crate defines.
//! - [`signals`], [`telemetry`], [`notify`]: signals, logging, systemd's notify protocol.
//! - `fuzzing`: the one door the fuzz targets go through (hidden; not an API).
//!
//! Everything else is a library crate with one concern (docs/ARCHITECTURE.md, "Crates"):
//! `hostmesh-proxy` (the data path), `hostmesh-dns`, `hostmesh-capture`, `hostmesh-tls`,
//! `hostmesh-listen`, `hostmesh-registrar` (etcd), and the pure `hostmesh-policy`,
//! `hostmesh-balance`, `hostmesh-config` and `hostmesh-wire`.

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
