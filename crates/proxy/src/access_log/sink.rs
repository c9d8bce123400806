//! Where lines go, on a thread of their own: the data path hands entries over a bounded channel
//! and never waits; the thread formats and writes them. A full channel (the destination is
//! slower than the traffic) or a failed write drops the line and counts it.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt as _;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;

use super::format::Format;

/// journald's native socket (systemd.journal-fields(7), "native protocol").
const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

/// The identifier access lines carry in the journal: `journalctl -t hostmesh-access`.
pub const JOURNAL_IDENTIFIER: &str = "hostmesh-access";

/// Where lines are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// journald's native protocol, with their own identifier so that they can be read apart
    /// from the agent's log.
    Journal,
    Stderr,
    /// Appended to a file (created 0640), reopened on SIGHUP for log rotation.
    File(PathBuf),
}

impl Destination {
    /// `path` if set; else the journal when the agent's stderr is the journal (`journal`, as
    /// the agent's own logging decides it) and its socket is there; else stderr.
    pub fn choose(path: Option<&Path>, journal: bool) -> Destination {
        match path {
            Some(p) => Destination::File(p.to_owned()),
            None if journal && Path::new(JOURNAL_SOCKET).exists() => Destination::Journal,
            None => Destination::Stderr,
        }
    }
}

/// An open destination.
pub(super) enum Output {
    Journal(UnixDatagram),
    Stderr(io::Stderr),
    File(BufWriter<File>),
}

impl Output {
    fn open(destination: &Destination) -> io::Result<Output> {
        Ok(match destination {
            Destination::Journal => {
                let socket = UnixDatagram::unbound()?;
                socket.connect(JOURNAL_SOCKET)?;
                Output::Journal(socket)
            }
            Destination::Stderr => Output::Stderr(io::stderr()),
            Destination::File(path) => Output::File(BufWriter::new(open_file(path)?)),
        })
    }

    /// Writes newline-ended lines; the journal takes one line at a time.
    fn write_batch(&mut self, lines: &str) -> io::Result<()> {
        match self {
            Output::Journal(socket) => {
                // Lines never hold a newline (the formats escape them), so the simple form of
                // the protocol serves.
                let datagram =
                    format!("SYSLOG_IDENTIFIER={JOURNAL_IDENTIFIER}\nPRIORITY=6\nMESSAGE={lines}");
                socket.send(datagram.as_bytes()).map(|_| ())
            }
            Output::Stderr(stderr) => stderr.lock().write_all(lines.as_bytes()),
            Output::File(file) => file.write_all(lines.as_bytes()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Output::File(file) => file.flush(),
            Output::Journal(_) | Output::Stderr(_) => Ok(()),
        }
    }
}

/// Opens `path` for appending, creating it 0640 (readable by the log group, as the journal's
/// files are).
pub fn open_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
}

/// What the writer thread needs.
pub struct Writer {
    pub rx: Receiver<super::Message>,
    pub format: Format,
    pub destination: Destination,
    pub reopen: Arc<AtomicBool>,
    pub dropped: Counter,
}

/// A write failure is logged at most this often (a full disk would otherwise log per line).
const WARN_EVERY: Duration = Duration::from_secs(60);

/// After the first line of a batch the writer waits this long for more before writing them in
/// one go. A writer that woke for every line cost the data path a futex wake per request (the
/// channel wakes a parked receiver) and the agent a write per line: JSON logs on the one-hop
/// bench took CPU per request from 0.92 to 1.43 s per 100k that way. Lines reach their
/// destination at most this much later.
const BATCH_WAIT: Duration = Duration::from_millis(20);

impl Writer {
    /// Writes until every sender is gone (the agent stopped), then flushes.
    pub(super) fn run(self, mut out: Output) {
        let mut last_warning: Option<Instant> = None;
        let mut warn = |what: &str, e: &io::Error| {
            if last_warning.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
                tracing::warn!("access log: {what}: {e}; lines are dropped and counted");
                last_warning = Some(Instant::now());
            }
        };
        let mut batch = String::new();
        while let Ok(first) = self.rx.recv() {
            std::thread::sleep(BATCH_WAIT);
            if self.reopen.swap(false, Ordering::Relaxed) {
                match Output::open(&self.destination) {
                    Ok(new) => {
                        let _ = out.flush();
                        out = new;
                    }
                    Err(e) => warn("reopening", &e),
                }
            }
            // Everything queued by now goes out together: one write for a file or stderr, a
            // datagram per line for the journal.
            let mut lines = 0;
            let mut acks = Vec::new();
            for message in std::iter::once(first).chain(self.rx.try_iter()) {
                let entry = match message {
                    super::Message::Line(entry) => entry,
                    super::Message::Flush(ack) => {
                        acks.push(ack);
                        continue;
                    }
                };
                lines += 1;
                self.format.write(&entry, &mut batch);
                batch.push('\n');
                if let Output::Journal(_) = out {
                    if let Err(e) = out.write_batch(&batch) {
                        self.dropped.inc();
                        warn("writing", &e);
                    }
                    batch.clear();
                    lines = 0;
                }
            }
            if !batch.is_empty() {
                if let Err(e) = out.write_batch(&batch).and_then(|()| out.flush()) {
                    self.dropped.inc_by(lines);
                    warn("writing", &e);
                }
                batch.clear();
            }
            for ack in acks {
                let _ = ack.send(());
            }
        }
        let _ = out.flush();
    }
}

/// Opens `destination` now, so that a bad path fails the agent's start rather than every line.
pub(super) fn open(destination: &Destination) -> io::Result<Output> {
    Output::open(destination)
}
