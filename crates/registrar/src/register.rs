//! Registering this host: one lease per host, the host's `info` and one key per local instance
//! on it, kept alive at about TTL/3.
//!
//! A session is one lease. It ends when etcd says the lease is gone (a keep-alive answers TTL 0,
//! or after a TTL without a good beat etcd reports it unknown, e.g. a partition outlived the
//! TTL); silence alone never ends it (`lease::KeepAlive::failed`). The next session grants a new
//! lease and puts everything again. Within a session, health changes are written as they
//! happen, and a full anti-entropy pass (read this host's keys, add what is missing, delete what
//! is unknown) runs periodically and whenever etcd becomes reachable again.

mod lease;
mod maintenance;
mod own_keys;
mod status;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, DeleteOptions, GetOptions, PutOptions, Txn, TxnOp};
use ipnet::Ipv4Net;
use tokio::sync::{Notify, mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use crate::keys::{Layout, prefix_end};
use crate::metrics::RegistryMetrics;
use crate::record::{Health, HostInfo, InstanceRecord};
use hostmesh_config::spec::InstanceSpec;

use lease::{KeepAlive, LeaseFile};
pub use maintenance::Maintenance;
pub use status::{LocalInstance, RegistrarStatus, StatusReport};

/// etcd refuses transactions with more than 128 operations by default.
const TXN_OPS: usize = 100;
/// How long a foreign change to this host's keys waits before the repair: long enough to
/// take a burst of deletes (`etcdctl del --prefix`) in one pass.
const REPAIR_DEBOUNCE: Duration = Duration::from_millis(200);

#[derive(Debug, Clone)]
pub struct RegistrarConfig {
    pub host: String,
    pub info: HostInfo,
    pub layout: Layout,
    pub lease_ttl: Duration,
    pub vip_range: Ipv4Net,
    pub data_dir: PathBuf,
    pub anti_entropy_interval: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    /// Another live agent registered this host name: refuse to start.
    #[error(
        "host name {host:?} is held by another live agent: {key} is on lease {lease:x} (address {address}). \
         Two machines with one host name (a cloned VM?) cannot share the mesh: set agent.host to a unique name"
    )]
    Conflict {
        host: String,
        key: String,
        lease: i64,
        address: String,
    },
    /// etcd could not be asked: the check runs again when it can.
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
}

/// One local instance and its current health.
#[derive(Debug)]
struct Local {
    spec: InstanceSpec,
    health: watch::Receiver<Health>,
    /// Stops this instance's health check when the definition goes away.
    check: CancellationToken,
}

pub struct Registrar {
    client: Client,
    config: RegistrarConfig,
    locals: Vec<Local>,
    changed: Arc<Notify>,
    maintenance: Arc<Maintenance>,
    status: Arc<RegistrarStatus>,
    metrics: RegistryMetrics,
    lease_file: LeaseFile,
    /// Values confirmed in etcd under the current lease, by key.
    written: BTreeMap<String, String>,
    cancel_checks: CancellationToken,
}

impl std::fmt::Debug for Registrar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registrar")
            .field("host", &self.config.host)
            .field("locals", &self.locals.len())
            .finish_non_exhaustive()
    }
}

/// Why a session ended.
enum SessionEnd {
    Cancelled,
    LeaseLost,
}

impl Registrar {
    /// Starts the local health checks; registration starts with [`Registrar::run`].
    pub fn new(
        client: Client,
        config: RegistrarConfig,
        specs: Vec<InstanceSpec>,
        metrics: RegistryMetrics,
    ) -> Self {
        let lease_file = LeaseFile::new(&config.data_dir);
        let changed = Arc::new(Notify::new());
        let maintenance = Arc::new(Maintenance::load(&config.data_dir, changed.clone()));
        let mut registrar = Registrar {
            client,
            config,
            locals: Vec::new(),
            changed,
            maintenance,
            status: Arc::new(RegistrarStatus::default()),
            metrics,
            lease_file,
            written: BTreeMap::new(),
            cancel_checks: CancellationToken::new(),
        };
        registrar.set_specs(specs);
        registrar
    }

    pub fn status(&self) -> Arc<RegistrarStatus> {
        self.status.clone()
    }

    /// The operator's maintenance switch for local instances.
    pub fn maintenance(&self) -> Arc<Maintenance> {
        self.maintenance.clone()
    }

    /// What a local instance's record says: its check's verdict, unless the operator put it in
    /// maintenance.
    fn health(&self, l: &Local) -> Health {
        if self.maintenance.contains(&l.spec.service, &l.spec.id) {
            Health::Maintenance
        } else {
            *l.health.borrow()
        }
    }

    /// Refuses when another live lease holds this host's `info`. A lease this agent recorded in
    /// `data_dir` before a crash is its own: it is revoked so the restart can proceed at once.
    pub async fn claim(&mut self) -> Result<(), ClaimError> {
        let key = self.config.layout.host_info(&self.config.host);
        let resp = self.client.kv_client().get(key.as_str(), None).await?;
        let Some(kv) = resp.kvs().first() else {
            return Ok(());
        };
        let lease = kv.lease();
        if lease == 0 {
            return Ok(());
        }
        if self.lease_file.read() == Some(lease) {
            tracing::info!(
                lease = format_args!("{lease:x}"),
                "revoking this agent's lease from before its restart"
            );
            let _ = self.client.lease_client().revoke(lease).await;
            return Ok(());
        }
        let ttl = self
            .client
            .lease_client()
            .time_to_live(lease, None)
            .await?
            .ttl();
        if ttl > 0 {
            let address = serde_json::from_slice::<HostInfo>(kv.value())
                .map(|i| i.address.to_string())
                .unwrap_or_else(|_| "unknown".into());
            return Err(ClaimError::Conflict {
                host: self.config.host.clone(),
                key,
                lease,
                address,
            });
        }
        Ok(())
    }

    /// Registers and keeps registered until `cancel`, then deregisters (revokes the lease,
    /// waiting at most one second when etcd is unreachable). New definitions (SIGHUP) arrive on
    /// `reload`.
    pub async fn run(
        mut self,
        cancel: CancellationToken,
        mut reload: mpsc::Receiver<Vec<InstanceSpec>>,
    ) {
        let mut backoff = crate::etcd::backoff();
        loop {
            // Racing the whole session against `cancel` keeps shutdown prompt even while a
            // request to an unreachable etcd is waiting for its timeout.
            let ended = tokio::select! {
                r = self.session(&cancel, &mut reload) => r,
                () = cancel.cancelled() => Ok(SessionEnd::Cancelled),
            };
            match ended {
                Ok(SessionEnd::Cancelled) => break,
                Ok(SessionEnd::LeaseLost) => {
                    self.metrics.lease_losses.inc();
                    tracing::warn!("lease lost; registering again under a new lease");
                    backoff = crate::etcd::backoff();
                    continue;
                }
                Err(e) => {
                    tracing::warn!("registration: {e}; retrying");
                    self.status.set_error(Some(e));
                }
            }
            let delay = backoff.next().unwrap_or(Duration::from_secs(3));
            tokio::select! {
                () = cancel.cancelled() => break,
                () = tokio::time::sleep(delay) => {}
            }
        }
        self.deregister().await;
        self.cancel_checks.cancel();
    }

    async fn session(
        &mut self,
        cancel: &CancellationToken,
        reload: &mut mpsc::Receiver<Vec<InstanceSpec>>,
    ) -> Result<SessionEnd, String> {
        if cancel.is_cancelled() {
            return Ok(SessionEnd::Cancelled);
        }
        self.claim().await.map_err(|e| {
            if matches!(e, ClaimError::Conflict { .. }) {
                tracing::error!("{e}");
            }
            e.to_string()
        })?;
        let ttl = self.config.lease_ttl.as_secs().max(2) as i64;
        let lease = self
            .client
            .lease_client()
            .grant(ttl, None)
            .await
            .map_err(|e| format!("lease grant: {e}"))?
            .id();
        self.lease_file.write(lease);
        self.written.clear();
        self.status.set_lease(Some(lease));
        // The keep-alive beats from the grant on, on a task of its own that reports here. From
        // the grant, not from the end of the registration: when etcd is slow (a fleet-wide
        // restart, every agent registering at once) the VIP allocation and the registration
        // can take longer than the TTL, and a lease not kept alive meanwhile expired under
        // them ("requested lease not found"), so the agent granted another and started over,
        // adding to the load that made it slow. A beat waits up to half of the TTL for its
        // answer (behind etcd's grpc-proxy it often waits that long); on this task it would
        // also hold up a new service (SIGHUP) or a health change: 1 s more before a change
        // reached the fleet (20 agents behind a proxy).
        let (beats_tx, mut beats) = mpsc::unbounded_channel();
        let _beating = AbortOnDropHandle::new(tokio::spawn(beat(
            KeepAlive::new(self.client.clone(), lease, self.config.lease_ttl),
            self.config.lease_ttl / 3,
            beats_tx,
        )));
        // A VIP that could not be allocated (etcd, or the member asked, unreachable) is tried
        // again at every good keep-alive, not only in the next session: a session now outlives
        // an etcd outage.
        let mut vips_pending = !self.ensure_vips().await;
        self.reconcile_full(lease)
            .await
            .map_err(|e| format!("register: {e}"))?;
        tracing::info!(
            lease = format_args!("{lease:x}"),
            instances = self.locals.len(),
            "registered in etcd"
        );
        self.status.set_registered(true);
        self.status.set_error(None);

        let mut own = own_keys::OwnKeys::new(self.config.layout.host_prefix(&self.config.host));
        own.ensure(&self.client).await;
        // A foreign change is repaired once the burst of events it belongs to has passed.
        let mut repair_at: Option<Instant> = None;
        let mut anti_entropy = tokio::time::interval_at(
            Instant::now() + self.config.anti_entropy_interval,
            self.config.anti_entropy_interval,
        );
        let mut dirty = false;
        let changed = self.changed.clone();
        loop {
            tokio::select! {
                () = cancel.cancelled() => return Ok(SessionEnd::Cancelled),
                Some(beat) = beats.recv() => match beat {
                    lease::Beat::Alive { recovered } => {
                        own.ensure(&self.client).await;
                        if vips_pending {
                            vips_pending = !self.ensure_vips().await;
                        }
                        if recovered || dirty {
                            // etcd is back: whatever was missed is repaired now.
                            dirty = self.reconcile_full(lease).await.is_err();
                        }
                    }
                    lease::Beat::Failed(e) => {
                        self.metrics.lease_keepalive_failures.inc();
                        tracing::debug!("lease keep-alive failed: {e}");
                    }
                    lease::Beat::Lost => {
                        self.status.set_registered(false);
                        return Ok(SessionEnd::LeaseLost);
                    }
                },
                () = changed.notified() => {
                    dirty = self.reconcile_changes(lease).await.is_err() || dirty;
                }
                Some(specs) = reload.recv() => {
                    self.set_specs(specs);
                    vips_pending = !self.ensure_vips().await;
                    dirty = self.reconcile_changes(lease).await.is_err() || dirty;
                }
                seen = own.next() => {
                    if repair_at.is_none() && own_keys::foreign(&seen, &self.written, lease) {
                        repair_at = Some(Instant::now() + REPAIR_DEBOUNCE);
                    }
                }
                () = crate::timer::sleep_until(repair_at) => {
                    repair_at = None;
                    // Counted only when something really was undone: the watch also shows this
                    // host's own writes, which can look foreign when two follow each other fast.
                    match self.reconcile_full(lease).await {
                        Ok(true) => {
                            self.metrics.own_keys_restored.inc();
                            tracing::warn!(
                                "this host's keys in etcd were deleted or changed by someone else; restored"
                            );
                            dirty = false;
                        }
                        Ok(false) => dirty = false,
                        Err(_) => dirty = true,
                    }
                }
                _ = anti_entropy.tick() => {
                    dirty = self.reconcile_full(lease).await.is_err();
                }
            }
        }
    }

    /// Replaces the local definitions; unchanged ones keep their health check and state.
    fn set_specs(&mut self, specs: Vec<InstanceSpec>) {
        let mut old: BTreeMap<String, Local> = self
            .locals
            .drain(..)
            .map(|l| (l.spec.id.clone(), l))
            .collect();
        for spec in specs {
            if let Some(l) = old.remove(&spec.id).filter(|l| l.spec == spec) {
                self.locals.push(l);
                continue;
            }
            self.locals.push(self.start_local(spec));
        }
        for (_, gone) in old {
            gone.check.cancel();
        }
        self.refresh_local_status();
        self.changed.notify_one();
    }

    fn start_local(&self, spec: InstanceSpec) -> Local {
        let check = self.cancel_checks.child_token();
        let initial = if spec.check.is_some() {
            // Not passing until a check says so.
            Health::Critical
        } else {
            Health::Passing
        };
        let (tx, rx) = watch::channel(initial);
        if let Some(c) = spec.check.clone() {
            tokio::spawn(crate::health::run(c, spec.target, tx, check.clone()));
        }
        let mut forward = rx.clone();
        let changed = self.changed.clone();
        let stop = check.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    r = forward.changed() => if r.is_err() { return },
                }
                changed.notify_one();
            }
        });
        Local {
            spec,
            health: rx,
            check,
        }
    }

    /// Makes sure every local name has a VIP; false when any allocation failed.
    async fn ensure_vips(&mut self) -> bool {
        // A VIP for each local service, and one for each tag subset (`v2.orders`) the moment a
        // tag first appears: DNS answers `TAG.NAME.<domain>` with it.
        let names: BTreeSet<String> = self
            .locals
            .iter()
            .flat_map(|l| {
                std::iter::once(l.spec.service.clone()).chain(
                    l.spec
                        .tags
                        .iter()
                        .map(|t| format!("{t}.{}", l.spec.service)),
                )
            })
            .collect();
        let mut kv = self.client.kv_client();
        let mut all = true;
        for name in names {
            match crate::vip::ensure(&mut kv, &self.config.layout, self.config.vip_range, &name)
                .await
            {
                Ok(_) => {
                    if self.status.set_vip_error(&name, None) {
                        tracing::info!(service = name, "VIP allocated after an earlier failure");
                    }
                }
                Err(e) => {
                    if self.status.set_vip_error(&name, Some(e.to_string())) {
                        tracing::error!(service = name, "VIP allocation failed: {e}; retrying");
                    }
                    all = false;
                }
            }
        }
        all
    }

    /// Every key this host should have in etcd, with its value.
    fn desired(&self) -> BTreeMap<String, String> {
        let mut desired = BTreeMap::new();
        let host = &self.config.host;
        desired.insert(
            self.config.layout.host_info(host),
            serde_json::to_string(&self.config.info).unwrap_or_default(),
        );
        for l in &self.locals {
            let record = InstanceRecord {
                port: l.spec.port,
                protocol: l.spec.protocol,
                tags: l.spec.tags.clone(),
                weight: l.spec.weight,
                health: self.health(l),
                lockdown: l.spec.lockdown,
            };
            desired.insert(
                self.config
                    .layout
                    .instance(host, &l.spec.service, &l.spec.id),
                serde_json::to_string(&record).unwrap_or_default(),
            );
        }
        desired
    }

    /// Writes what changed locally since the last write (no etcd read).
    async fn reconcile_changes(&mut self, lease: i64) -> Result<(), etcd_client::Error> {
        self.refresh_local_status();
        let desired = self.desired();
        let puts: Vec<(String, String)> = desired
            .iter()
            .filter(|(k, v)| self.written.get(*k) != Some(*v))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let deletes: Vec<String> = self
            .written
            .keys()
            .filter(|k| !desired.contains_key(*k))
            .cloned()
            .collect();
        self.apply(lease, puts, deletes).await?;
        self.written = desired;
        Ok(())
    }

    /// Anti-entropy: compares this host's keys in etcd with the local definitions. Returns
    /// whether keys this host had already written needed repairing.
    async fn reconcile_full(&mut self, lease: i64) -> Result<bool, etcd_client::Error> {
        self.refresh_local_status();
        let prefix = self.config.layout.host_prefix(&self.config.host);
        let resp = self
            .client
            .kv_client()
            .get(
                prefix.as_str(),
                Some(GetOptions::new().with_range(prefix_end(&prefix))),
            )
            .await?;
        let mut actual: BTreeMap<String, (Vec<u8>, i64)> = BTreeMap::new();
        for kv in resp.kvs() {
            if let Ok(k) = kv.key_str() {
                actual.insert(k.to_owned(), (kv.value().to_vec(), kv.lease()));
            }
        }
        let desired = self.desired();
        let puts: Vec<(String, String)> = desired
            .iter()
            .filter(|(k, v)| {
                actual
                    .get(*k)
                    .is_none_or(|(value, l)| *l != lease || value != v.as_bytes())
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let deletes: Vec<String> = actual
            .keys()
            .filter(|k| !desired.contains_key(*k))
            .cloned()
            .collect();
        let repaired = !self.written.is_empty() && (!puts.is_empty() || !deletes.is_empty());
        if repaired {
            tracing::info!(
                puts = puts.len(),
                deletes = deletes.len(),
                "repairing this host's keys in etcd"
            );
        }
        self.apply(lease, puts, deletes).await?;
        self.written = desired;
        Ok(repaired)
    }

    async fn apply(
        &mut self,
        lease: i64,
        puts: Vec<(String, String)>,
        deletes: Vec<String>,
    ) -> Result<(), etcd_client::Error> {
        let mut ops: Vec<TxnOp> = puts
            .into_iter()
            .map(|(k, v)| TxnOp::put(k, v, Some(PutOptions::new().with_lease(lease))))
            .collect();
        ops.extend(
            deletes
                .into_iter()
                .map(|k| TxnOp::delete(k, None::<DeleteOptions>)),
        );
        let mut kv = self.client.kv_client();
        for chunk in ops.chunks(TXN_OPS) {
            kv.txn(Txn::new().and_then(chunk.to_vec())).await?;
        }
        Ok(())
    }

    fn refresh_local_status(&self) {
        self.status.set_locals(
            self.locals
                .iter()
                .map(|l| LocalInstance {
                    service: l.spec.service.clone(),
                    id: l.spec.id.clone(),
                    health: self.health(l),
                    locked: l.spec.lockdown,
                    allow_direct: if l.spec.lockdown {
                        l.spec.allow_direct.iter().map(|n| n.to_string()).collect()
                    } else {
                        Vec::new()
                    },
                })
                .collect(),
        );
    }

    /// Revokes the lease: every key of this host disappears at once. With etcd unreachable this
    /// waits at most one second; the lease then expires on its own.
    async fn deregister(&mut self) {
        let Some(lease) = self.status.report().lease else {
            return;
        };
        let mut client = self.client.lease_client();
        match tokio::time::timeout(Duration::from_secs(1), client.revoke(lease)).await {
            Ok(Ok(_)) => {
                tracing::info!("deregistered from etcd");
                self.lease_file.remove();
            }
            Ok(Err(e)) => tracing::warn!("deregister: {e}; the lease will expire on its own"),
            Err(_) => tracing::warn!(
                "deregister: etcd did not answer within 1s; the lease will expire on its own"
            ),
        }
        self.status.set_registered(false);
        self.status.set_lease(None);
    }
}

/// Beats `keepalive` every `every` and sends each outcome to the session, until the lease is
/// lost or the session drops its end (or the task is aborted with it).
///
/// The channel is unbounded so that a beat never waits for the session to read the last one:
/// while the session registers (which can take longer than the TTL) it reads none, and a beat
/// that waited there kept no lease alive. A few queue meanwhile, one per third of the TTL.
async fn beat(
    mut keepalive: KeepAlive,
    every: Duration,
    beats: mpsc::UnboundedSender<lease::Beat>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let beat = keepalive.beat().await;
        let lost = matches!(beat, lease::Beat::Lost);
        if beats.send(beat).is_err() || lost {
            return;
        }
    }
}
