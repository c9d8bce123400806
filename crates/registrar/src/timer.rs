//! Waiting for an optional moment inside `select!` loops (a pending repair, a pending retry).

use tokio::time::Instant;

/// Completes at `at`; never when `None`.
pub async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
