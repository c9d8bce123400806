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
use std::io::{self, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::process::{Output, Stdio};
use std::time::Duration;

use ipnet::Ipv4Net;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::original_dst::original_dst;
use super::{CaptureError, CaptureMetrics, CaptureStatus, Handoff, accept_loop, human};

/// The name of the agent's table (family `ip`). Nothing else of ours lives in nftables.
pub const TABLE: &str = "hostmesh";

/// An `nft` call that takes longer than this is stuck (it normally takes milliseconds).
const NFT_TIMEOUT: Duration = Duration::from_secs(5);

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
        run_nft(&self.program, &["-f", "-"], Some(&self.ruleset())).await?;
        Ok(())
    }

    /// Whether our table is (still) in the ruleset.
    pub async fn is_installed(&self) -> Result<bool, CaptureError> {
        match run_nft(&self.program, &["list", "table", "ip", TABLE], None).await {
            Ok(_) => Ok(true),
            Err(CaptureError::Nft(e)) if e.contains("No such file or directory") => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Deletes the table; new connections to VIPs are no longer captured (and fail, as nothing
    /// listens there). Connections already redirected keep working.
    pub async fn remove(mut self) -> Result<(), CaptureError> {
        // Whatever the outcome, drop must not try again behind the caller's back.
        self.installed = false;
        run_nft(&self.program, &["-f", "-"], Some(&delete_batch())).await?;
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
        match run_nft_blocking(&self.program, &delete_batch()) {
            Ok(()) => tracing::info!("nftables table ip {TABLE} removed on drop"),
            Err(e) => tracing::error!("removing nftables table ip {TABLE} on drop: {e}"),
        }
    }
}

/// Deletes our table whether or not it exists (declaring it first makes the delete succeed).
fn delete_batch() -> String {
    format!("table ip {TABLE}\ndelete table ip {TABLE}\n")
}

/// Runs `nft ARGS` with `stdin` on its standard input; its standard output on success.
async fn run_nft(
    program: &OsStr,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<String, CaptureError> {
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(spawn_error)?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .await
            .map_err(|e| CaptureError::Nft(format!("writing to nft: {e}")))?;
        // Dropping the pipe closes it: nft reads to end of file before it applies anything.
    }
    let output = tokio::time::timeout(NFT_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| CaptureError::Nft(format!("nft did not finish within {NFT_TIMEOUT:?}")))?
        .map_err(|e| CaptureError::Nft(e.to_string()))?;
    check(output)
}

fn run_nft_blocking(program: &OsStr, batch: &str) -> Result<(), CaptureError> {
    let mut child = std::process::Command::new(program)
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_error)?;
    if let Some(mut pipe) = child.stdin.take() {
        pipe.write_all(batch.as_bytes())
            .map_err(|e| CaptureError::Nft(format!("writing to nft: {e}")))?;
    }
    let output = child
        .wait_with_output()
        .map_err(|e| CaptureError::Nft(e.to_string()))?;
    check(output).map(drop)
}

fn spawn_error(e: io::Error) -> CaptureError {
    if e.kind() == io::ErrorKind::NotFound {
        CaptureError::NftNotFound
    } else {
        CaptureError::Nft(format!("cannot run nft: {e}"))
    }
}

fn check(output: Output) -> Result<String, CaptureError> {
    if output.status.success() {
        return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    Err(classify(&stderr, output.status))
}

fn classify(stderr: &str, status: std::process::ExitStatus) -> CaptureError {
    // nft prints the failing batch line with a caret line under it; the first line says why.
    let first = stderr.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let why = if first.is_empty() {
        format!("nft exited with {status}")
    } else {
        first.trim().to_owned()
    };
    if stderr.contains("Operation not permitted") || stderr.contains("Permission denied") {
        CaptureError::PermissionDenied(why)
    } else {
        CaptureError::Nft(why)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::fs::File;
    use std::process::Command;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use nix::sched::{CloneFlags, setns};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    use tokio::sync::{Semaphore, mpsc};

    use super::*;
    use crate::Capture;

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
    fn errors_are_classified() {
        let status = Command::new("false").status().unwrap();
        let e = classify(
            "netlink: Error: cache initialization failed: Operation not permitted\n",
            status,
        );
        assert!(matches!(e, CaptureError::PermissionDenied(_)), "{e}");
        assert!(e.to_string().contains("CAP_NET_ADMIN"), "{e}");
        let e = classify("Error: syntax error\nfoo\n^^^\n", status);
        assert_eq!(e.to_string(), "nft failed: Error: syntax error");
        let e = classify("", status);
        assert!(e.to_string().contains("exited"), "{e}");
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

    /// A throwaway network namespace, deleted on drop (also when the test panics).
    struct Netns {
        name: String,
    }

    impl Netns {
        fn new() -> Self {
            assert!(
                nix::unistd::geteuid().is_root(),
                "this test needs root: it creates a network namespace to install nftables rules in"
            );
            static N: AtomicUsize = AtomicUsize::new(0);
            let name = format!(
                "hm-capture-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            );
            sh(&["ip", "netns", "add", &name]);
            let ns = Netns { name };
            sh(&["ip", "-n", &ns.name, "link", "set", "lo", "up"]);
            ns
        }

        /// Runs `f` on a thread that lives in this namespace, with its own single-threaded
        /// runtime: every socket, task and child process it makes stays inside.
        fn run<F: Future<Output = ()>>(&self, f: impl FnOnce() -> F + Send) {
            let path = format!("/run/netns/{}", self.name);
            std::thread::scope(|s| {
                s.spawn(|| {
                    let fd = File::open(&path).unwrap();
                    setns(&fd, CloneFlags::CLONE_NEWNET).unwrap();
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap()
                        .block_on(f());
                });
            });
        }
    }

    impl Drop for Netns {
        fn drop(&mut self) {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.name])
                .status();
        }
    }

    fn sh(args: &[&str]) -> String {
        let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Must be called from inside the namespace's thread.
    fn nft_stdin(batch: &str) {
        run_nft_blocking(OsStr::new("nft"), batch).unwrap();
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
