//! Reading the log files that every spawned process writes, so failures can show what happened.

use std::path::Path;

/// The last `n` lines of the file at `path` (lossily decoded), or a note saying why there are none.
pub fn tail(path: &Path, n: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            let start = lines.len().saturating_sub(n);
            lines[start..].join("\n")
        }
        Err(e) => format!("(no log at {}: {e})", path.display()),
    }
}

/// Prints the tail of a log to stderr under a banner naming it. Used by `Drop` impls while a test
/// is panicking: libtest captures stderr per test and shows it only for the failed test, so this is
/// how a failing end-to-end test explains itself.
pub(crate) fn dump_on_panic(what: &str, path: &Path) {
    if std::thread::panicking() {
        eprintln!(
            "===== last 100 lines of {what} ({}) =====\n{}\n===== end of {what} =====",
            path.display(),
            tail(path, 100)
        );
    }
}

/// Appends a marker line to a log (e.g. before a restart), so that one file reads in order.
pub(crate) fn note(path: &Path, line: &str) {
    use std::io::Write;
    let mut f = crate::process::open_log(path);
    let _ = writeln!(f, "===== hostmesh-tests: {line} =====");
}
