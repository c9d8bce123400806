//! The hostmesh agent and command-line tool.
//!
//! # Layout
//! - [`config`]: the agent config and service definitions, every problem reported at once.
//! - [`dns`]: the DNS shim: mesh names to VIPs from the catalog, everything else forwarded.
//! - [`run`]: `hostmesh agent`: wiring, start-up order, shutdown order.
//! - [`admin`]: `/live`, `/ready`, `/status`, `/metrics`.
//! - [`metrics`]: the one Prometheus registry and its handles.
//! - [`cli`]: the command-line commands (`services`, `endpoints`, `check-config`, `dev`).
//! - [`signals`], [`telemetry`]: signals and logging.
//!
//! The etcd side (registration, health checks, VIPs, the catalog) is the `hostmesh-registrar`
//! crate.

pub mod admin;
pub mod cli;
pub mod config;
pub mod dns;
pub mod metrics;
pub mod run;
pub mod signals;
pub mod telemetry;

/// This build's version, as `hostmesh --version` prints it and `hostmesh_build_info` labels it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
