//! hostmesh's registry side: everything that talks to etcd.
//!
//! # Layout
//! - [`spec`]: what this host runs (validated local definitions, produced by the agent's config).
//! - [`record`] and [`keys`]: the etcd layout, shared by writers and readers.
//! - [`names`]: the name rules, for local files and for records read from etcd alike.
//! - [`etcd`]: connecting to etcd (endpoints, TLS, auth) and retrying with backoff.
//! - [`register`]: one lease per host, keep-alive, re-registration and anti-entropy.
//! - [`health`]: local health checks with rise/fall thresholds.
//! - [`vip`]: VIP allocation in one transaction.
//! - [`catalog`]: list + watch that turns etcd into immutable [`catalog::Snapshot`]s, fail-static.

mod atomic_file;
pub mod catalog;
pub mod etcd;
pub mod health;
pub mod keys;
pub mod metrics;
pub mod names;
pub mod record;
pub mod register;
pub mod spec;
pub mod timer;
pub mod vip;
