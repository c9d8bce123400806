//! Logging, filtered by `[log] level` (or `RUST_LOG` when set):
//! - under systemd with `format = "text"`, straight to the journal (`JOURNAL_STREAM` names our
//!   stderr), with each event's level as the journal priority and its fields as journal fields,
//!   so `journalctl -u hostmesh -p warning` works;
//! - otherwise text or JSON lines on stderr (JSON is for log shippers, so it stays JSON under
//!   systemd too).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use hostmesh_config::LogFormat;

/// Installs the global subscriber. Safe to call once per process.
pub fn init(format: LogFormat, level: &str) {
    let filter = || {
        EnvFilter::try_from_default_env()
            .or_else(|_| EnvFilter::try_new(level))
            .unwrap_or_else(|_| EnvFilter::new("info"))
    };
    if format == LogFormat::Text && under_journald() {
        match tracing_journald::layer() {
            Ok(journal) => {
                let _ = tracing_subscriber::registry()
                    .with(filter())
                    .with(journal.with_syslog_identifier("hostmesh".to_owned()))
                    .try_init();
                return;
            }
            Err(e) => eprintln!("hostmesh: the journal is not reachable ({e}); logging to stderr"),
        }
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_writer(std::io::stderr)
        // Colour codes only help a person at a terminal; elsewhere they are noise.
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Whether stderr is connected to the journal: systemd sets `JOURNAL_STREAM` to the
/// `device:inode` of the stream it gave us (a child whose stderr was redirected keeps the
/// variable but not the stream, hence the comparison).
pub(crate) fn under_journald() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(expected) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    expected.to_string_lossy() == format!("{}:{}", meta.dev(), meta.ino())
}
