//! hostmesh's registry side: everything that talks to etcd.
//!
//! # Layout
//! - [`record`] and [`keys`]: the etcd layout, shared by writers and readers.
//! - [`etcd`]: connecting to etcd (endpoints, TLS, auth) and retrying with backoff.
//! - [`register`]: one lease per host, keep-alive, re-registration and anti-entropy.
//! - [`health`]: local health checks with rise/fall thresholds.
//! - [`vip`]: VIP allocation in one transaction.
//! - [`catalog`]: list + watch that turns etcd into immutable [`catalog::Snapshot`]s, fail-static.
//!
//! What a service is (`hostmesh_config::spec`) and the name rules records are checked against
//! (`hostmesh_config::names`) come from the `hostmesh-config` crate, shared with local files.

mod atomic_file;
pub mod catalog;
pub mod etcd;
pub mod health;
pub mod keys;
pub mod metrics;
pub mod record;
pub mod register;
pub mod timer;
pub mod vip;
