//! nft capture: one nftables table owned by the agent sends this host's TCP for `vip_range` to
//! the outbound listener, which reads the dialed VIP:port back with SO_ORIGINAL_DST.
//!
//! Why a table of our own, applied with the `nft` command: one table is one atomic unit that we
//! can replace or delete without reading or touching anyone else's rules, and `nft -f -` applies
//! a whole batch in one transaction (no window with a half-installed table). Only the `output`
//! hook is used: VIPs live on loopback, so only this host's own processes can dial them, and no
//! forwarded or incoming traffic is ever looked at.
//!
//! The table is deleted on [`NftCapture::remove`], on drop as a fallback, and at every install
//! (a crashed agent leaves one behind).

use std::ffi::{OsStr, OsString};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use ipnet::Ipv4Net;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::nft_cmd::{self, NftError};
use super::original_dst::original_dst;
use super::{CaptureError, CaptureMetrics, CaptureStatus, Handoff, accept_loop, human};

/// The name of capture's table (family `ip`). Lockdown keeps its own (`lockdown::TABLE`), so
/// that each can be replaced or deleted without touching the other.
pub const TABLE: &str = "hostmesh";

/// The installed table. Deleting it is [`NftCapture::remove`]; dropping it deletes it too.
#[derive(Debug)]
pub struct NftCapture {
    vip_range: Ipv4Net,
    target: SocketAddrV4,
    program: OsString,
    installed: bool,
}

impl NftCapture {
    /// Replaces any table of ours (a crashed agent's) with one that sends TCP for `vip_range`
    /// to `outbound`, in one transaction. Needs CAP_NET_ADMIN and the `nft` command.
    pub async fn install(vip_range: Ipv4Net, outbound: SocketAddr) -> Result<Self, CaptureError> {
        Self::install_with(OsStr::new("nft"), vip_range, outbound).await
    }

    async fn install_with(
        program: &OsStr,
        vip_range: Ipv4Net,
        outbound: SocketAddr,
    ) -> Result<Self, CaptureError> {
        let SocketAddr::V4(outbound) = outbound else {
            return Err(CaptureError::NotIpv4(outbound));
        };
        // A wildcard listener is reached on loopback, which is where VIP traffic already is.
        let ip = if outbound.ip().is_unspecified() {
            Ipv4Addr::LOCALHOST
        } else {
            *outbound.ip()
        };
        let mut table = NftCapture {
            vip_range,
            target: SocketAddrV4::new(ip, outbound.port()),
            program: program.to_owned(),
            installed: false,
        };
        table.apply().await?;
        table.installed = true;
        Ok(table)
    }

    /// The batch [`install`](Self::install) applies.
    pub fn ruleset(&self) -> String {
        // Declaring the table before deleting it makes the delete succeed whether or not a
        // leftover exists, so "remove the old one, add the new one" is a single transaction.
        // `dnat` to the exact outbound address rather than `redirect` (which always means
        // 127.0.0.1) so that any local outbound_listen address works.
        format!(
            "table ip {TABLE}\n\
             delete table ip {TABLE}\n\
             table ip {TABLE} {{\n\
             \tchain output {{\n\
             \t\ttype nat hook output priority -100; policy accept;\n\
             \t\tip daddr {range} meta l4proto tcp dnat to {target}\n\
             \t}}\n\
             }}\n",
            range = self.vip_range,
            target = self.target,
        )
    }

    async fn apply(&self) -> Result<(), CaptureError> {
        nft_cmd::apply(&self.program, &self.ruleset()).await?;
        Ok(())
    }

    /// Whether our table is (still) in the ruleset.
    pub async fn is_installed(&self) -> Result<bool, CaptureError> {
        match nft_cmd::run(&self.program, &["list", "table", "ip", TABLE], None).await {
            Ok(_) => Ok(true),
            Err(e) if e.is_no_such_table() => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes the table; new connections to VIPs are no longer captured (and fail, as nothing
    /// listens there). Connections already redirected keep working.
    pub async fn remove(mut self) -> Result<(), CaptureError> {
        // Whatever the outcome, drop must not try again behind the caller's back.
        self.installed = false;
        nft_cmd::apply(&self.program, &delete_batch()).await?;
        Ok(())
    }

    /// The outbound listener's accept loop: hands each redirected connection over with the VIP
    /// it was dialed to; closes one whose original destination is not in `vip_range` (someone
    /// connecting to the outbound port directly). Returns when `cancel` fires.
    pub async fn serve(
        listener: TcpListener,
        vip_range: Ipv4Net,
        handoff: Handoff,
        cancel: CancellationToken,
    ) {
        let _held = super::Held::new(&handoff.metrics.listeners);
        let metrics = &handoff.metrics;
        accept_loop(listener, &handoff, &cancel, |stream, peer, permit| {
            match original_dst(&stream) {
                Ok(dst) if vip_range.contains(dst.ip()) => (handoff.handler)(stream, dst, permit),
                Ok(dst) => {
                    metrics.rejected.inc();
                    tracing::debug!(%peer, %dst, "closing a connection that was not to a VIP");
                }
                Err(e) => {
                    metrics.rejected.inc();
                    tracing::debug!(%peer, "closing a connection without original destination: {e}");
                }
            }
        })
        .await;
    }

    /// Owns the table while capture runs: every `interval` checks it is still there and puts it
    /// back if not (a firewall reload that flushes the whole ruleset would otherwise silently
    /// end capture), reporting in `status`. Removes the table when `cancel` fires.
    pub(crate) async fn keep(
        self,
        interval: Duration,
        status: CaptureStatus,
        metrics: CaptureMetrics,
        cancel: CancellationToken,
    ) -> Result<(), CaptureError> {
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                () = tokio::time::sleep(interval) => {}
            }
            let problem = match self.is_installed().await {
                Ok(true) => None,
                Ok(false) => {
                    tracing::warn!(
                        "nftables table ip {TABLE} vanished (a firewall reload?); installing it again"
                    );
                    match self.apply().await {
                        Ok(()) => {
                            metrics.table_reinstalls.inc();
                            None
                        }
                        Err(e) => Some(format!(
                            "nftables table ip {TABLE} is missing and could not be installed \
                             again: {e}; retrying every {}",
                            human(interval)
                        )),
                    }
                }
                Err(e) => Some(format!("cannot check nftables table ip {TABLE}: {e}")),
            };
            if let Some(p) = &problem {
                tracing::warn!("{p}");
            }
            status.set_table_problem(problem);
        }
        let removed = self.remove().await;
        match &removed {
            Ok(()) => tracing::info!("nftables table ip {TABLE} removed"),
            Err(e) => tracing::error!("removing nftables table ip {TABLE}: {e}"),
        }
        removed
    }
}

impl Drop for NftCapture {
    fn drop(&mut self) {
        if !self.installed {
            return;
        }
        // The fallback for paths that never reached remove() (an early return, a panic):
        // blocking briefly here is better than leaving the redirect behind.
        match nft_cmd::apply_blocking(&self.program, &delete_batch()) {
            Ok(()) => tracing::info!("nftables table ip {TABLE} removed on drop"),
            Err(e) => tracing::error!("removing nftables table ip {TABLE} on drop: {e}"),
        }
    }
}

/// Deletes our table whether or not it exists.
fn delete_batch() -> String {
    nft_cmd::delete_batch(&format!("ip {TABLE}"))
}

impl From<NftError> for CaptureError {
    fn from(e: NftError) -> Self {
        match e {
            NftError::NotFound => CaptureError::NftNotFound,
            NftError::PermissionDenied(why) => CaptureError::PermissionDenied(why),
            NftError::Failed(why) => CaptureError::Nft(why),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Arc;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    use tokio::sync::{Semaphore, mpsc};

    use super::*;
    use crate::Capture;
    use crate::test_netns::{Netns, sh};

    const WAIT: Duration = Duration::from_secs(5);

    #[test]
    fn ruleset_touches_only_tcp_to_the_vip_range() {
        let t = NftCapture {
            vip_range: "127.77.0.0/16".parse().unwrap(),
            target: "127.0.0.1:4140".parse().unwrap(),
            program: "nft".into(),
            installed: false,
        };
        let rules = t.ruleset();
        assert!(rules.starts_with("table ip hostmesh\ndelete table ip hostmesh\n"));
        assert!(rules.contains("type nat hook output priority -100;"));
        assert!(rules.contains("ip daddr 127.77.0.0/16 meta l4proto tcp dnat to 127.0.0.1:4140"));
        assert_eq!(rules.matches("dnat").count(), 1);
    }

    #[test]
    fn errors_say_what_to_do_about_capture() {
        let e = CaptureError::from(NftError::PermissionDenied("Operation not permitted".into()));
        assert!(matches!(e, CaptureError::PermissionDenied(_)), "{e}");
        assert!(e.to_string().contains("CAP_NET_ADMIN"), "{e}");
        let e = CaptureError::from(NftError::Failed("Error: syntax error".into()));
        assert_eq!(e.to_string(), "nft failed: Error: syntax error");
        assert!(matches!(
            CaptureError::from(NftError::NotFound),
            CaptureError::NftNotFound
        ));
    }

    #[tokio::test]
    async fn missing_nft_says_what_to_do() {
        let e = NftCapture::install_with(
            OsStr::new("/nonexistent/hostmesh-test/nft"),
            "127.77.0.0/16".parse().unwrap(),
            "127.0.0.1:4140".parse().unwrap(),
        )
        .await
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "nft not found: install nftables or set proxy.capture = \"listen\""
        );
    }

    #[tokio::test]
    async fn ipv6_outbound_is_refused_before_running_nft() {
        let e = NftCapture::install(
            "127.77.0.0/16".parse().unwrap(),
            "[::1]:4140".parse().unwrap(),
        )
        .await
        .unwrap_err();
        assert!(matches!(e, CaptureError::NotIpv4(_)), "{e}");
    }

    /// Must be called from inside the namespace's thread.
    fn nft_stdin(batch: &str) {
        nft_cmd::apply_blocking(OsStr::new("nft"), batch).unwrap();
    }

    type Captured = (TcpStream, SocketAddrV4, tokio::sync::OwnedSemaphorePermit);

    fn handoff() -> (Handoff, mpsc::UnboundedReceiver<Captured>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let handler: super::super::Handler = Arc::new(move |s, dst, permit| {
            let _ = tx.send((s, dst, permit));
        });
        let handoff = Handoff::new(
            handler,
            Arc::new(Semaphore::new(100)),
            CaptureMetrics::default(),
        );
        (handoff, rx)
    }

    #[test]
    fn nft_capture_in_a_network_namespace() {
        let ns = Netns::new();
        ns.run(|| async {
            let range: Ipv4Net = "127.77.0.0/16".parse().unwrap();
            // A crashed agent's table: another port and a stray chain.
            nft_stdin(
                "table ip hostmesh {\n\
                 chain output { type nat hook output priority -100; \
                 ip daddr 127.77.0.0/16 meta l4proto tcp dnat to 127.0.0.1:9; }\n\
                 chain stale { }\n}\n",
            );
            let app = TcpListener::bind("0.0.0.0:8080").await.unwrap();
            let outbound = super::super::bind("127.0.0.1:0".parse().unwrap()).unwrap();
            let outbound_addr = outbound.local_addr().unwrap();

            let table = NftCapture::install(range, outbound_addr).await.unwrap();
            let listed = sh(&["nft", "list", "table", "ip", TABLE]);
            assert!(
                !listed.contains("stale"),
                "leftover not replaced:\n{listed}"
            );
            assert!(
                listed.contains(&format!("dnat to {outbound_addr}")),
                "{listed}"
            );
            assert!(!listed.contains("127.0.0.1:9\n"), "{listed}");
            assert!(table.is_installed().await.unwrap());

            let (handoff, mut rx) = handoff();
            let metrics = handoff.metrics.clone();
            let cancel = CancellationToken::new();
            let serve = tokio::spawn(NftCapture::serve(outbound, range, handoff, cancel.clone()));

            // An app dials a VIP: the connection arrives at the outbound listener, with the VIP.
            let mut client = TcpStream::connect("127.77.0.5:8080").await.unwrap();
            let (mut server, dst, _permit) = tokio::time::timeout(WAIT, rx.recv())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(dst, "127.77.0.5:8080".parse().unwrap());
            client.write_all(b"ping").await.unwrap();
            let mut buf = [0; 4];
            server.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"ping");
            assert_eq!(metrics.listeners.get(), 1);

            // Anything else is untouched: the app on 0.0.0.0:8080 still gets 127.0.0.1:8080.
            let _direct = TcpStream::connect("127.0.0.1:8080").await.unwrap();
            let (_, peer) = tokio::time::timeout(WAIT, app.accept())
                .await
                .unwrap()
                .unwrap();
            assert!(peer.ip().is_loopback());

            // Dialing the outbound port itself is no VIP: closed, never handed over.
            let mut stray = TcpStream::connect(outbound_addr).await.unwrap();
            let n = tokio::time::timeout(WAIT, stray.read(&mut buf))
                .await
                .unwrap()
                .unwrap_or(0);
            assert_eq!(n, 0);
            assert_eq!(metrics.rejected.get(), 1);
            assert!(rx.try_recv().is_err());

            // After remove() the table is gone and the VIP port reaches the wildcard app.
            table.remove().await.unwrap();
            let tables = sh(&["nft", "list", "tables"]);
            assert!(!tables.contains(TABLE), "{tables}");
            let _after = TcpStream::connect("127.77.0.5:8080").await.unwrap();
            tokio::time::timeout(WAIT, app.accept())
                .await
                .unwrap()
                .unwrap();
            cancel.cancel();
            serve.await.unwrap();
            assert_eq!(metrics.listeners.get(), 0);

            // Drop is the fallback.
            let table = NftCapture::install(range, outbound_addr).await.unwrap();
            assert!(sh(&["nft", "list", "tables"]).contains(TABLE));
            drop(table);
            assert!(!sh(&["nft", "list", "tables"]).contains(TABLE));
        });
    }

    #[test]
    fn nft_table_is_put_back_and_removed_at_shutdown() {
        let ns = Netns::new();
        ns.run(|| async {
            let range: Ipv4Net = "127.77.0.0/16".parse().unwrap();
            let table = NftCapture::install(range, "127.0.0.1:4140".parse().unwrap())
                .await
                .unwrap();
            let status = CaptureStatus::new("nft");
            let metrics = CaptureMetrics::default();
            let cancel = CancellationToken::new();
            let keeper = tokio::spawn(table.keep(
                Duration::from_millis(50),
                status.clone(),
                metrics.clone(),
                cancel.clone(),
            ));
            // A firewall reload flushes everything.
            sh(&["nft", "flush", "ruleset"]);
            let deadline = tokio::time::Instant::now() + WAIT;
            while metrics.table_reinstalls.get() == 0 {
                assert!(tokio::time::Instant::now() < deadline, "not reinstalled");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert!(sh(&["nft", "list", "tables"]).contains(TABLE));
            assert!(status.problems().is_empty(), "{:?}", status.problems());
            cancel.cancel();
            keeper.await.unwrap().unwrap();
            assert!(!sh(&["nft", "list", "tables"]).contains(TABLE));

            // The same through Capture: start binds and installs, shutdown removes.
            let (handoff, mut rx) = handoff();
            let (_tx, snapshots) = tokio::sync::watch::channel(None);
            let agent_cancel = CancellationToken::new();
            let capture = Capture::start(
                hostmesh_config::Capture::Nft,
                range,
                "127.0.0.1:4141".parse().unwrap(),
                snapshots,
                handoff,
                &agent_cancel,
            )
            .await
            .unwrap();
            assert_eq!(capture.status().mode(), "nft");
            let _client = TcpStream::connect("127.77.1.2:443").await.unwrap();
            let (_, dst, _) = tokio::time::timeout(WAIT, rx.recv())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(dst, "127.77.1.2:443".parse().unwrap());
            capture.shutdown().await.unwrap();
            assert!(!sh(&["nft", "list", "tables"]).contains(TABLE));
            assert!(TcpStream::connect("127.0.0.1:4141").await.is_err());
        });
    }
}
