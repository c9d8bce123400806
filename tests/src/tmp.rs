//! Temp dirs named after the owning test process (`hmt<pid>-…`), so a later run can remove those
//! of a process that was SIGKILLed before its `Drop` could.

use tempfile::TempDir;

/// A fresh temp dir `$TMPDIR/hmt<pid>-<what>-XXXXXX`, removed on drop.
#[track_caller]
pub(crate) fn tempdir(what: &str) -> TempDir {
    tempfile::Builder::new()
        .prefix(&format!("{}-{what}-", crate::netns::process_prefix()))
        .tempdir()
        .unwrap_or_else(|e| panic!("creating a temp dir for {what}: {e}"))
}

/// Removes temp dirs left by dead test processes (called once per process with the namespace
/// sweep).
pub(crate) fn sweep_stale() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if crate::netns::owner_is_dead(&name) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}
