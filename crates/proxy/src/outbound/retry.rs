//! When a failed attempt may be tried again (docs/reference/http.md, "Retries"), and how often.
//!
//! - A request that provably never reached the app (the connect failed, the stream was refused,
//!   the peer agent has no such instance or could not reach its app) may be retried whatever its
//!   method, if its body can be sent again.
//! - Once it may have reached the app, only a request safe to repeat (GET, HEAD, OPTIONS, PUT,
//!   DELETE, or `x-hostmesh-retryable: true`) is retried, on a reset or a 502/503/504, and only if
//!   its body was buffered for replay (at most 64 KiB). Anything else is never sent twice.
//! - Every retry goes to a different instance, waits a jittered 25 → 250 ms backoff, starts
//!   before the deadline, and is paid from the service's retry budget (`budget.rs`; Linkerd's: 20 %
//!   of requests plus 10 per second over 10 s), so retries cannot multiply an outage.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hostmesh_wire as wire;
use http::{HeaderMap, Method, StatusCode};

use super::budget::RetryBudget;

/// Bodies up to this size are buffered so that a safe request can be replayed.
pub const MAX_REPLAY_BODY: u64 = 64 * 1024;

/// What a failed attempt says about whether the app saw the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The app never saw it: any request may go elsewhere.
    NeverReached,
    /// The app may have seen it: only safe requests may go elsewhere.
    MayHaveReached,
}

/// Whether a request may be repeated once it may have reached the app.
pub fn is_safe(method: &Method, headers: &HeaderMap) -> bool {
    is_safe_with(
        method,
        headers
            .get(wire::names::RETRYABLE)
            .and_then(|v| v.to_str().ok()),
    )
}

/// [`is_safe`] given the request's `x-hostmesh-retryable` value.
pub fn is_safe_with(method: &Method, retryable: Option<&str>) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE
    ) || retryable.is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// The failure class of a response status, if it is a failure that retries may help with.
pub fn classify_status(status: StatusCode, agent_error: Option<&str>) -> Option<Failure> {
    match agent_error {
        // The peer agent answered for an app it never reached.
        Some("no-local-instance" | "upstream-unreachable") => Some(Failure::NeverReached),
        _ => matches!(status.as_u16(), 502..=504).then_some(Failure::MayHaveReached),
    }
}

/// The failure class of a transport error.
pub fn classify_error(e: &hyper_util::client::legacy::Error) -> Failure {
    if e.is_connect() || crate::h2_client::refused_stream(e) {
        Failure::NeverReached
    } else {
        Failure::MayHaveReached
    }
}

/// The wait before retry number `retry` (1-based): 25 ms doubling to 250 ms, full jitter.
pub fn backoff(retry: u32, roll: f64) -> Duration {
    let base_ms = (25u64 << retry.saturating_sub(1).min(4)).min(250);
    Duration::from_secs_f64(base_ms as f64 / 1000.0 * roll.clamp(0.0, 1.0))
}

/// Retry budgets by service, rebuilt when a service's budget settings change.
#[derive(Debug, Default)]
pub struct Budgets {
    by_service: Mutex<HashMap<String, (BudgetSettings, Arc<RetryBudget>)>>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BudgetSettings {
    pub ratio: f64,
    pub min_per_second: u32,
}

impl Budgets {
    /// The budget of `service` with these settings.
    pub fn get(&self, service: &str, settings: BudgetSettings) -> Arc<RetryBudget> {
        let mut map = self.by_service.lock().unwrap_or_else(|e| e.into_inner());
        match map.get(service) {
            Some((s, b)) if *s == settings => b.clone(),
            _ => {
                let budget = Arc::new(RetryBudget::new(settings.ratio, settings.min_per_second));
                map.insert(service.to_owned(), (settings, budget.clone()));
                budget
            }
        }
    }
}

/// One request's view of its budget: deposits once, withdraws per retry.
pub struct Spend(Arc<RetryBudget>);

impl std::fmt::Debug for Spend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spend").finish_non_exhaustive()
    }
}

impl Spend {
    pub fn new(budget: Arc<RetryBudget>) -> Self {
        budget.deposit();
        Spend(budget)
    }

    /// Takes one retry from the budget; false when it is exhausted.
    pub fn withdraw(&self) -> bool {
        self.0.withdraw()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_methods_and_the_retryable_header() {
        let none = HeaderMap::new();
        for m in [
            Method::GET,
            Method::HEAD,
            Method::OPTIONS,
            Method::PUT,
            Method::DELETE,
        ] {
            assert!(is_safe(&m, &none), "{m}");
        }
        assert!(!is_safe(&Method::POST, &none));
        assert!(!is_safe(&Method::PATCH, &none));
        let mut h = HeaderMap::new();
        h.insert(wire::RETRYABLE, "true".parse().expect("value"));
        assert!(is_safe(&Method::POST, &h));
        h.insert(wire::RETRYABLE, "yes".parse().expect("value"));
        assert!(!is_safe(&Method::POST, &h));
    }

    #[test]
    fn statuses_classify() {
        assert_eq!(classify_status(StatusCode::OK, None), None);
        assert_eq!(classify_status(StatusCode::NOT_FOUND, None), None);
        assert_eq!(
            classify_status(StatusCode::BAD_GATEWAY, None),
            Some(Failure::MayHaveReached)
        );
        assert_eq!(
            classify_status(StatusCode::GATEWAY_TIMEOUT, None),
            Some(Failure::MayHaveReached)
        );
        assert_eq!(
            classify_status(StatusCode::SERVICE_UNAVAILABLE, Some("no-local-instance")),
            Some(Failure::NeverReached)
        );
        assert_eq!(
            classify_status(StatusCode::BAD_GATEWAY, Some("upstream-unreachable")),
            Some(Failure::NeverReached)
        );
        assert_eq!(
            classify_status(StatusCode::BAD_GATEWAY, Some("upstream-reset")),
            Some(Failure::MayHaveReached)
        );
    }

    #[test]
    fn backoff_grows_to_250ms_with_jitter() {
        assert_eq!(backoff(1, 1.0), Duration::from_millis(25));
        assert_eq!(backoff(2, 1.0), Duration::from_millis(50));
        assert_eq!(backoff(5, 1.0), Duration::from_millis(250));
        assert_eq!(backoff(9, 1.0), Duration::from_millis(250));
        assert_eq!(backoff(3, 0.5), Duration::from_millis(50));
        assert_eq!(backoff(3, 0.0), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn the_budget_allows_the_reserve_plus_a_ratio() {
        let budgets = Budgets::default();
        let settings = BudgetSettings {
            ratio: 0.2,
            min_per_second: 10,
        };
        let budget = budgets.get("orders", settings);
        // 100 requests deposit 20 retries on top of the 10/s reserve (over 10 s: 100).
        let spends: Vec<Spend> = (0..100).map(|_| Spend::new(budget.clone())).collect();
        let allowed = (0..1000).filter(|i| spends[i % 100].withdraw()).count();
        assert!((100..=130).contains(&allowed), "{allowed}");
        // Same settings: the same budget; new settings: a new one.
        assert!(Arc::ptr_eq(&budget, &budgets.get("orders", settings)));
        let other = BudgetSettings {
            ratio: 0.5,
            min_per_second: 10,
        };
        assert!(!Arc::ptr_eq(&budget, &budgets.get("orders", other)));
    }
}
