//! Access logs (`[access_log]`, docs/operations.md#access-logs): one line per request or TCP
//! connection, in JSON or HAProxy's formats, to the journal, stderr or a file.
//!
//! - `entry.rs`: what a line says.
//! - `format.rs`: the formats (pure).
//! - `sink.rs`: the writer thread and destinations.
//! - `body.rs`: bodies that count their bytes, and log their entry when the response ends.
//!
//! The data path only builds an [`Entry`] (when logs are on) and hands it to a bounded channel
//! with `try_send`: writing a line never blocks a request. A full channel drops the line and
//! counts it in `hostmesh_access_log_dropped_total`, as does a failed write.

pub mod body;
mod entry;
mod format;
mod sink;

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};

use prometheus_client::metrics::counter::Counter;

pub use entry::{Direction, Entry, trace_id_of};
pub use format::Format;
pub use sink::{Destination, JOURNAL_IDENTIFIER};

/// Lines waiting for the writer. At 50,000 requests a second this is about 80 ms of traffic:
/// enough to ride out a slow write, small enough (a few MB of entries) to bound memory.
const QUEUE: usize = 4096;

/// The handle the data path logs through; cheap to clone. [`AccessLog::off`] costs one branch
/// per request.
#[derive(Debug, Clone, Default)]
pub struct AccessLog(Option<Arc<Inner>>);

/// What the writer thread gets: a line, or a request to write out everything before it.
#[derive(Debug)]
enum Message {
    Line(Box<Entry>),
    /// Answered once every line queued before it is written (the agent stopping).
    Flush(SyncSender<()>),
}

#[derive(Debug)]
struct Inner {
    tx: SyncSender<Message>,
    dropped: Counter,
    reopen: Arc<AtomicBool>,
}

/// `[access_log]` as the proxy uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub format: Format,
    pub path: Option<PathBuf>,
    /// The agent's stderr is the journal (it runs under systemd).
    pub journal: bool,
}

impl AccessLog {
    /// No access log.
    pub fn off() -> AccessLog {
        AccessLog(None)
    }

    /// Opens the destination (a file that cannot be opened fails here, at start) and starts
    /// the writer thread. `dropped` is `hostmesh_access_log_dropped_total`.
    pub fn start(settings: &Settings, dropped: Counter) -> io::Result<AccessLog> {
        let destination = Destination::choose(settings.path.as_deref(), settings.journal);
        let out = sink::open(&destination)?;
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
        let reopen = Arc::new(AtomicBool::new(false));
        let writer = sink::Writer {
            rx,
            format: settings.format,
            destination,
            reopen: reopen.clone(),
            dropped: dropped.clone(),
        };
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || writer.run(out))?;
        Ok(AccessLog(Some(Arc::new(Inner {
            tx,
            dropped,
            reopen,
        }))))
    }

    /// Whether lines are written: build an [`Entry`] only then.
    #[inline]
    pub fn is_on(&self) -> bool {
        self.0.is_some()
    }

    /// Queues `entry` for the writer, or drops and counts it when the queue is full.
    pub fn log(&self, entry: Entry) {
        let Some(inner) = &self.0 else { return };
        let line = Message::Line(Box::new(entry));
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = inner.tx.try_send(line)
        {
            inner.dropped.inc();
        }
    }

    /// Waits (at most `within`) until every line queued so far is written: the agent calls it
    /// last when it stops, so that the requests it served in its last moments are not lost
    /// with the writer's batch. Blocks the calling thread.
    pub fn flush(&self, within: std::time::Duration) {
        let Some(inner) = &self.0 else { return };
        let (ack, done) = std::sync::mpsc::sync_channel(1);
        if inner.tx.send(Message::Flush(ack)).is_ok() {
            let _ = done.recv_timeout(within);
        }
    }

    /// Has the writer reopen a file destination before its next line (SIGHUP, after log
    /// rotation moved the file).
    pub fn reopen(&self) {
        if let Some(inner) = &self.0 {
            inner.reopen.store(true, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn lines_reach_the_file_and_a_reopen_follows_rotation() {
        let dir = std::env::temp_dir().join(format!("hostmesh-access-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("access.log");
        let settings = Settings {
            format: Format::Json,
            path: Some(path.clone()),
            journal: false,
        };
        let log = AccessLog::start(&settings, Counter::default()).unwrap();
        let wait_for = |p: &std::path::Path, n: usize| {
            for _ in 0..500 {
                let text = std::fs::read_to_string(p).unwrap_or_default();
                if text.lines().count() >= n {
                    return text;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            panic!("{} never had {n} lines", p.display());
        };
        log.log(Entry::new(Direction::Outbound, "http", "orders"));
        let text = wait_for(&path, 1);
        assert!(text.contains("\"service\":\"orders\""), "{text}");

        // logrotate moves the file away, then HUPs the agent.
        let rotated = dir.join("access.log.1");
        std::fs::rename(&path, &rotated).unwrap();
        log.reopen();
        log.log(Entry::new(Direction::Inbound, "tcp", "billing"));
        log.flush(std::time::Duration::from_secs(5));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"service\":\"billing\""), "{text}");
        assert_eq!(wait_for(&rotated, 1).lines().count(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_waiting() {
        // A writer that never reads: the channel fills at QUEUE.
        let (tx, _rx) = std::sync::mpsc::sync_channel::<Message>(QUEUE);
        let dropped = Counter::default();
        let log = AccessLog(Some(Arc::new(Inner {
            tx,
            dropped: dropped.clone(),
            reopen: Arc::default(),
        })));
        for _ in 0..QUEUE + 10 {
            log.log(Entry::new(Direction::Outbound, "http", "orders"));
        }
        assert_eq!(dropped.get(), 10);
    }

    #[test]
    fn an_unwritable_path_fails_at_start() {
        let settings = Settings {
            format: Format::Haproxy,
            path: Some("/nonexistent-dir/access.log".into()),
            journal: false,
        };
        assert!(AccessLog::start(&settings, Counter::default()).is_err());
    }
}
