//! What every listener shares (the data path's, the DNS shim's TCP side, the admin endpoint):
//! a budget of file descriptors and an account of running out, idle tracking with eviction at a
//! connection cap, and draining served connections at shutdown.
//!
//! - [`descriptors`]: `nofile` raised to the hard limit at start, the budget it leaves, and
//!   `hostmesh_descriptors_exhausted_total` with a rate-limited log line when accept fails.
//! - [`idle`]: when a served connection last did anything, closing it after an idle period,
//!   and evicting the idlest connection when a listener is at its cap.
//! - [`shutdown`]: telling served HTTP connections to finish once the agent has deregistered.

pub mod descriptors;
pub mod idle;
pub mod shutdown;
