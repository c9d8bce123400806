//! File descriptors: the agent's whole capacity is bounded by `nofile`, and one listener that
//! runs it out makes every other fail (2,100 idle admin connections under `nofile` 2,048 made
//! apps' requests fail, DNS over TCP time out and `/ready` stop answering).
//!
//! - At start the soft limit is raised to the hard one (the unit sets `LimitNOFILE`).
//! - Each listener has its own cap, so the side listeners can never take the data path's
//!   descriptors: the admin endpoint at most [`crate::admin::MAX_CONNECTIONS`], DNS over TCP at
//!   most [`crate::dns::MAX_TCP_CONNECTIONS`], and the data path `proxy.max_connections` per side
//!   (two descriptors each: the client's and the upstream's). [`budget`] says at start whether
//!   they all fit in the limit.
//! - Running out anyway is counted in `hostmesh_descriptors_exhausted_total{listener}` and logged
//!   at most once per [`LOG_EVERY`], with how many were not logged.

use std::io;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// Descriptors for everything that is not a connection: listeners, etcd, files, the runtime.
const OTHER: u64 = 256;
/// At most one "out of descriptors" line per this.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// The limit in force after [`raise_limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub soft: u64,
    pub hard: u64,
}

/// Raises the soft `nofile` limit to the hard one and returns what is in force.
pub fn raise_limit() -> io::Result<Limit> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    Ok(Limit { soft, hard })
}

/// What the configured caps may use at most, against the limit: `Some(problem)` when they do
/// not fit (the agent still runs; past the limit new connections fail and are counted).
/// `side_connections` is the sum of the other listeners' caps (admin, DNS over TCP).
pub fn budget(limit: Limit, max_connections: usize, side_connections: usize) -> Option<String> {
    let data_path = 4 * max_connections as u64; // two sides, two descriptors per connection
    let side = side_connections as u64;
    let needed = data_path + side + OTHER;
    (needed > limit.soft).then(|| {
        format!(
            "nofile is {} but proxy.max_connections = {max_connections} may need {needed} \
             descriptors; raise LimitNOFILE or lower proxy.max_connections",
            limit.soft
        )
    })
}

/// Whether an accept failed for lack of descriptors or memory (rather than one connection's
/// own problem, such as a reset before it was accepted).
pub fn out_of_resources(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(nix::libc::EMFILE | nix::libc::ENFILE | nix::libc::ENOBUFS | nix::libc::ENOMEM)
    )
}

/// The process's one record of running out. Global because the resource is: every listener
/// draws on the same `nofile`, and one counter and one log budget serve them all.
pub fn exhaustion() -> &'static Exhaustion {
    static EXHAUSTION: LazyLock<Exhaustion> = LazyLock::new(Exhaustion::default);
    &EXHAUSTION
}

/// Counts and logs running out, per listener.
#[derive(Debug, Default)]
pub struct Exhaustion {
    counter: Family<[(&'static str, &'static str); 1], Counter>,
    log: Mutex<LogState>,
}

#[derive(Debug, Default)]
struct LogState {
    last: Option<Instant>,
    suppressed: u64,
}

impl Exhaustion {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "hostmesh_descriptors_exhausted",
            "Connections a listener could not accept for lack of file descriptors or memory",
            self.counter.clone(),
        );
    }

    /// Records a failed accept on `listener` (`outbound`, `inbound`, `admin`, `dns`).
    pub fn record(&self, listener: &'static str, e: &io::Error) {
        self.counter.get_or_create(&[("listener", listener)]).inc();
        let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if log.last.is_some_and(|t| now.duration_since(t) < LOG_EVERY) {
            log.suppressed += 1;
            return;
        }
        let suppressed = std::mem::take(&mut log.suppressed);
        log.last = Some(now);
        drop(log);
        tracing::warn!(
            listener,
            not_logged = suppressed,
            "cannot accept a connection: {e}; see hostmesh_descriptors_exhausted_total"
        );
    }

    /// The count for one listener (tests).
    #[cfg(test)]
    pub fn count(&self, listener: &'static str) -> u64 {
        self.counter.get_or_create(&[("listener", listener)]).get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_names_what_to_change() {
        let limit = Limit {
            soft: 65_536,
            hard: 65_536,
        };
        // 128 admin + 256 DNS over TCP, as the agent passes them.
        assert_eq!(budget(limit, 10_000, 384), None);
        let problem = budget(limit, 20_000, 384).expect("does not fit");
        assert!(problem.contains("LimitNOFILE"), "{problem}");
    }

    #[test]
    fn only_resource_errors_count_as_running_out() {
        assert!(out_of_resources(&io::Error::from_raw_os_error(
            nix::libc::EMFILE
        )));
        assert!(!out_of_resources(&io::Error::from_raw_os_error(
            nix::libc::ECONNABORTED
        )));
    }

    #[test]
    fn every_failure_is_counted_but_few_are_logged() {
        let e = Exhaustion::default();
        let err = io::Error::from_raw_os_error(nix::libc::EMFILE);
        for _ in 0..100 {
            e.record("admin", &err);
        }
        assert_eq!(e.count("admin"), 100);
        assert_eq!(e.log.lock().expect("lock").suppressed, 99);
    }
}
