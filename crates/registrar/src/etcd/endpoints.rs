//! Keeping dead endpoints out of the client's rotation.
//!
//! etcd-client spreads requests over all its endpoints (tonic's balanced channel, two random
//! choices per request), and an endpoint that refuses connections stays a candidate: with two
//! grpc-proxies and one of them down, about every other keep-alive, list and watch went to the
//! dead one and failed, and an agent lost its lease (TTL 4 s) within seconds. So each endpoint
//! is probed with a TCP connect every [`PROBE_EVERY`]; one that does not connect within
//! [`PROBE_WITHIN`] is taken out of the rotation until it does again. The last one is never
//! taken out (with every endpoint down, requests fail either way and retry on their own).
//!
//! A TCP connect proves a proxy or member is up, not that its member has a leader: that is what
//! `require_leader` on the client is for.

use std::collections::BTreeSet;
use std::time::Duration;

use etcd_client::Client;
use tokio_util::sync::CancellationToken;

/// How often every endpoint is probed.
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// How long a probe may take to connect.
const PROBE_WITHIN: Duration = Duration::from_secs(1);

/// Probes `endpoints` (the client's, as configured) until `cancel`, removing from `client`'s
/// rotation those that do not connect and adding them back once they do. Returns at once for a
/// single endpoint.
pub async fn keep_live_in_rotation(
    client: Client,
    endpoints: Vec<String>,
    cancel: CancellationToken,
) {
    if endpoints.len() < 2 {
        return;
    }
    let mut out: BTreeSet<String> = BTreeSet::new();
    let mut tick = tokio::time::interval(PROBE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        for endpoint in &endpoints {
            let up = connects(endpoint).await;
            let is_out = out.contains(endpoint);
            if !up && !is_out && out.len() + 1 < endpoints.len() {
                match client.remove_endpoint(endpoint).await {
                    Ok(()) => {
                        tracing::warn!(
                            endpoint = endpoint.as_str(),
                            "etcd endpoint does not accept connections; using the others until it does"
                        );
                        out.insert(endpoint.clone());
                    }
                    Err(e) => tracing::debug!(endpoint = endpoint.as_str(), "taking it out: {e}"),
                }
            } else if up && is_out {
                match client.add_endpoint(endpoint).await {
                    Ok(()) => {
                        tracing::info!(endpoint = endpoint.as_str(), "etcd endpoint is back");
                        out.remove(endpoint);
                    }
                    Err(e) => tracing::debug!(endpoint = endpoint.as_str(), "adding it back: {e}"),
                }
            }
        }
    }
}

/// Whether a TCP connection to the endpoint's host and port opens within [`PROBE_WITHIN`].
async fn connects(endpoint: &str) -> bool {
    let Some(address) = host_port(endpoint) else {
        return true;
    };
    matches!(
        tokio::time::timeout(PROBE_WITHIN, tokio::net::TcpStream::connect(address)).await,
        Ok(Ok(_))
    )
}

/// `HOST:PORT` of an endpoint URL as the config accepts them (`http(s)://HOST:PORT`, IPv6 in
/// brackets, an optional trailing `/`).
fn host_port(endpoint: &str) -> Option<&str> {
    let rest = endpoint
        .strip_prefix("http://")
        .or_else(|| endpoint.strip_prefix("https://"))?;
    Some(rest.trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_of_configured_urls() {
        assert_eq!(host_port("http://10.0.0.1:2379"), Some("10.0.0.1:2379"));
        assert_eq!(
            host_port("https://etcd-1.example:2379/"),
            Some("etcd-1.example:2379")
        );
        assert_eq!(host_port("http://[::1]:23790"), Some("[::1]:23790"));
        assert_eq!(host_port("unix:///run/etcd.sock"), None);
    }

    #[tokio::test]
    async fn an_endpoint_connects_when_something_listens() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("bound").port();
        assert!(connects(&format!("http://127.0.0.1:{port}")).await);
        drop(listener);
        assert!(!connects(&format!("http://127.0.0.1:{port}")).await);
    }
}
