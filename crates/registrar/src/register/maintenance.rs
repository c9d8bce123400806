//! Operator maintenance (`hostmesh maint SERVICE[/ID] on|off`): local instances taken out of
//! rotation by hand. Their health in etcd is `maintenance` whatever their check says, so every
//! agent stops routing to them at its next snapshot.
//!
//! The set is kept in `data_dir`: maintenance usually brackets an app restart, and often an agent
//! restart too, and an instance must not come back into rotation before the operator says so
//! (Consul keeps its maintenance mode across restarts for the same reason).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

const FILE: &str = "maintenance.json";

/// The instances in maintenance, as `(service, id)`.
#[derive(Debug)]
pub struct Maintenance {
    path: PathBuf,
    set: Mutex<BTreeSet<(String, String)>>,
    /// Wakes the registrar to write the new health.
    changed: Arc<Notify>,
}

impl Maintenance {
    /// Loads the set saved in `data_dir`; an unreadable file is logged and treated as empty.
    pub(super) fn load(data_dir: &Path, changed: Arc<Notify>) -> Maintenance {
        let path = data_dir.join(FILE);
        let set = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice::<Vec<(String, String)>>(&bytes)
                .map(|v| v.into_iter().collect())
                .unwrap_or_else(|e| {
                    tracing::warn!("{}: {e}; no instance is in maintenance", path.display());
                    BTreeSet::new()
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeSet::new(),
            Err(e) => {
                tracing::warn!("{}: {e}; no instance is in maintenance", path.display());
                BTreeSet::new()
            }
        };
        if !set.is_empty() {
            tracing::info!(instances = set.len(), "instances still in maintenance");
        }
        Maintenance {
            path,
            set: Mutex::new(set),
            changed,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<(String, String)>> {
        self.set.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn contains(&self, service: &str, id: &str) -> bool {
        self.lock().contains(&(service.to_owned(), id.to_owned()))
    }

    /// Puts instances in maintenance (`on`) or takes them out, saving the set before the change
    /// takes effect: a change that could not be saved is not made.
    pub fn set(&self, instances: &[(String, String)], on: bool) -> std::io::Result<()> {
        let mut set = self.lock();
        let mut next = set.clone();
        for i in instances {
            if on {
                next.insert(i.clone());
            } else {
                next.remove(i);
            }
        }
        if next == *set {
            return Ok(());
        }
        save(&self.path, &next)?;
        *set = next;
        drop(set);
        self.changed.notify_one();
        Ok(())
    }
}

fn save(path: &Path, set: &BTreeSet<(String, String)>) -> std::io::Result<()> {
    crate::atomic_file::replace(path, |w| {
        Ok(serde_json::to_writer(w, &set.iter().collect::<Vec<_>>())?)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(s: &str, i: &str) -> (String, String) {
        (s.to_owned(), i.to_owned())
    }

    #[test]
    fn survives_a_restart_and_only_changes_what_it_is_told() {
        let dir = tempfile::tempdir().expect("temp dir");
        let m = Maintenance::load(dir.path(), Arc::default());
        m.set(&[pair("orders", "1"), pair("orders", "2")], true)
            .expect("saved");
        m.set(&[pair("orders", "2")], false).expect("saved");
        let again = Maintenance::load(dir.path(), Arc::default());
        assert!(again.contains("orders", "1"));
        assert!(!again.contains("orders", "2"));
    }

    #[test]
    fn a_corrupt_file_means_nothing_is_in_maintenance() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join(FILE), b"{not json").expect("write");
        let m = Maintenance::load(dir.path(), Arc::default());
        assert!(!m.contains("orders", "1"));
    }
}
