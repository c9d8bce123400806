//! Policies operators store in etcd: route policy (timeouts, retry budget, breaker settings,
//! rules and splits) and access policy (which hosts may call a service). Pure: TOML in from
//! `hostmesh route|policy set`, JSON in from the catalog, validated values out, and the TOML
//! `get` prints; nothing here opens a socket or talks to etcd.
//!
//! - [`route`]: route policy (docs/routes.md) and which rule and split a request takes.
//! - [`access`]: access policy (docs/policy.md); the agent decides per caller in its
//!   `access_table`, rebuilt from each catalog snapshot.
//! - [`StoredPolicyError`]: why either policy's stored JSON is refused.
//!
//! Both read TOML the same way: every problem reported with its key, unknown keys are problems,
//! and the stored JSON's reader ignores unknown fields so that older agents read newer values.

pub mod access;
pub mod route;
mod stored;

pub use stored::StoredPolicyError;
