//! What capture tells `/status`: the problems an operator should see (a VIP:port that cannot be
//! bound, a vanished nftables table) and, in listen mode, the VIP:ports being listened on.
//!
//! A cheap shared handle: capture's tasks write it, the admin endpoint reads it. The lock is
//! never held across an await.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddrV4;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

#[derive(Debug, Clone)]
pub struct CaptureStatus {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    mode: &'static str,
    listening: BTreeSet<SocketAddrV4>,
    /// Per VIP:port that failed to bind, the message for operators.
    bind_problems: BTreeMap<SocketAddrV4, String>,
    /// Problems not tied to one VIP:port (the nft table).
    table_problem: Option<String>,
}

impl CaptureStatus {
    /// `mode` is `"nft"` or `"listen"`, as in the config.
    pub fn new(mode: &'static str) -> Self {
        CaptureStatus {
            inner: Arc::new(Mutex::new(Inner {
                mode,
                ..Inner::default()
            })),
        }
    }

    pub fn mode(&self) -> &'static str {
        self.lock().mode
    }

    /// Every current problem, one line each, bind problems in address order.
    pub fn problems(&self) -> Vec<String> {
        let inner = self.lock();
        inner
            .table_problem
            .iter()
            .chain(inner.bind_problems.values())
            .cloned()
            .collect()
    }

    /// The VIP:ports listened on (listen mode; empty in nft mode, where one outbound listener
    /// serves every VIP).
    pub fn listening(&self) -> Vec<SocketAddrV4> {
        self.lock().listening.iter().copied().collect()
    }

    pub(crate) fn set_listening(&self, addr: SocketAddrV4, on: bool) {
        let mut inner = self.lock();
        if on {
            inner.listening.insert(addr);
        } else {
            inner.listening.remove(&addr);
        }
    }

    pub(crate) fn set_bind_problem(&self, addr: SocketAddrV4, problem: Option<String>) {
        let mut inner = self.lock();
        match problem {
            Some(p) => inner.bind_problems.insert(addr, p),
            None => inner.bind_problems.remove(&addr),
        };
    }

    pub(crate) fn set_table_problem(&self, problem: Option<String>) {
        self.lock().table_problem = problem;
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The data stays consistent even if a writer panicked: every write is one assignment.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_in_order() {
        let s = CaptureStatus::new("listen");
        let a: SocketAddrV4 = "127.77.0.9:80".parse().unwrap_or_else(|_| unreachable!());
        let b: SocketAddrV4 = "127.77.0.5:80".parse().unwrap_or_else(|_| unreachable!());
        s.set_bind_problem(a, Some("a".into()));
        s.set_bind_problem(b, Some("b".into()));
        s.set_table_problem(Some("t".into()));
        assert_eq!(s.problems(), ["t", "b", "a"]);
        s.set_bind_problem(b, None);
        s.set_table_problem(None);
        assert_eq!(s.problems(), ["a"]);
        assert_eq!(s.mode(), "listen");
    }
}
