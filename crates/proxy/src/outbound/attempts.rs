//! One HTTP request's attempts: pick an instance, send, judge the answer, and maybe try another
//! (the rules are in [`retry`](super::retry)). The same loop serves both HTTP paths, which
//! differ only in how a request travels ([`Exchange`]): hyper's (`http`, any instance, any
//! framing) and the lean HTTP/1 one (`h1`, same-host instances).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::StatusCode;
use tokio::time::Instant;

use super::Outbound;
use super::decision::Decision;
use super::retry::{self, Failure};
use super::route::{Endpoint, Route};
use crate::http_errors::Reason;

/// How one request is carried to an instance and what comes back.
pub(super) trait Exchange {
    type Response;

    /// Sends one attempt to `ep`, which has `remaining` of the request's deadline to answer.
    /// Returns the response head and, when it went out later than the attempt started, when the
    /// request could first go out (connection setup is not the instance's latency, see `pool`).
    fn send(
        &mut self,
        ctx: &Outbound,
        route: &Route,
        ep: &Endpoint,
        remaining: Duration,
    ) -> impl Future<Output = Result<(Self::Response, Option<Instant>), Refused>>;

    fn status(resp: &Self::Response) -> StatusCode;

    /// The response's `x-hostmesh-error`, when an agent (the peer) made it.
    fn agent_error(resp: &Self::Response) -> Option<&str>;

    /// Whether another attempt can carry the request body after `failure`.
    fn ready_again(&mut self, failure: Failure, safe: bool) -> bool;

    /// Whether reading the client's request body failed (bad framing, the client went away):
    /// an attempt that failed then is the client's fault, not the instance's.
    fn body_failed(&self) -> bool {
        false
    }
}

/// How [`run`] bounds each attempt by its deadline.
pub(super) trait Timer {
    fn within<F: Future>(
        &mut self,
        at: Instant,
        f: F,
    ) -> impl Future<Output = Result<F::Output, Elapsed>>;
}

/// An attempt ran past its deadline.
#[derive(Debug)]
pub(crate) struct Elapsed;

/// tokio's timer, an entry per attempt.
#[derive(Debug)]
pub(super) struct PerAttempt;

impl Timer for PerAttempt {
    fn within<F: Future>(
        &mut self,
        at: Instant,
        f: F,
    ) -> impl Future<Output = Result<F::Output, Elapsed>> {
        TimeoutAt {
            inner: tokio::time::timeout_at(at, f),
        }
    }
}

pin_project_lite::pin_project! {
    /// tokio's timeout with [`Elapsed`] for its error. Not an `async fn` over `timeout_at`: that
    /// would hold the attempt's future twice (see `h1::timer::Until`).
    struct TimeoutAt<F> {
        #[pin]
        inner: tokio::time::Timeout<F>,
    }
}

impl<F: Future> Future for TimeoutAt<F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project()
            .inner
            .poll(cx)
            .map(|r| r.map_err(|_| Elapsed))
    }
}

/// Why an attempt got no response.
#[derive(Debug)]
pub(super) enum Refused {
    /// The instance is not defined on this host (any more): it never saw the request.
    Undefined,
    /// The transport failed; `Failure` says whether the app may have seen the request.
    Failed(Failure, String),
}

/// What [`run`] did, for the access log: attempts sent and the instance of the last one.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    pub(crate) attempts: u32,
    /// An index in the route's `endpoints`.
    pub(crate) last: Option<usize>,
}

/// What a request ends with when no attempt succeeded.
pub(super) enum Last<R> {
    Reason(Reason),
    Response(R),
}

/// Runs the attempts of one request to `route` until one succeeds or none may follow. `safe`:
/// the request may be repeated once it may have reached an app. `Err` carries the last failure.
// The request's parts the loop reads (route, decision, deadline, safety) and the three things it
// drives (the exchange, its timer, the tally) are all distinct; a struct would only rename them.
#[allow(clippy::too_many_arguments)]
pub(super) async fn run<X: Exchange>(
    ctx: &Outbound,
    route: &Route,
    decision: &Decision<'_>,
    deadline: Instant,
    safe: bool,
    exchange: &mut X,
    timer: &mut impl Timer,
    tally: &mut Tally,
) -> Result<X::Response, Last<X::Response>> {
    let policy = &route.policy;
    let spend = retry::Spend::new(route.budget.clone());
    let max_attempts = policy.retry.max_attempts.max(1) as usize;
    let mut tried: Vec<usize> = Vec::new();
    let mut last = Last::Reason(Reason::NoEndpoints);
    let mut attempt = 0;
    let eligible = |ep: &Endpoint| decision.admits(ep);
    while attempt < max_attempts {
        // One clock read serves the pick, the breaker and the latency sample's start.
        let now = Instant::now();
        let Some(idx) = route.pick_at(&tried, eligible, now) else {
            break;
        };
        let ep = &route.endpoints[idx];
        if ep.local && !ctx.policies.allows(&route.service, &ctx.self_host) {
            // The caller is this host, which every other instance would refuse as well.
            ctx.metrics.policy_denied(&route.service, "outbound");
            return Err(Last::Reason(Reason::Forbidden));
        }
        if now >= deadline {
            last = Last::Reason(Reason::DeadlineExceeded);
            break;
        }
        let Some(admission) = route.group.admit(&ep.breaker, now) else {
            // Another request took this instance's half-open probe: not an attempt.
            tried.push(idx);
            continue;
        };
        attempt += 1;
        tally.attempts += 1;
        tally.last = Some(idx);
        route.count_zone(&ctx.metrics, ep);
        let try_deadline = policy
            .retry
            .per_try_timeout
            .map_or(deadline, |t| deadline.min(now + t));
        let inflight = ep.stats.start_at(now);
        let sent = timer
            .within(try_deadline, exchange.send(ctx, route, ep, deadline - now))
            .await;
        let failure = match sent {
            Err(_) => {
                inflight.failed();
                if Instant::now() >= deadline {
                    // The request's own deadline ran out: that says nothing certain about the
                    // instance (a client may ask for 1 ms), so the breaker is not told.
                    drop(admission);
                    return Err(Last::Reason(Reason::DeadlineExceeded));
                }
                ctx.report(route, admission, false);
                last = Last::Reason(Reason::DeadlineExceeded);
                Failure::MayHaveReached
            }
            Ok(Ok((resp, ready_at))) => {
                let agent_error = X::agent_error(&resp);
                if agent_error == Some(Reason::Forbidden.as_str()) {
                    // The peer's policy refuses this host: nothing about the instance's health
                    // (no breaker report, no latency sample), and every other instance would
                    // refuse too. The client gets the 403 as it is.
                    drop((admission, inflight));
                    ctx.metrics.policy_denied(&route.service, "outbound");
                    last = Last::Response(resp);
                    break;
                }
                match retry::classify_status(X::status(&resp), agent_error) {
                    None => {
                        let done = Instant::now();
                        let ready_at = ready_at.unwrap_or(now);
                        inflight.finish_at(done, done.saturating_duration_since(ready_at));
                        ctx.report(route, admission, true);
                        return Ok(resp);
                    }
                    Some(f) => {
                        inflight.failed();
                        ctx.report(route, admission, false);
                        last = Last::Response(resp);
                        f
                    }
                }
            }
            Ok(Err(Refused::Undefined)) => {
                // Not an attempt the instance saw: no breaker report, no latency sample.
                drop((admission, inflight));
                tried.push(idx);
                last = Last::Reason(Reason::NoLocalInstance);
                if exchange.ready_again(Failure::NeverReached, safe) {
                    continue;
                }
                break;
            }
            Ok(Err(Refused::Failed(_, why))) if exchange.body_failed() => {
                // Blame only what is proven: the instance did nothing wrong, so no breaker
                // report and no retry (the body is spoiled); the client gets a 400.
                drop((admission, inflight));
                tracing::debug!(
                    service = route.service,
                    "the client's request body failed: {why}"
                );
                return Err(Last::Reason(Reason::BadRequest));
            }
            Ok(Err(Refused::Failed(f, why))) => {
                inflight.failed();
                ctx.report(route, admission, false);
                tracing::debug!(
                    service = route.service,
                    host = ep.host,
                    ?f,
                    "attempt failed: {why}"
                );
                last = Last::Reason(match f {
                    Failure::NeverReached => Reason::UpstreamUnreachable,
                    Failure::MayHaveReached => Reason::UpstreamReset,
                });
                f
            }
        };
        tried.push(idx);
        if attempt == max_attempts || !exchange.ready_again(failure, safe) {
            break;
        }
        if !spend.withdraw() {
            ctx.metrics.retry_budget_exhausted(&route.service);
            break;
        }
        let wait = retry::backoff(attempt as u32, hostmesh_balance::unit_roll());
        if Instant::now() + wait >= deadline {
            last = Last::Reason(Reason::DeadlineExceeded);
            break;
        }
        tokio::time::sleep(wait).await;
        ctx.metrics.retry(
            &route.service,
            match failure {
                Failure::NeverReached => "never-reached",
                Failure::MayHaveReached => "failed",
            },
        );
    }
    Err(last)
}
