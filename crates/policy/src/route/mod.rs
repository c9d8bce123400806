//! Route policy (docs/routes.md): a service's timeout, retry budget, breaker settings and
//! ordered rules that send matching requests to weighted tag subsets.
//!
//! Operators write TOML and `hostmesh route set` stores it as JSON at `<prefix>/v1/routes/<service>`;
//! agents read it from catalog snapshots with [`RoutePolicy::from_json`].
//!
//! - `policy`: the validated types and their defaults.
//! - `parse`: TOML → validated policy, every problem with its key; unknown keys are problems.
//! - `json`: the stored JSON; the reader ignores unknown fields.
//! - `text`: the TOML `route get` prints.
//! - `matching`: which rule takes a request, and which split.
//! - `values`: the checks of single values (durations, ranges, header names, tags).
//!
//! Semantics worth knowing:
//! - A missing `[retry]` or `[breaker]` section, or a missing key in one, means the default
//!   (20 % + 10/s, 3 attempts; 5 failures, 5s doubling to 60s, 50 %). A missing `timeout` means
//!   the agent's `request_timeout`; a rule's `timeout` replaces the top-level one.
//! - `locality = "zone"` keeps requests in the caller's zone while it has a candidate that is
//!   not overloaded (the rule is the proxy's, in `outbound::route`); `"any"` (default) ignores zones.
//! - Rules are tried in order and the first match wins. A rule without `match` takes every request.
//!   `path_prefix` matches whole path segments (`/api` takes `/api/x`, not `/apix`; query ignored);
//!   `headers` are exact, case-sensitive values, all of which must be present.
//! - A split takes instances carrying every one of its tags. A rule with a timeout but no split
//!   keeps every passing instance as a candidate.

mod json;
mod matching;
mod parse;
mod policy;
#[cfg(test)]
mod tests;
mod text;
mod values;

pub use policy::{BreakerPolicy, Locality, RetryPolicy, RoutePolicy, Rule, Split};

// The TOML and JSON plumbing the access policy (`crate::access`) shares.
pub(crate) use json::to_toml_value;
pub(crate) use parse::{Unknown, syntax};
pub(crate) use values::mismatch;
