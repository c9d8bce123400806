//! Idle connections to this host's `http` apps, one list per data path worker (a thread-local:
//! each worker is one thread with its own runtime, see `workers`). A request takes a connection
//! and its response body gives it back on the thread that serves the peer's stream, with no lock,
//! no pool checkout and no task of the connection's own.
//!
//! Why per worker and not per peer connection: an earlier experiment kept app connections per
//! peer connection (branch `exp-inbound-one-task`); they were either many (a peer connection per
//! worker per peer host, each with its own) or churned (16 kept: 0.41x the throughput at 64
//! concurrent requests). One list per worker serves every peer with as many connections as
//! requests run at once on it.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;

use crate::outbound::h1::upstream::Upstream;

/// At most this many idle connections per worker, all apps together; past it the oldest is
/// closed. Enough for every request of a busy worker to find one (64 concurrent requests over
/// two workers keep about 32 each busy).
const MAX_IDLE: usize = 256;

struct Kept {
    conn: Upstream,
    since: Instant,
}

#[derive(Default)]
struct List {
    /// Oldest first.
    conns: VecDeque<Kept>,
    /// A task closes this list's expired connections (see [`put`]).
    swept: bool,
}

impl List {
    /// Closes the connections idle for longer than `idle_timeout`.
    fn expire(&mut self, idle_timeout: Duration) {
        let now = Instant::now();
        while self
            .conns
            .front()
            .is_some_and(|k| now.duration_since(k.since) >= idle_timeout)
        {
            self.conns.pop_front();
        }
    }
}

thread_local! {
    static IDLE: RefCell<List> = RefCell::default();
}

/// The most recently used open connection to `target` kept on this thread, if any (the newest:
/// the least likely to have been closed by the app meanwhile).
pub fn take(target: SocketAddr, idle_timeout: Duration) -> Option<Upstream> {
    IDLE.with_borrow_mut(|list| {
        list.expire(idle_timeout);
        while let Some(at) = list.conns.iter().rposition(|k| k.conn.target == target) {
            let mut kept = list.conns.remove(at)?;
            if kept.conn.still_open() {
                return Some(kept.conn);
            }
        }
        None
    })
}

/// Keeps `conn` on this thread for the next request to its app, for at most `idle_timeout`.
pub fn put(conn: Upstream, idle_timeout: Duration) {
    let sweep = IDLE.with_borrow_mut(|list| {
        if list.conns.len() >= MAX_IDLE {
            list.conns.pop_front();
        }
        list.conns.push_back(Kept {
            conn,
            since: Instant::now(),
        });
        !std::mem::replace(&mut list.swept, true)
    });
    // On a worker (a single-threaded runtime) the task runs on this thread, so it sweeps this
    // thread's list; elsewhere (unit tests) expired connections go at the next take.
    if sweep {
        if crate::workers::current().is_some() {
            tokio::spawn(sweep_while_kept(idle_timeout));
        } else {
            IDLE.with_borrow_mut(|list| list.swept = false);
        }
    }
}

/// Closes this thread's expired connections until the list is empty.
async fn sweep_while_kept(idle_timeout: Duration) {
    crate::sweep::until_empty(idle_timeout, || {
        IDLE.with_borrow_mut(|list| {
            list.expire(idle_timeout);
            list.swept = !list.conns.is_empty();
            list.conns.is_empty()
        })
    })
    .await;
}

/// How many connections this thread keeps (tests).
#[cfg(test)]
pub fn kept() -> usize {
    IDLE.with_borrow(|list| list.conns.len())
}
