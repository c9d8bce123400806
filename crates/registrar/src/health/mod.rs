//! Local health checks (docs/config.md, `[check]`).
//!
//! - [`probe`]: one attempt of an `http`, `tcp` or `exec` check, bounded by the check timeout.
//! - [`Thresholds`]: the pure rise/fall state machine that debounces probe results.
//! - [`run`]: the per-instance loop tying them together and publishing transitions on a
//!   `watch` channel, which the registration side turns into etcd writes.
//!
//! Checks only ever produce `passing` or `critical`; `maintenance` is the operator's call and is
//! layered on top by whoever publishes the record.
//!
//! Everything time-related goes through `tokio::time`, so tests (and anything else) can pause
//! and advance the clock.

mod error;
mod exec;
mod http;
mod tcp;
mod thresholds;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::record::Health;
use hostmesh_config::spec::{CheckKind, CheckSpec};

pub use error::ProbeError;
pub use thresholds::Thresholds;

/// Floor for the probe interval. Config validation is the real gate; this only keeps a zero
/// interval from panicking `tokio::time::interval` or turning into a busy loop.
const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// Runs one attempt of `kind` against `target` (ignored by `exec`), the whole attempt bounded by
/// `timeout`. The error says why it failed, in a short message ("HTTP 503", "timed out after
/// 1s", "connect 127.0.0.1:8080: connection refused") meant for logs and status output.
pub async fn probe(
    kind: &CheckKind,
    target: SocketAddr,
    timeout: Duration,
) -> Result<(), ProbeError> {
    match kind {
        CheckKind::Http { path } => bounded(timeout, http::probe(target, path)).await,
        CheckKind::Tcp => bounded(timeout, tcp::probe(target)).await,
        // exec enforces the timeout itself: on expiry it must also kill and reap the child.
        CheckKind::Exec { argv } => exec::probe(argv, timeout).await,
    }
}

async fn bounded(
    timeout: Duration,
    attempt: impl Future<Output = Result<(), ProbeError>>,
) -> Result<(), ProbeError> {
    tokio::time::timeout(timeout, attempt)
        .await
        .unwrap_or(Err(ProbeError::TimedOut(timeout)))
}

/// Checks `target` every `check.interval` until `cancel` fires, sending each passing/critical
/// transition on `health`.
///
/// The starting state is whatever `health` holds on entry (callers set `Critical`, so a new
/// instance must pass `healthy_after` probes before it takes traffic). The first probe runs
/// immediately. A probe that outlasts the interval delays the next one rather than triggering a
/// burst of catch-up probes. Cancellation also abandons an in-flight probe.
pub async fn run(
    check: CheckSpec,
    target: SocketAddr,
    health: watch::Sender<Health>,
    cancel: CancellationToken,
) {
    let kind = match &check.kind {
        CheckKind::Http { .. } => "http",
        CheckKind::Tcp => "tcp",
        CheckKind::Exec { .. } => "exec",
    };
    let mut thresholds =
        Thresholds::new(check.healthy_after, check.unhealthy_after, *health.borrow());
    let mut ticker = tokio::time::interval(check.interval.max(MIN_INTERVAL));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // Kept across successes so a recovery can say what the instance recovered from.
    let mut last_error: Option<String> = None;

    loop {
        let result = tokio::select! {
            biased;
            () = cancel.cancelled() => return,
            result = async {
                ticker.tick().await;
                probe(&check.kind, target, check.timeout).await
            } => result,
        };
        if let Err(error) = &result {
            debug!(%target, kind, %error, "health check failed");
            last_error = Some(error.to_string());
        }
        if let Some(new) = thresholds.observe(result.is_ok()) {
            let old = health.send_replace(new);
            let last_error = last_error.as_deref().unwrap_or("none");
            info!(%target, kind, %old, %new, last_error, "health {old} → {new}");
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// An HTTP server that answers the n-th request with `script[n]` (`true`: 200, `false`: 500)
    /// and notes the health the runner was publishing when that request arrived. The runner
    /// probes one at a time, so request n+1 shows exactly the state reached after result n,
    /// however fast or slow the machine is.
    async fn scripted_app(
        script: &'static [bool],
        health: watch::Receiver<Health>,
    ) -> (SocketAddr, tokio::task::JoinHandle<Vec<Health>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut seen = Vec::new();
            // One more than the script, to see the effect of its last entry.
            for n in 0..=script.len() {
                let (mut stream, _) = listener.accept().await.unwrap();
                let mut head = Vec::new();
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    let mut chunk = [0u8; 1024];
                    let len = stream.read(&mut chunk).await.unwrap();
                    assert!(len > 0);
                    head.extend_from_slice(&chunk[..len]);
                }
                seen.push(*health.borrow());
                let response: &[u8] = if script.get(n).copied().unwrap_or(true) {
                    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
                } else {
                    b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n"
                };
                stream.write_all(response).await.unwrap();
            }
            seen
        });
        (addr, task)
    }

    #[tokio::test]
    async fn run_follows_thresholds() {
        use Health::{Critical as C, Passing as P};
        const SCRIPT: &[bool] = &[
            true, true, // healthy_after = 2: passing
            false, false, true, // two failures, then a pass resets the count
            false, false, false, // unhealthy_after = 3: critical
            true, false, // one pass, then a failure resets the count
            true, true, // passing again
        ];
        // The state after each result, preceded by the initial one.
        const WANT: &[Health] = &[C, C, P, P, P, P, P, P, C, C, C, C, P];

        let (tx, rx) = watch::channel(Health::Critical);
        let (addr, app) = scripted_app(SCRIPT, rx.clone()).await;
        let check = CheckSpec {
            kind: CheckKind::Http {
                path: "/healthz".to_string(),
            },
            interval: MIN_INTERVAL,
            timeout: Duration::from_secs(5),
            unhealthy_after: 3,
            healthy_after: 2,
        };
        let cancel = CancellationToken::new();
        let runner = tokio::spawn(run(check, addr, tx, cancel.clone()));

        let seen = tokio::time::timeout(Duration::from_secs(30), app)
            .await
            .expect("the script finishes")
            .unwrap();
        assert_eq!(seen, WANT);

        cancel.cancel();
        tokio::time::timeout(Duration::from_secs(5), runner)
            .await
            .expect("run returns once cancelled")
            .unwrap();
        assert_eq!(*rx.borrow(), Health::Passing);
    }

    #[tokio::test]
    async fn run_stops_when_cancelled_mid_probe() {
        // An app that accepts and never answers: the runner sits in a probe with a long timeout.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let check = CheckSpec {
            kind: CheckKind::Http {
                path: "/healthz".to_string(),
            },
            interval: Duration::from_secs(60),
            timeout: Duration::from_secs(60),
            unhealthy_after: 1,
            healthy_after: 1,
        };
        let (tx, rx) = watch::channel(Health::Critical);
        let cancel = CancellationToken::new();
        let runner = tokio::spawn(run(check, addr, tx, cancel.clone()));
        let (_stream, _) = listener.accept().await.unwrap();

        cancel.cancel();
        tokio::time::timeout(Duration::from_secs(5), runner)
            .await
            .expect("run returns once cancelled")
            .unwrap();
        assert_eq!(*rx.borrow(), Health::Critical);
    }
}
