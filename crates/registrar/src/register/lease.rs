//! Keeping one lease alive. etcd-client does not send keep-alives by itself: each beat sends one
//! and waits for its answer, reopening the stream after a failure.

use std::path::{Path, PathBuf};
use std::time::Duration;

use etcd_client::{Client, LeaseKeepAliveStream, LeaseKeeper};
use tokio::time::Instant;

pub(super) enum Beat {
    /// The lease is alive; `recovered` after one or more failed beats (etcd was unreachable).
    Alive { recovered: bool },
    /// This beat got no answer; the lease may still be alive.
    Failed(String),
    /// The lease is gone: etcd said so (a keep-alive answered TTL 0, or, after a TTL without a
    /// good beat, etcd's own account of the lease).
    Lost,
}

pub(super) struct KeepAlive {
    client: Client,
    lease: i64,
    ttl: Duration,
    stream: Option<(LeaseKeeper, LeaseKeepAliveStream)>,
    last_ok: Instant,
    failing: bool,
}

impl KeepAlive {
    pub(super) fn new(client: Client, lease: i64, ttl: Duration) -> Self {
        KeepAlive {
            client,
            lease,
            ttl,
            stream: None,
            last_ok: Instant::now(),
            failing: false,
        }
    }

    /// Sends one keep-alive and waits up to half the TTL for an answer.
    ///
    /// etcd answers at once; etcd's grpc-proxy answers a keep-alive only when its own
    /// keep-alive for the lease (sent a third of the TTL after the previous answer, on a 500 ms
    /// clock) comes back from etcd: up to a third of the TTL plus 500 ms later. Waiting a third
    /// of the TTL, as this did, counted 15 % of beats behind a proxy as failed (bench/fleet, 100
    /// agents, TTL 10 s: 302 in a minute) although the proxy kept every lease alive. Half the
    /// TTL covers the proxy's clock, and a beat that waits is on its own task (see `beat` in
    /// the registrar), so nothing else waits with it.
    ///
    /// The stream stays open when the answer is late: dropping it made the proxy start over
    /// each time and no beat ever got its answer (20 agents behind a proxy, TTL 4 s: leases
    /// lost). A late answer is taken by the next beat. Only an error, or a whole TTL without
    /// any answer, reopens the stream.
    pub(super) async fn beat(&mut self) -> Beat {
        let wait = (self.ttl / 2).max(Duration::from_millis(500));
        match tokio::time::timeout(wait, self.send()).await {
            Ok(Ok(ttl)) if ttl > 0 => {
                self.last_ok = Instant::now();
                let recovered = std::mem::replace(&mut self.failing, false);
                Beat::Alive { recovered }
            }
            Ok(Ok(_)) => Beat::Lost,
            Ok(Err(e)) => {
                self.stream = None;
                self.failed(e, wait).await
            }
            Err(_) => {
                if self.last_ok.elapsed() >= self.ttl {
                    self.stream = None;
                }
                self.failed(format!("no answer within {wait:?}"), wait)
                    .await
            }
        }
    }

    /// No answer is not an answer: only etcd decides that the lease is gone. While no member
    /// has quorum (every member down, or restarting) no lease expires, and one that survives
    /// the outage must be kept: giving it up after a TTL of silence made the next session
    /// revoke it, which deleted every instance of the host for a moment once etcd was back
    /// (seen in the lab: 240 failed lookups after a minute without etcd). So after a TTL of
    /// failed beats etcd is asked about the lease; only its answer that the lease is unknown
    /// (a partition from a live etcd outlived the TTL) ends the session.
    async fn failed(&mut self, e: String, wait: Duration) -> Beat {
        self.failing = true;
        if self.last_ok.elapsed() >= self.ttl && self.known_gone(wait).await {
            Beat::Lost
        } else {
            Beat::Failed(e)
        }
    }

    /// Whether etcd answers that the lease no longer exists (TTL -1). No answer: not known.
    async fn known_gone(&self, wait: Duration) -> bool {
        let mut leases = self.client.lease_client();
        matches!(
            tokio::time::timeout(wait, leases.time_to_live(self.lease, None)).await,
            Ok(Ok(resp)) if resp.ttl() <= 0
        )
    }

    /// Sends a keep-alive and returns the TTL of the next answer on the stream: this one's, or
    /// one that came after an earlier beat stopped waiting. Answers already waiting are all
    /// read, and the newest counts.
    async fn send(&mut self) -> Result<i64, String> {
        if self.stream.is_none() {
            let s = self
                .client
                .lease_client()
                .keep_alive(self.lease)
                .await
                .map_err(|e| e.to_string())?;
            self.stream = Some(s);
        }
        let Some((keeper, stream)) = self.stream.as_mut() else {
            return Err("no keep-alive stream".into());
        };
        keeper.keep_alive().await.map_err(|e| e.to_string())?;
        let mut ttl = answer(stream.message().await)?;
        // `timeout` polls once before it looks at the clock: with zero, "if one is ready".
        while let Ok(next) = tokio::time::timeout(Duration::ZERO, stream.message()).await {
            ttl = answer(next)?;
        }
        Ok(ttl)
    }
}

/// The TTL a keep-alive answer carries.
fn answer(
    msg: Result<Option<etcd_client::LeaseKeepAliveResponse>, etcd_client::Error>,
) -> Result<i64, String> {
    match msg {
        Ok(Some(resp)) => Ok(resp.ttl()),
        Ok(None) => Err("keep-alive stream closed".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// The lease id this agent holds, kept in `data_dir` so that an agent restarted after a crash
/// recognises its own still-live lease instead of refusing to start.
#[derive(Debug)]
pub(super) struct LeaseFile {
    path: PathBuf,
}

impl LeaseFile {
    pub(super) fn new(data_dir: &Path) -> Self {
        LeaseFile {
            path: data_dir.join("lease"),
        }
    }

    pub(super) fn read(&self) -> Option<i64> {
        let text = std::fs::read_to_string(&self.path).ok()?;
        i64::from_str_radix(text.trim(), 16).ok()
    }

    pub(super) fn write(&self, lease: i64) {
        if let Some(dir) = self.path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        if let Err(e) = std::fs::write(&self.path, format!("{lease:x}\n")) {
            tracing::warn!("could not record the lease in {}: {e}", self.path.display());
        }
    }

    pub(super) fn remove(&self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
