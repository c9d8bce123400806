//! Access policy (docs/policy.md): which hosts may call a service.
//!
//! Operators write TOML and `hostmesh policy set` stores it as JSON at
//! `<prefix>/v1/policies/<service>`; agents read it from catalog snapshots.
//!
//! - `policy`: the validated policy and its host patterns.
//! - `parse`: TOML → validated policy, every problem with its key; unknown keys are problems.
//! - `json`: the stored JSON; the reader ignores unknown fields.
//! - `text`: the TOML `policy get` prints.
//!
//! The decision per caller, rebuilt from each catalog snapshot, is the agent's `access_table`.
//!
//! Semantics worth knowing:
//! - Identity is the host. A caller is allowed when its host has a registered instance (whatever
//!   its health) of one of the `allow` services, or its name matches one of `allow_hosts`
//!   (exactly, or by prefix for a pattern ending in `*`).
//! - A service without a policy follows `[policy] default`.
//! - Fail closed: a stored policy that does not parse denies every caller of its service (one
//!   warning per bad value), and so does every service before the first catalog is loaded.

mod json;
mod parse;
mod policy;
#[cfg(test)]
mod tests;
mod text;

pub use policy::{AccessPolicy, HostPattern, HostPatternError};
