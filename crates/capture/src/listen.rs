//! listen capture: one listener per VIP:port, following the catalog snapshot. No privileges
//! needed: every VIP is in 127.0.0.0/8, all of which is local on Linux, so binding one needs no
//! address to be added.
//!
//! On each snapshot change the wanted set is recomputed; new VIP:ports are bound, gone ones
//! closed, and the rest left exactly as they are (their backlog and accepted connections are
//! never disturbed). A bind that fails, typically because an app holds the wildcard address on
//! the same port, is a problem in [`CaptureStatus`] and a metric, retried on a timer, and never
//! fatal: every other VIP keeps working.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::net::{SocketAddr, SocketAddrV4};
use std::time::Duration;

use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use hostmesh_registrar::catalog::{Snapshot, Snapshots};

use super::{CaptureStatus, Handoff, Held, accept_loop, human};

/// How often a VIP:port that could not be bound is tried again (every 5 s, docs/reference/http.md).
pub const RETRY_INTERVAL: Duration = Duration::from_secs(5);

/// The running listen capture. Stops when the token it was started with fires, or on
/// [`stop`](Self::stop).
#[derive(Debug)]
pub struct ListenCapture {
    status: CaptureStatus,
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

impl ListenCapture {
    /// Starts following `snapshots` (binding what the current one wants at once), retrying
    /// failed binds every [`RETRY_INTERVAL`].
    pub fn start(snapshots: Snapshots, handoff: Handoff, cancel: CancellationToken) -> Self {
        Self::start_with_retry(snapshots, handoff, cancel, RETRY_INTERVAL)
    }

    /// [`start`](Self::start) with another retry interval (tests).
    pub fn start_with_retry(
        snapshots: Snapshots,
        handoff: Handoff,
        cancel: CancellationToken,
        retry: Duration,
    ) -> Self {
        let status = CaptureStatus::new("listen");
        let reconciler = Reconciler {
            handoff,
            status: status.clone(),
            retry,
            cancel: cancel.clone(),
            bound: HashMap::new(),
            failing: BTreeMap::new(),
            next_retry: None,
            tasks: JoinSet::new(),
        };
        let task = tokio::spawn(reconciler.run(snapshots));
        ListenCapture {
            status,
            cancel,
            task,
        }
    }

    pub fn status(&self) -> CaptureStatus {
        self.status.clone()
    }

    /// Closes every listener and waits until they are closed.
    pub async fn stop(self) {
        self.cancel.cancel();
        let _ = self.task.await;
    }
}

/// The VIP:ports a snapshot asks for: for each service with a VIP, every distinct instance
/// port; and for each tag among its instances, the tag's VIP (`TAG.NAME`) with the ports of the
/// instances carrying that tag.
pub fn wanted(snapshot: &Snapshot) -> BTreeSet<SocketAddrV4> {
    let mut out = BTreeSet::new();
    for service in snapshot.services.values() {
        let Some(vip) = service.vip else { continue };
        for instance in service.instances.iter().filter(|i| i.port != 0) {
            out.insert(SocketAddrV4::new(vip, instance.port));
            for tag in &instance.tags {
                // A tag VIP not allocated yet: the next snapshot will bring it.
                if let Some(tag_vip) = snapshot.vips.get(&format!("{tag}.{}", service.name)) {
                    out.insert(SocketAddrV4::new(*tag_vip, instance.port));
                }
            }
        }
    }
    out
}

struct Reconciler {
    handoff: Handoff,
    status: CaptureStatus,
    retry: Duration,
    cancel: CancellationToken,
    /// Each bound VIP:port and the token that closes its listener.
    bound: HashMap<SocketAddrV4, CancellationToken>,
    /// Wanted VIP:ports whose bind failed, with the number of failed attempts.
    failing: BTreeMap<SocketAddrV4, u64>,
    /// One timer for all failing binds, so frequent snapshot changes cannot postpone retries.
    next_retry: Option<Instant>,
    tasks: JoinSet<()>,
}

impl Reconciler {
    async fn run(mut self, mut snapshots: Snapshots) {
        let current = wanted_of(&latest(&mut snapshots));
        self.reconcile(&current);
        let mut watching = true;
        loop {
            let retry_at = self.next_retry;
            tokio::select! {
                () = self.cancel.cancelled() => break,
                changed = snapshots.changed(), if watching => match changed {
                    Ok(()) => {
                        let wanted = wanted_of(&latest(&mut snapshots));
                        self.reconcile(&wanted);
                    }
                    // The catalog is gone (shutting down): keep what is bound until cancelled.
                    Err(_) => watching = false,
                },
                () = hostmesh_registrar::timer::sleep_until(retry_at) => self.retry_failing(),
                // Reap listener tasks as they end so the set does not grow with churn.
                Some(_) = self.tasks.join_next(), if !self.tasks.is_empty() => {}
            }
        }
        for (addr, token) in self.bound.drain() {
            token.cancel();
            self.status.set_listening(addr, false);
        }
        for addr in std::mem::take(&mut self.failing).into_keys() {
            self.status.set_bind_problem(addr, None);
            self.handoff.metrics.bind_problems.dec();
        }
        while self.tasks.join_next().await.is_some() {}
    }

    fn reconcile(&mut self, wanted: &BTreeSet<SocketAddrV4>) {
        let status = &self.status;
        self.bound.retain(|addr, token| {
            let keep = wanted.contains(addr);
            if !keep {
                token.cancel();
                status.set_listening(*addr, false);
                tracing::info!(%addr, "stopped listening: no longer in the catalog");
            }
            keep
        });
        let metrics = &self.handoff.metrics;
        self.failing.retain(|addr, _| {
            let keep = wanted.contains(addr);
            if !keep {
                status.set_bind_problem(*addr, None);
                metrics.bind_problems.dec();
            }
            keep
        });
        for addr in wanted {
            if !self.bound.contains_key(addr) && !self.failing.contains_key(addr) {
                self.try_bind(*addr);
            }
        }
        if self.failing.is_empty() {
            self.next_retry = None;
        }
    }

    fn retry_failing(&mut self) {
        let addrs: Vec<SocketAddrV4> = self.failing.keys().copied().collect();
        for addr in addrs {
            self.try_bind(addr);
        }
        self.next_retry = (!self.failing.is_empty()).then(|| Instant::now() + self.retry);
    }

    fn try_bind(&mut self, addr: SocketAddrV4) {
        let metrics = &self.handoff.metrics;
        match super::bind(SocketAddr::V4(addr)) {
            Ok(listener) => {
                let held = Held::new(&metrics.listeners);
                let token = self.cancel.child_token();
                self.tasks.spawn(serve(
                    listener,
                    addr,
                    self.handoff.clone(),
                    token.clone(),
                    held,
                ));
                self.bound.insert(addr, token);
                self.status.set_listening(addr, true);
                match self.failing.remove(&addr) {
                    Some(attempts) => {
                        self.status.set_bind_problem(addr, None);
                        metrics.bind_problems.dec();
                        tracing::info!(%addr, attempts, "listening, after failed attempts");
                    }
                    None => tracing::debug!(%addr, "listening"),
                }
            }
            Err(e) => {
                metrics.bind_failures.inc();
                let problem = describe(addr, &e, self.retry);
                match self.failing.get_mut(&addr) {
                    Some(attempts) => {
                        *attempts += 1;
                        tracing::debug!("{problem}");
                    }
                    None => {
                        self.failing.insert(addr, 1);
                        metrics.bind_problems.inc();
                        tracing::warn!("{problem}");
                    }
                }
                self.status.set_bind_problem(addr, Some(problem));
                if self.next_retry.is_none() {
                    self.next_retry = Some(Instant::now() + self.retry);
                }
            }
        }
    }
}

/// The newest snapshot, taken out of the channel before any work is done on it: a borrow holds
/// the channel's lock, and the catalog's next publish would wait while [`wanted`] walks every
/// service.
fn latest(snapshots: &mut Snapshots) -> Option<std::sync::Arc<Snapshot>> {
    snapshots.borrow_and_update().clone()
}

fn wanted_of(snapshot: &Option<std::sync::Arc<Snapshot>>) -> BTreeSet<SocketAddrV4> {
    snapshot.as_deref().map(wanted).unwrap_or_default()
}

/// One VIP:port's accept loop; the connection is handed over with the VIP:port it came to.
async fn serve(
    listener: tokio::net::TcpListener,
    vip: SocketAddrV4,
    handoff: Handoff,
    cancel: CancellationToken,
    _held: Held,
) {
    accept_loop(listener, &handoff, &cancel, |stream, _peer, permit| {
        (handoff.handler)(stream, vip, permit)
    })
    .await;
}

/// The line an operator reads in `/status`: what failed, the likely cause, and what happens next.
fn describe(addr: SocketAddrV4, e: &io::Error, retry: Duration) -> String {
    let cause = match e.raw_os_error() {
        Some(nix::libc::EADDRINUSE) => {
            "address in use (an app bound to the wildcard address?)".to_owned()
        }
        Some(nix::libc::EADDRNOTAVAIL) => {
            "address not available (a VIP outside 127.0.0.0/8 must be assigned to an interface)"
                .to_owned()
        }
        Some(nix::libc::EACCES) => {
            "permission denied (ports below 1024 need CAP_NET_BIND_SERVICE)".to_owned()
        }
        _ => e.to_string(),
    };
    format!("{addr}: {cause}; retrying every {}", human(retry))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::net::Ipv4Addr;
    use std::sync::Arc;

    use tokio::net::TcpStream;
    use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};

    use hostmesh_config::spec::Protocol;
    use hostmesh_registrar::catalog::{Instance, Service};
    use hostmesh_registrar::record::Health;

    use super::*;
    use crate::{CaptureMetrics, Handler};

    const WAIT: Duration = Duration::from_secs(5);

    fn instance(id: &str, port: u16, tags: &[&str]) -> Instance {
        Instance {
            host: "h1".into(),
            id: id.into(),
            address: None,
            inbound_port: Some(4143),
            zone: None,
            port,
            protocol: Protocol::Tcp,
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
            weight: 100,
            health: Health::Passing,
            locked: false,
        }
    }

    fn service(name: &str, vip: Option<Ipv4Addr>, instances: Vec<Instance>) -> Arc<Service> {
        Arc::new(Service {
            name: name.into(),
            vip,
            protocol: Protocol::Tcp,
            instances,
        })
    }

    fn snapshot(services: Vec<Arc<Service>>, vips: &[(&str, Ipv4Addr)]) -> Arc<Snapshot> {
        Arc::new(Snapshot {
            revision: 1,
            services: services.into_iter().map(|s| (s.name.clone(), s)).collect(),
            vips: vips.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
            ..Snapshot::default()
        })
    }

    fn sa(ip: Ipv4Addr, port: u16) -> SocketAddrV4 {
        SocketAddrV4::new(ip, port)
    }

    /// A port nothing on `ip` (nor the wildcard) listens on right now.
    fn free_port(ip: Ipv4Addr) -> u16 {
        std::net::TcpListener::bind((ip, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    type Captured = (TcpStream, SocketAddrV4, OwnedSemaphorePermit);

    fn handoff(permits: usize) -> (Handoff, mpsc::UnboundedReceiver<Captured>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let handler: Handler = Arc::new(move |s, dst, permit| {
            let _ = tx.send((s, dst, permit));
        });
        let h = Handoff::new(
            handler,
            Arc::new(Semaphore::new(permits)),
            CaptureMetrics::default(),
        );
        (h, rx)
    }

    async fn eventually(what: &str, cond: impl Fn() -> bool) {
        let deadline = Instant::now() + WAIT;
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn refused(addr: SocketAddrV4) {
        let deadline = Instant::now() + WAIT;
        while TcpStream::connect(addr).await.is_ok() {
            assert!(
                Instant::now() < deadline,
                "{addr} still accepts connections"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[test]
    fn wanted_set_has_service_and_tag_vips() {
        let vip = Ipv4Addr::new(127, 77, 0, 5);
        let v2 = Ipv4Addr::new(127, 77, 0, 6);
        let canary = Ipv4Addr::new(127, 77, 0, 7);
        let snap = snapshot(
            vec![
                service(
                    "orders",
                    Some(vip),
                    vec![
                        instance("a", 8080, &["v2"]),
                        instance("b", 8080, &["v2", "canary"]),
                        instance("c", 9090, &[]),
                        // A tag whose VIP is not allocated yet.
                        instance("d", 7070, &["v3"]),
                    ],
                ),
                service("novip", None, vec![instance("e", 1234, &[])]),
            ],
            &[
                ("orders", vip),
                ("v2.orders", v2),
                ("canary.orders", canary),
                // A VIP kept for a name without instances wants nothing.
                ("gone", Ipv4Addr::new(127, 77, 0, 9)),
            ],
        );
        let want: Vec<_> = wanted(&snap).into_iter().collect();
        assert_eq!(
            want,
            [
                sa(vip, 7070),
                sa(vip, 8080),
                sa(vip, 9090),
                sa(v2, 8080),
                sa(canary, 8080)
            ]
        );
    }

    #[test]
    fn problem_lines() {
        let addr = sa(Ipv4Addr::new(127, 77, 0, 5), 8080);
        let in_use = io::Error::from_raw_os_error(nix::libc::EADDRINUSE);
        assert_eq!(
            describe(addr, &in_use, RETRY_INTERVAL),
            "127.77.0.5:8080: address in use (an app bound to the wildcard address?); \
             retrying every 5 s"
        );
        let denied = io::Error::from_raw_os_error(nix::libc::EACCES);
        assert!(describe(addr, &denied, RETRY_INTERVAL).contains("CAP_NET_BIND_SERVICE"));
    }

    #[tokio::test]
    async fn listeners_follow_the_snapshot() {
        let vip = Ipv4Addr::new(127, 77, 201, 1);
        let v2 = Ipv4Addr::new(127, 77, 201, 2);
        let pay_vip = Ipv4Addr::new(127, 77, 201, 3);
        let (p1, p2, p3) = (free_port(vip), free_port(vip), free_port(pay_vip));
        let orders = service(
            "orders",
            Some(vip),
            vec![
                instance("a", p1, &["v2"]),
                instance("b", p2, &[]),
                instance("c", p1, &["v2"]),
            ],
        );
        let pay = service("pay", Some(pay_vip), vec![instance("p", p3, &[])]);
        let vips = [("orders", vip), ("v2.orders", v2), ("pay", pay_vip)];

        // No permits yet: connections must wait in the backlog, not be accepted.
        let (handoff, mut rx) = handoff(0);
        let semaphore = handoff.semaphore.clone();
        let metrics = handoff.metrics.clone();
        let (tx, snapshots) = watch::channel(None);
        let capture = ListenCapture::start_with_retry(
            snapshots,
            handoff,
            CancellationToken::new(),
            Duration::from_millis(100),
        );
        let status = capture.status();
        assert!(status.listening().is_empty());

        tx.send_replace(Some(snapshot(vec![orders.clone()], &vips)));
        let mut expect = vec![sa(vip, p1), sa(vip, p2), sa(v2, p1)];
        expect.sort();
        eventually("the orders listeners", || status.listening() == expect).await;
        assert_eq!(metrics.listeners.get(), 3);
        assert!(status.problems().is_empty(), "{:?}", status.problems());

        let _waiting = TcpStream::connect(sa(vip, p1)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(rx.try_recv().is_err(), "accepted without a permit");

        // Another service appears: the existing listeners are kept as they are, so the
        // connection in the backlog survives and is accepted once permits exist.
        tx.send_replace(Some(snapshot(vec![orders.clone(), pay.clone()], &vips)));
        eventually("the pay listener", || status.listening().len() == 4).await;
        semaphore.add_permits(10);
        let (_, dst, _) = tokio::time::timeout(WAIT, rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(dst, sa(vip, p1));
        for addr in [sa(v2, p1), sa(vip, p2), sa(pay_vip, p3)] {
            let _c = TcpStream::connect(addr).await.unwrap();
            let (_, dst, _) = tokio::time::timeout(WAIT, rx.recv())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(dst, addr);
        }

        // orders goes: its listeners close, pay's stays.
        tx.send_replace(Some(snapshot(vec![pay], &vips)));
        eventually("orders closed", || status.listening() == [sa(pay_vip, p3)]).await;
        for addr in [sa(vip, p1), sa(vip, p2), sa(v2, p1)] {
            refused(addr).await;
        }
        eventually("the gauge", || metrics.listeners.get() == 1).await;

        capture.stop().await;
        assert!(status.listening().is_empty());
        assert_eq!(metrics.listeners.get(), 0);
        assert!(TcpStream::connect(sa(pay_vip, p3)).await.is_err());
        assert_eq!(metrics.bind_failures.get(), 0);
    }

    #[tokio::test]
    async fn a_wildcard_holder_is_a_problem_until_it_goes() {
        let vip = Ipv4Addr::new(127, 77, 202, 1);
        // An app holding the wildcard address on the service's port.
        let holder = std::net::TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
        let port = holder.local_addr().unwrap().port();
        let other = free_port(vip);
        let svc = service(
            "pay",
            Some(vip),
            vec![instance("a", port, &[]), instance("b", other, &[])],
        );

        let (handoff, mut rx) = handoff(10);
        let metrics = handoff.metrics.clone();
        let (_tx, snapshots) = watch::channel(Some(snapshot(vec![svc], &[("pay", vip)])));
        let capture = ListenCapture::start_with_retry(
            snapshots,
            handoff,
            CancellationToken::new(),
            Duration::from_millis(200),
        );
        let status = capture.status();
        eventually("a problem", || !status.problems().is_empty()).await;
        assert_eq!(
            status.problems(),
            [format!(
                "127.77.202.1:{port}: address in use (an app bound to the wildcard address?); \
                 retrying every 200 ms"
            )]
        );
        assert!(metrics.bind_failures.get() >= 1);
        assert_eq!(metrics.bind_problems.get(), 1);
        // Never fatal: the other port works meanwhile.
        eventually("the other listener", || {
            status.listening() == [sa(vip, other)]
        })
        .await;

        // Still failing after a few retries, and counted each time.
        eventually("retries", || metrics.bind_failures.get() >= 3).await;
        assert_eq!(status.problems().len(), 1);

        drop(holder);
        eventually("the bind after the holder left", || {
            status.listening().contains(&sa(vip, port))
        })
        .await;
        assert!(status.problems().is_empty(), "{:?}", status.problems());
        assert_eq!(metrics.bind_problems.get(), 0);
        let _c = TcpStream::connect(sa(vip, port)).await.unwrap();
        let (_, dst, _) = tokio::time::timeout(WAIT, rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(dst, sa(vip, port));
        capture.stop().await;
    }
}
