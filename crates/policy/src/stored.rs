//! Why a policy stored in etcd is refused, for route and access policies alike.

use hostmesh_config::Problems;

/// Why the JSON stored for a service's policy is refused as a whole. Nothing to retry: the agent
/// applies the fallback (route: the defaults; access: deny every caller) and warns once, until an
/// operator stores a valid policy with `hostmesh route|policy set`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StoredPolicyError {
    /// The stored bytes are not JSON at all; the catalog keeps such a value as a JSON string.
    #[error("the stored value is not JSON ({bytes} bytes)")]
    NotJson { bytes: usize },
    #[error("expected a JSON object")]
    NotAnObject,
    /// A `null` inside a list, which has no TOML form (a `null` member is an absent key).
    #[error("a list holds null")]
    NullInList,
    /// Values that break the policy's rules, each with its key (`retry.max_attempts: …`).
    #[error("{}", .0.one_line())]
    Invalid(Problems),
}
