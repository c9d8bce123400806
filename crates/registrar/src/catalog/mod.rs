//! The catalog: etcd → immutable [`Snapshot`]s on a `tokio::sync::watch`.
//!
//! Lifecycle: at start the last snapshot saved in `data_dir` (if any) is published at once, so
//! an agent restarted during an etcd outage serves what it knew. Then, in a loop: list every key
//! under `<prefix>/v1/` in pages at one revision, replace the working state, and watch from that
//! revision + 1, applying events as they come. Progress requests every second prove the watch is
//! alive (a silent partition otherwise looks like a quiet mesh); behind etcd's grpc-proxy, which
//! drops them, the connection checks (`crate::etcd`) and require-leader do. A stall, a broken
//! stream, a compacted revision or a lost leader ends the watch and the loop lists again after a
//! jittered backoff. Nothing else lists again: a re-list on a clock, as before, had every agent
//! of a fleet read the whole catalog every few minutes.
//!
//! Fail-static: an error never publishes anything, and a listing with no keys at all never
//! replaces a non-empty snapshot (an etcd restored from nothing must not blank the mesh).

mod check;
mod persist;
mod snapshot;
mod state;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{Client, EventType, GetOptions, WatchOptions};
use ipnet::Ipv4Net;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::keys::{Layout, prefix_end};
use crate::metrics::RegistryMetrics;

pub use check::vip_name;
pub use persist::{Persisted, load as load_persisted, save as save_persisted};
pub use snapshot::{Instance, Map, Service, Snapshot};
pub use state::{Applied, State, VipConflict, VipDuplicate};

/// Keys per list page to start with; a page whose answer is too large is asked again at half
/// the keys, down to one key, and the smaller size is kept for the rest of the list. A single
/// value still too large (only possible with etcd's `--max-request-bytes` raised past
/// [`MAX_MESSAGE`]) is skipped with one warning naming its key.
const PAGE: i64 = 1000;
/// The largest answer (a list page or a watch batch) the agent decodes. tonic's default is
/// 4 MiB: three values near etcd's own 1.5 MiB request limit (`--max-request-bytes`) made one
/// page of the list too large, and a fresh agent never became ready. 64 MiB holds any single
/// value etcd accepts many times over; page halving keeps answers below it.
pub(crate) const MAX_MESSAGE: usize = 64 << 20;

/// Receives the current snapshot; `None` until a catalog was ever loaded (etcd or disk).
pub type Snapshots = watch::Receiver<Option<Arc<Snapshot>>>;

#[derive(Debug, Clone)]
pub struct CatalogConfig {
    pub layout: Layout,
    /// `dns.vip_range`: a VIP outside it is never served.
    pub vip_range: Ipv4Net,
    pub data_dir: PathBuf,
    /// How often the watch asks etcd for a progress notification.
    pub progress_interval: Duration,
    /// Whether each new snapshot is written to `data_dir` (for a start without etcd). Off only
    /// for bench/fleet's simulated agents: a thousand of them share one machine's disk and
    /// CPU, where real agents each write to their own.
    pub save: bool,
}

impl CatalogConfig {
    pub fn new(layout: Layout, vip_range: Ipv4Net, data_dir: PathBuf) -> Self {
        CatalogConfig {
            layout,
            vip_range,
            data_dir,
            progress_interval: Duration::from_secs(1),
            save: true,
        }
    }
}

/// Where the current snapshot came from and how fresh it is.
#[derive(Debug, Default)]
pub struct CatalogStatus {
    inner: Mutex<StatusInner>,
}

#[derive(Debug, Default)]
struct StatusInner {
    /// When the catalog was last confirmed to match etcd.
    last_sync: Option<Instant>,
    /// When the snapshot loaded from disk was saved (as an instant in this process's clock).
    disk_saved_at: Option<Instant>,
    connected: bool,
    revision: i64,
    last_error: Option<String>,
    refused_empty: bool,
    vip_conflicts: BTreeMap<String, VipConflict>,
    vip_duplicates: BTreeMap<String, VipDuplicate>,
}

/// A point-in-time copy of [`CatalogStatus`] for `/status`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StatusReport {
    pub connected: bool,
    pub revision: i64,
    /// `None` when no catalog was ever loaded.
    pub staleness_seconds: Option<f64>,
    /// True when the catalog is not currently confirmed by a live watch.
    pub stale: bool,
    /// `etcd`, `disk` or `none`.
    pub source: &'static str,
    pub last_error: Option<String>,
    /// True when etcd listed no keys at all and the last good snapshot was kept instead.
    pub refused_empty_listing: bool,
    /// Names whose VIP in etcd changed after this agent handed it out: the old one is kept.
    pub refused_vip_changes: BTreeMap<String, VipConflict>,
    /// Names whose VIP in etcd belongs to another name: refused, never served.
    pub refused_duplicate_vips: BTreeMap<String, VipDuplicate>,
}

impl CatalogStatus {
    fn with<R>(&self, f: impl FnOnce(&mut StatusInner) -> R) -> R {
        // A poisoned lock only means a panic elsewhere mid-update of plain fields: keep going.
        let mut guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard)
    }

    fn synced(&self, revision: i64) {
        self.with(|s| {
            s.last_sync = Some(Instant::now());
            s.connected = true;
            s.revision = s.revision.max(revision);
            s.last_error = None;
        });
    }

    fn disconnected(&self, error: String) {
        self.with(|s| {
            s.connected = false;
            s.last_error = Some(error);
        });
    }

    pub fn report(&self) -> StatusReport {
        self.with(|s| {
            let since = s.last_sync.or(s.disk_saved_at);
            let staleness = since.map(|t| {
                if s.connected {
                    0.0
                } else {
                    t.elapsed().as_secs_f64()
                }
            });
            StatusReport {
                connected: s.connected,
                revision: s.revision,
                staleness_seconds: staleness,
                stale: !s.connected,
                source: if s.last_sync.is_some() {
                    "etcd"
                } else if s.disk_saved_at.is_some() {
                    "disk"
                } else {
                    "none"
                },
                last_error: s.last_error.clone(),
                refused_empty_listing: s.refused_empty,
                refused_vip_changes: s.vip_conflicts.clone(),
                refused_duplicate_vips: s.vip_duplicates.clone(),
            }
        })
    }

    /// Updates the staleness and connection gauges (called at scrape time).
    pub fn update_metrics(&self, metrics: &RegistryMetrics) {
        let r = self.report();
        metrics.connected.set(i64::from(r.connected));
        metrics.catalog_revision.set(r.revision);
        metrics
            .staleness_seconds
            .set(r.staleness_seconds.unwrap_or(0.0));
        let refused = r.refused_vip_changes.len() + r.refused_duplicate_vips.len();
        metrics
            .vip_conflicts
            .set(i64::try_from(refused).unwrap_or(i64::MAX));
    }

    fn set_vip_conflicts(&self, state: &State) {
        self.with(|s| {
            if s.vip_conflicts != *state.vip_conflicts() {
                s.vip_conflicts = state.vip_conflicts().clone();
            }
            if s.vip_duplicates != *state.vip_duplicates() {
                s.vip_duplicates = state.vip_duplicates().clone();
            }
        });
    }
}

/// A handle on the running catalog.
#[derive(Debug, Clone)]
pub struct Catalog {
    snapshots: Snapshots,
    status: Arc<CatalogStatus>,
}

impl Catalog {
    pub fn snapshots(&self) -> Snapshots {
        self.snapshots.clone()
    }

    pub fn current(&self) -> Option<Arc<Snapshot>> {
        self.snapshots.borrow().clone()
    }

    pub fn status(&self) -> &Arc<CatalogStatus> {
        &self.status
    }

    /// Loads the saved snapshot (if any) and starts the persister on the current runtime. The
    /// returned [`Watcher`] follows etcd once it is given a client ([`Watcher::run`]); until
    /// then readers see the saved snapshot, or `None`.
    pub fn open(
        config: CatalogConfig,
        metrics: RegistryMetrics,
        cancel: CancellationToken,
    ) -> (Catalog, Watcher) {
        let status = Arc::new(CatalogStatus::default());
        let mut state = State::new(config.layout.clone(), config.vip_range);
        let initial = match persist::load(&config.data_dir) {
            Ok(Some(p)) => {
                tracing::info!(
                    revision = p.snapshot.revision,
                    services = p.snapshot.services.len(),
                    age_s = p.age().as_secs(),
                    "loaded the last-known catalog from {}",
                    persist::path(&config.data_dir).display()
                );
                let age = p.age();
                status.with(|s| {
                    s.disk_saved_at =
                        Some(Instant::now().checked_sub(age).unwrap_or_else(Instant::now));
                    s.revision = p.snapshot.revision;
                });
                // Checked like values from etcd: the file may have been edited by hand.
                let (checked, snapshot) =
                    State::from_snapshot(config.layout.clone(), config.vip_range, &p.snapshot);
                state = checked;
                status.set_vip_conflicts(&state);
                Some(Arc::new(snapshot))
            }
            Ok(None) => None,
            Err(e) => {
                tracing::warn!("ignoring the saved catalog: {e}");
                None
            }
        };
        let (tx, rx) = watch::channel(initial);
        if config.save {
            tokio::spawn(persist_loop(rx.clone(), config.data_dir.clone(), cancel));
        }
        let watcher = Watcher {
            config,
            state,
            tx,
            status: status.clone(),
            metrics,
        };
        let catalog = Catalog {
            snapshots: rx,
            status,
        };
        (catalog, watcher)
    }
}

/// Reads the whole catalog once (for the command-line tools), at one revision.
pub async fn fetch(
    client: &Client,
    layout: &Layout,
    vip_range: Ipv4Net,
) -> Result<Snapshot, etcd_client::Error> {
    fetch_decoding_at_most(client, layout, vip_range, MAX_MESSAGE).await
}

/// [`fetch`] with another decode limit (tests: a value over it is skipped, not fatal).
pub async fn fetch_decoding_at_most(
    client: &Client,
    layout: &Layout,
    vip_range: Ipv4Net,
    max_message: usize,
) -> Result<Snapshot, etcd_client::Error> {
    let state = State::new(layout.clone(), vip_range);
    let mut state = list(client, state, layout, max_message).await?;
    Ok(state.snapshot())
}

/// Why a watch ended without an error.
enum WatchEnd {
    Cancelled,
}

/// Follows etcd and publishes snapshots; see the module docs.
pub struct Watcher {
    config: CatalogConfig,
    state: State,
    tx: watch::Sender<Option<Arc<Snapshot>>>,
    status: Arc<CatalogStatus>,
    metrics: RegistryMetrics,
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher").finish_non_exhaustive()
    }
}

impl Watcher {
    /// Lists and watches until `cancel`, re-listing after every failure.
    pub async fn run(mut self, client: Client, cancel: CancellationToken) {
        let mut backoff = crate::etcd::backoff();
        loop {
            match self.list_and_watch(&client, &cancel).await {
                Ok(WatchEnd::Cancelled) => return,
                Err(e) => {
                    self.metrics.watch_restarts.inc();
                    tracing::warn!("catalog watch on etcd ended: {e}; keeping the last snapshot");
                    self.status.disconnected(e);
                }
            }
            let delay = backoff.next().unwrap_or(Duration::from_secs(3));
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(delay) => {}
            }
        }
    }

    async fn list_and_watch(
        &mut self,
        client: &Client,
        cancel: &CancellationToken,
    ) -> Result<WatchEnd, String> {
        let listed = tokio::select! {
            () = cancel.cancelled() => return Ok(WatchEnd::Cancelled),
            r = list(client, self.state.empty_like(), &self.config.layout, MAX_MESSAGE) => r.map_err(|e| format!("list: {e}"))?,
        };
        let revision = listed.revision();
        let has_good = self
            .tx
            .borrow()
            .as_ref()
            .is_some_and(|s| !s.services.is_empty() || !s.hosts.is_empty());
        if listed.is_empty() && has_good {
            tracing::warn!(
                revision,
                "etcd listed no keys at all under {}; keeping the last good catalog",
                self.config.layout.root()
            );
            self.status.with(|s| s.refused_empty = true);
            self.state.reset_revision(revision);
        } else {
            let first = self.tx.borrow().is_none();
            let drift = self.state.replace_with(listed);
            self.status.with(|s| s.refused_empty = false);
            if drift > 0 || first || self.status.report().source != "etcd" {
                tracing::info!(
                    revision,
                    keys = self.state.len(),
                    changed = drift,
                    "catalog listed from etcd"
                );
                self.publish();
            }
        }
        self.status.set_vip_conflicts(&self.state);
        self.status.synced(revision);
        self.watch(client, cancel).await
    }

    async fn watch(
        &mut self,
        client: &Client,
        cancel: &CancellationToken,
    ) -> Result<WatchEnd, String> {
        let root = self.config.layout.root().to_owned();
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(self.state.revision() + 1);
        let (mut requests, mut stream) = client
            .watch_client()
            .max_decoding_message_size(MAX_MESSAGE)
            .watch(root, Some(options))
            .await
            .map_err(|e| format!("watch: {e}"))?
            .split();
        let interval = self.config.progress_interval;
        let mut progress = tokio::time::interval(interval);
        progress.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_heard = Instant::now();
        // Whether this stream has answered a progress request, and whether we still ask.
        // etcd's grpc-proxy (3.4) drops progress requests without a word, so behind one the
        // watch would look silent every few seconds and list the whole catalog again. A stream
        // that never answers one is left to the transport's checks instead: the endpoint probes
        // (`etcd::endpoints`), or HTTP/2 pings with a single endpoint, find a dead connection,
        // and require-leader ends the watch of a member (or proxy) that lost its leader (set in
        // `etcd::EtcdOptions::open`).
        let mut answers_progress = false;
        let mut asking = true;
        loop {
            tokio::select! {
                () = cancel.cancelled() => return Ok(WatchEnd::Cancelled),
                _ = progress.tick(), if asking => {
                    // No answer to several progress requests: the connection is dead even if
                    // TCP has not noticed (a partition drops packets silently).
                    if last_heard.elapsed() > interval * 3 + Duration::from_secs(1) {
                        if answers_progress {
                            return Err(format!("watch silent for {:?}", last_heard.elapsed()));
                        }
                        asking = false;
                        tracing::info!(
                            "etcd does not answer watch progress requests (etcd's grpc-proxy drops \
                             them); the catalog watch relies on the connection checks and require-leader"
                        );
                        continue;
                    }
                    requests.request_progress().await.map_err(|e| format!("progress request: {e}"))?;
                }
                msg = stream.message() => {
                    let resp = match msg {
                        Ok(Some(resp)) => resp,
                        Ok(None) => return Err("watch stream closed".into()),
                        Err(e) => return Err(format!("watch: {e}")),
                    };
                    last_heard = Instant::now();
                    if !resp.created() && !resp.canceled() && resp.events().is_empty() {
                        answers_progress = true;
                    }
                    if resp.canceled() {
                        return Err(if resp.compact_revision() > 0 {
                            format!("revision compacted (at {})", resp.compact_revision())
                        } else {
                            format!("watch canceled: {}", resp.cancel_reason())
                        });
                    }
                    let mut changed = false;
                    for event in resp.events() {
                        let Some(kv) = event.kv() else { continue };
                        let Ok(key) = kv.key_str() else { continue };
                        let applied = match event.event_type() {
                            EventType::Put => self.state.put(key, kv.value(), kv.mod_revision()),
                            EventType::Delete => self.state.delete(key, kv.mod_revision()),
                        };
                        changed |= applied == Applied::Changed;
                    }
                    let revision = resp.header().map_or(0, |h| h.revision());
                    self.state.set_revision(revision);
                    if changed {
                        self.publish();
                    }
                    self.status.set_vip_conflicts(&self.state);
                    self.status.synced(self.state.revision());
                }
            }
        }
    }

    fn publish(&mut self) {
        self.tx.send_replace(Some(Arc::new(self.state.snapshot())));
    }
}

/// Lists every key under the root in pages, all at the first page's revision, into `listed`.
async fn list(
    client: &Client,
    mut listed: State,
    layout: &Layout,
    max_message: usize,
) -> Result<State, etcd_client::Error> {
    let mut kv = client.kv_client().max_decoding_message_size(max_message);
    let root = layout.root().to_owned();
    let end = prefix_end(&root);
    let mut start = root.into_bytes();
    let mut revision = 0;
    let mut page = PAGE;
    loop {
        let mut options = GetOptions::new().with_range(end.clone()).with_limit(page);
        if revision > 0 {
            // Every page at the first page's revision: one consistent view.
            options = options.with_revision(revision);
        }
        let resp = match kv.get(start.clone(), Some(options)).await {
            Ok(resp) => resp,
            Err(e) if page > 1 && too_large(&e) => {
                page /= 2;
                tracing::debug!(
                    page,
                    "a catalog page was too large to decode; asking for fewer keys"
                );
                continue;
            }
            Err(e) if too_large(&e) => {
                // One value alone is too large: learn its key (keys only) and go past it.
                let mut options = GetOptions::new()
                    .with_range(end.clone())
                    .with_limit(1)
                    .with_keys_only();
                if revision > 0 {
                    options = options.with_revision(revision);
                }
                let resp = kv.get(start.clone(), Some(options)).await?;
                let Some(kv) = resp.kvs().first() else {
                    return Err(e);
                };
                if revision == 0 {
                    revision = resp.header().map_or(0, |h| h.revision());
                }
                tracing::warn!(
                    key = %String::from_utf8_lossy(kv.key()),
                    limit = max_message,
                    "skipping a value in etcd too large to decode"
                );
                start = kv.key().to_vec();
                start.push(0);
                continue;
            }
            Err(e) => return Err(e),
        };
        if revision == 0 {
            revision = resp.header().map_or(0, |h| h.revision());
        }
        for kv in resp.kvs() {
            if let Ok(key) = kv.key_str() {
                listed.put(key, kv.value(), kv.mod_revision());
            }
        }
        match resp.kvs().last() {
            Some(last) if resp.more() => {
                start = last.key().to_vec();
                start.push(0);
            }
            _ => break,
        }
    }
    listed.set_revision(revision);
    Ok(listed)
}

/// Whether `e` is an answer over the decode limit (tonic: "decoded message length too large").
fn too_large(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(status) if status.message().contains("length too large"))
}

/// Writes each new snapshot to `data_dir`, coalescing bursts, within a second of the change.
async fn persist_loop(mut rx: Snapshots, dir: PathBuf, cancel: CancellationToken) {
    // The snapshot present at start came from disk or is None: nothing to write yet.
    rx.mark_unchanged();
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            r = rx.changed() => if r.is_err() { return },
        }
        // Let a burst of events settle, but stay well within the one-second promise.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let Some(snapshot) = rx.borrow_and_update().clone() else {
            continue;
        };
        let dir = dir.clone();
        let result = tokio::task::spawn_blocking(move || persist::save(&dir, &snapshot)).await;
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("could not save the catalog to disk: {e}"),
            Err(e) => tracing::warn!("catalog save task failed: {e}"),
        }
    }
}
