//! The DNS shim: mesh names to VIPs from the catalog, everything else forwarded.
//!
//! - `NAME.<domain>` → A, the service's VIP; `TAG.NAME.<domain>` → A, the tag subset's VIP;
//!   `_NAME._tcp.<domain>` → one SRV per distinct port, the A in the additional section.
//! - Other types for a mesh name (AAAA above all) → NOERROR, no answer, SOA; unknown names →
//!   NXDOMAIN with the SOA (its minimum is the DNS TTL, for negative caching); before any
//!   catalog was loaded → SERVFAIL.
//! - With `dns.consul`, Consul's names under `consul.` answer the same VIPs (`consul`).
//! - Names outside the domain → the upstreams (`system` = resolv.conf at start, minus this
//!   shim), or REFUSED when there are none.
//!
//! Layout: `table` (names of one snapshot), `answer` (the pure answer to one packet),
//! `consul` (Consul's names mapped onto the table at lookup time),
//! `wire` (parsing, sizing, truncation), `forward` and `upstream` (forwarding), `server`
//! with `udp` and `tcp` (sockets and limits) and what they `shared`, `metrics`.

mod answer;
mod consul;
mod fixture;
mod forward;
mod metrics;
mod server;
mod shared;
// The fuzz target's entry point, re-exported by the agent's `hostmesh::fuzzing`; not an API.
#[doc(hidden)]
pub mod fuzzing;
pub(crate) mod table;
mod tcp;
mod udp;
mod upstream;
pub(crate) mod wire;

#[cfg(test)]
mod consul_tests;
#[cfg(test)]
mod corpus;
#[cfg(test)]
mod server_tests;

pub use answer::{Handled, Reply, answer_local};
pub use metrics::DnsMetrics;
pub use server::{DnsServer, MAX_TCP_CONNECTIONS};
pub use table::{Table, Zone};
pub use wire::{Request, Transport};
