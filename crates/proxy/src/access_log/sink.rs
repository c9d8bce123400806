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

use super::entry::Entry;
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
    /// `path` if set; else the journal when the agent runs under systemd with its output in
    /// the journal (`JOURNAL_STREAM` set, the socket there); else stderr.
    pub fn choose(path: Option<&Path>) -> Destination {
        match path {
            Some(p) => Destination::File(p.to_owned()),
            None if std::env::var_os("JOURNAL_STREAM").is_some()
                && Path::new(JOURNAL_SOCKET).exists() =>
            {
                Destination::Journal
            }
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

    fn write_line(&mut self, line: &str) -> io::Result<()> {
        match self {
            Output::Journal(socket) => {
                // Lines never hold a newline (the formats escape them), so the simple form of
                // the protocol serves.
                let datagram =
                    format!("SYSLOG_IDENTIFIER={JOURNAL_IDENTIFIER}\nPRIORITY=6\nMESSAGE={line}\n");
                socket.send(datagram.as_bytes()).map(|_| ())
            }
            Output::Stderr(stderr) => {
                let mut lock = stderr.lock();
                lock.write_all(line.as_bytes())?;
                lock.write_all(b"\n")
            }
            Output::File(file) => {
                file.write_all(line.as_bytes())?;
                file.write_all(b"\n")
            }
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
    pub rx: Receiver<Entry>,
    pub format: Format,
    pub destination: Destination,
    pub reopen: Arc<AtomicBool>,
    pub dropped: Counter,
}

/// A write failure is logged at most this often (a full disk would otherwise log per line).
const WARN_EVERY: Duration = Duration::from_secs(60);

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
        while let Ok(first) = self.rx.recv() {
            if self.reopen.swap(false, Ordering::Relaxed) {
                match Output::open(&self.destination) {
                    Ok(new) => {
                        let _ = out.flush();
                        out = new;
                    }
                    Err(e) => warn("reopening", &e),
                }
            }
            // Everything already queued goes out before one flush.
            for entry in std::iter::once(first).chain(self.rx.try_iter()) {
                if let Err(e) = out.write_line(&self.format.line(&entry)) {
                    self.dropped.inc();
                    warn("writing", &e);
                }
            }
            if let Err(e) = out.flush() {
                warn("flushing", &e);
            }
        }
        let _ = out.flush();
    }
}

/// Opens `destination` now, so that a bad path fails the agent's start rather than every line.
pub(super) fn open(destination: &Destination) -> io::Result<Output> {
    Output::open(destination)
}
