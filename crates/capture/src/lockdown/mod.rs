//! Lockdown (`proxy.lockdown`, docs/lockdown.md): the target ports of this host's instances
//! refuse TCP connections from other hosts, except from each service's `allow_direct`
//! networks, so that peers reach the apps only through the mesh (mTLS, the access policy,
//! metrics, breakers) even when an app listens on `0.0.0.0`.
//!
//! One nftables table of its own, `inet hostmesh_lockdown`, apart from capture's `ip hostmesh`:
//! the two have different lifecycles. [`ruleset`] writes it (pure); [`Lockdown`] applies it
//! with one `nft -f -` transaction each time (start, service changes on SIGHUP), deletes it when
//! a reload turns lockdown off, and puts it back when something flushed it.
//!
//! Lifecycle, and why (docs/lockdown.md has the table):
//! - Start: replaces any table left behind, in one transaction; lockdown on but not
//!   enforceable (no `nft`, no CAP_NET_ADMIN) stops the start: running unlocked while the
//!   config says locked would be a silent hole. Lockdown off at start deletes a leftover table.
//! - Stop, crash, upgrade: the table stays. Fail closed: the agent being down must not open
//!   the apps to direct traffic (the mesh path is down then anyway, and systemd restarts the
//!   agent, whose start replaces the table). Nothing is removed on drop, on purpose.
//! - Purge: the package's postrm deletes the table. By hand: `nft delete table inet
//!   hostmesh_lockdown`.
//! - Reboot: kernel rules are gone until the agent starts again.

mod ruleset;

use std::ffi::{OsStr, OsString};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use hostmesh_config::spec::InstanceSpec;

use super::human;
use super::nft_cmd::{self, NftError};

pub use ruleset::{LockedPort, locked_ports, ruleset};

/// Family and name of the lockdown table, as nft commands take them.
pub const TABLE: &str = "inet hostmesh_lockdown";

/// How often the table is checked to still be there while lockdown is on.
pub const TABLE_CHECK_INTERVAL: Duration = Duration::from_secs(10);

/// Why lockdown could not be put in place (or taken away). Lockdown as configured is not what
/// the kernel does: at start the agent exits, on a reload the reload is rejected.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LockdownError {
    #[error("proxy.lockdown = true needs nft: install nftables, or set proxy.lockdown = false")]
    NftNotFound,
    #[error(
        "proxy.lockdown = true needs CAP_NET_ADMIN (run the agent as root or grant it the \
         capability), or set proxy.lockdown = false: {0}"
    )]
    PermissionDenied(String),
    #[error("lockdown: nft failed: {0}")]
    Nft(String),
}

impl From<NftError> for LockdownError {
    fn from(e: NftError) -> Self {
        match e {
            NftError::NotFound => LockdownError::NftNotFound,
            NftError::PermissionDenied(why) => LockdownError::PermissionDenied(why),
            NftError::Failed(why) => LockdownError::Nft(why),
        }
    }
}

/// Lockdown's metric handles.
#[derive(Debug, Clone, Default)]
pub struct LockdownMetrics {
    /// Ports locked now (0 with lockdown off).
    pub ports: Gauge,
    /// Times the table had vanished (a firewall reload?) and was put back.
    pub table_reinstalls: Counter,
}

impl LockdownMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = LockdownMetrics::default();
        registry.register(
            "hostmesh_lockdown_ports",
            "Target ports this agent locks down (proxy.lockdown); 0 when lockdown is off",
            m.ports.clone(),
        );
        registry.register(
            "hostmesh_lockdown_table_reinstalls",
            "Times the lockdown nftables table had vanished and was installed again",
            m.table_reinstalls.clone(),
        );
        m
    }
}

/// What `/status` shows of lockdown.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LockdownReport {
    pub enabled: bool,
    pub ports: Vec<LockedPort>,
    /// The table vanished and could not be put back, or could not be checked.
    pub problem: Option<String>,
}

/// The lockdown table's owner: every change to it goes through here, one at a time.
#[derive(Debug)]
pub struct Lockdown {
    program: OsString,
    /// The ports locked now; `None` while lockdown is off (no table of ours). Held across the
    /// `nft` call, so a reload and the keeper never interleave their batches.
    installed: tokio::sync::Mutex<Option<Vec<LockedPort>>>,
    report: Mutex<LockdownReport>,
    metrics: LockdownMetrics,
}

impl Lockdown {
    pub fn new(metrics: LockdownMetrics) -> Arc<Self> {
        Self::with_program(OsStr::new("nft"), metrics)
    }

    fn with_program(program: &OsStr, metrics: LockdownMetrics) -> Arc<Self> {
        Arc::new(Lockdown {
            program: program.to_owned(),
            installed: tokio::sync::Mutex::new(None),
            report: Mutex::new(LockdownReport::default()),
            metrics,
        })
    }

    /// Makes the kernel lock exactly what `specs` and `on` say: with `on`, one transaction
    /// replaces any table of ours with one locking the target ports of the specs marked
    /// `lockdown`; without, the table is deleted (if there is one). On error nothing changed:
    /// the previous table (or none) is still in place.
    pub async fn set(&self, specs: &[InstanceSpec], on: bool) -> Result<(), LockdownError> {
        let mut installed = self.installed.lock().await;
        if on {
            let ports = locked_ports(specs);
            nft_cmd::apply(&self.program, &ruleset(&ports)).await?;
            tracing::info!(
                ports = ?ports.iter().map(|p| p.port).collect::<Vec<_>>(),
                "lockdown: nftables table {TABLE} installed"
            );
            self.publish(true, &ports, None);
            *installed = Some(ports);
        } else {
            if installed.is_some() {
                nft_cmd::apply(&self.program, &nft_cmd::delete_batch(TABLE)).await?;
                tracing::info!("lockdown turned off: nftables table {TABLE} deleted");
            }
            self.publish(false, &[], None);
            *installed = None;
        }
        Ok(())
    }

    /// At a start with lockdown off: deletes a table an earlier run with lockdown on left
    /// behind. An agent that cannot run nft (none installed, no CAP_NET_ADMIN) cannot have
    /// left one either, so that is only logged at debug level.
    pub async fn remove_leftover(&self) {
        let _held = self.installed.lock().await;
        match nft_cmd::run(
            &self.program,
            &["list", "table", "inet", "hostmesh_lockdown"],
            None,
        )
        .await
        {
            Ok(_) => match nft_cmd::apply(&self.program, &nft_cmd::delete_batch(TABLE)).await {
                Ok(()) => tracing::info!(
                    "lockdown is off: deleted the nftables table {TABLE} an earlier run left"
                ),
                Err(e) => tracing::warn!(
                    "lockdown is off but the nftables table {TABLE} an earlier run left could \
                         not be deleted: {e}; delete it with `nft delete table {TABLE}`"
                ),
            },
            Err(e) if e.is_no_such_table() => {}
            Err(e @ (NftError::NotFound | NftError::PermissionDenied(_))) => {
                tracing::debug!("lockdown is off; not checking for a leftover table: {e}");
            }
            Err(e) => tracing::warn!("lockdown is off; checking for a leftover table: {e}"),
        }
    }

    /// What `/status` shows.
    pub fn report(&self) -> LockdownReport {
        self.lock_report().clone()
    }

    /// Every `interval` while lockdown is on, checks that the table is still there and puts it
    /// back if not: a firewall reload that flushes the whole ruleset (`nft flush ruleset`, a
    /// restart of nftables.service) would otherwise open the apps without a word. Until
    /// `cancel`; the table is left in place then (see the module doc).
    pub async fn keep(self: Arc<Self>, interval: Duration, cancel: CancellationToken) {
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(interval) => {}
            }
            let installed = self.installed.lock().await;
            let Some(ports) = installed.as_ref() else {
                continue;
            };
            let problem = match self.is_installed().await {
                Ok(true) => None,
                Ok(false) => {
                    tracing::warn!(
                        "lockdown: nftables table {TABLE} vanished (a firewall reload?); \
                         installing it again"
                    );
                    match nft_cmd::apply(&self.program, &ruleset(ports)).await {
                        Ok(()) => {
                            self.metrics.table_reinstalls.inc();
                            None
                        }
                        Err(e) => Some(format!(
                            "lockdown: nftables table {TABLE} is missing and could not be \
                             installed again: {e}; retrying every {}",
                            human(interval)
                        )),
                    }
                }
                Err(e) => Some(format!(
                    "lockdown: cannot check nftables table {TABLE}: {e}"
                )),
            };
            if let Some(p) = &problem {
                tracing::error!("{p}");
            }
            self.lock_report().problem = problem;
        }
    }

    async fn is_installed(&self) -> Result<bool, NftError> {
        match nft_cmd::run(
            &self.program,
            &["list", "table", "inet", "hostmesh_lockdown"],
            None,
        )
        .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.is_no_such_table() => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn publish(&self, enabled: bool, ports: &[LockedPort], problem: Option<String>) {
        let count = i64::try_from(ports.len()).unwrap_or(i64::MAX);
        self.metrics.ports.set(count);
        *self.lock_report() = LockdownReport {
            enabled,
            ports: ports.to_vec(),
            problem,
        };
    }

    fn lock_report(&self) -> std::sync::MutexGuard<'_, LockdownReport> {
        self.report.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests;
