//! The fail-static copy of the catalog in `data_dir`: written atomically (temp file, fsync,
//! rename, fsync of the directory) so a crash never leaves a torn file, and read at start when
//! etcd is unreachable.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::snapshot::Snapshot;

const FILE: &str = "catalog.json";
const FORMAT: u32 = 1;

/// What is stored: the snapshot and when it was written (wall clock, since it must survive a
/// restart).
#[derive(Debug, Serialize, Deserialize)]
pub struct Persisted {
    pub format: u32,
    pub saved_at_unix_ms: u64,
    pub snapshot: Snapshot,
}

impl Persisted {
    /// How old the saved snapshot is now.
    pub fn age(&self) -> Duration {
        let saved = UNIX_EPOCH + Duration::from_millis(self.saved_at_unix_ms);
        SystemTime::now()
            .duration_since(saved)
            .unwrap_or(Duration::ZERO)
    }
}

pub fn path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

/// Writes the snapshot atomically.
pub fn save(dir: &Path, snapshot: &Snapshot) -> std::io::Result<()> {
    let saved_at_unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let persisted = PersistedRef {
        format: FORMAT,
        saved_at_unix_ms,
        snapshot,
    };
    crate::atomic_file::replace(&path(dir), |w| Ok(serde_json::to_writer(w, &persisted)?))
}

/// Reads the saved snapshot; `Ok(None)` when there is none yet.
pub fn load(dir: &Path) -> Result<Option<Persisted>, String> {
    let p = path(dir);
    let bytes = match std::fs::read(&p) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", p.display())),
    };
    let persisted: Persisted =
        serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", p.display()))?;
    if persisted.format != FORMAT {
        return Err(format!(
            "{}: format {} is not {FORMAT}",
            p.display(),
            persisted.format
        ));
    }
    Ok(Some(persisted))
}

#[derive(Serialize)]
struct PersistedRef<'a> {
    format: u32,
    saved_at_unix_ms: u64,
    snapshot: &'a Snapshot,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_replaces_atomically() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(load(dir.path()).expect("load").is_none());
        let mut snap = Snapshot {
            revision: 7,
            ..Snapshot::default()
        };
        save(dir.path(), &snap).expect("save");
        snap.revision = 8;
        save(dir.path(), &snap).expect("save again");
        let back = load(dir.path()).expect("load").expect("some");
        assert_eq!(back.snapshot.revision, 8);
        assert!(back.age() < Duration::from_secs(5));
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, [FILE], "no temp file left behind");
    }

    #[test]
    fn a_corrupt_file_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(path(dir.path()), b"{garbage").expect("write");
        assert!(load(dir.path()).is_err());
    }
}
