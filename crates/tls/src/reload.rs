//! The live TLS material and how it changes: the files are polled for changes (modification
//! time, size and inode, so a replaced file is noticed too) and re-read on SIGHUP. New
//! handshakes use the new material; open connections keep theirs. A bad new file is logged and
//! the old material kept.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;

use super::material::{FileProblem, Material, TlsFiles};
use hostmesh_config::spec::InstanceSpec;

use hostmesh_config::{AgentConfig, Problem, Problems, TlsMode};

/// How often the files are checked for changes.
pub const POLL_INTERVAL: Duration = Duration::from_secs(3);

/// What identifies one version of a file without reading it.
type Stamp = Option<(SystemTime, u64, u64)>;

/// The material every new handshake uses, and where it comes from.
#[derive(Debug)]
pub struct TlsStore {
    files: TlsFiles,
    current: ArcSwap<Material>,
    stamps: Mutex<[Stamp; 3]>,
}

impl TlsStore {
    /// Loads the material once (at start: problems stop the agent).
    pub fn load(files: TlsFiles) -> Result<TlsStore, Vec<FileProblem>> {
        let stamps = stamps(&files);
        let material = Material::load(&files)?;
        Ok(TlsStore {
            files,
            current: ArcSwap::from_pointee(material),
            stamps: Mutex::new(stamps),
        })
    }

    /// The store an agent config asks for: `None` with `tls.mode = "disabled"`, else the
    /// material from the `[tls]` files, whose problems are reported as config problems of
    /// `config_path` at the key naming the file (exit 2, like every invalid config).
    pub fn for_config(
        config_path: &Path,
        config: &AgentConfig,
    ) -> Result<Option<TlsStore>, Problems> {
        if config.tls.mode == TlsMode::Disabled {
            return Ok(None);
        }
        TlsStore::load(TlsFiles::new(&config.tls, &config.agent.host))
            .map(Some)
            .map_err(|found| {
                Problems(
                    found
                        .into_iter()
                        .map(|p| Problem::new(config_path, p.key, p.message))
                        .collect(),
                )
            })
    }

    /// [`hostmesh_config::load_all`] plus, with mTLS, the TLS files: what the agent's start and
    /// `check-config --config` use. TLS problems are listed even when services have problems
    /// (as long as the agent config itself parses), so one run shows everything to fix.
    pub fn load_config(
        path: &Path,
    ) -> Result<(AgentConfig, Vec<InstanceSpec>, Option<TlsStore>), Problems> {
        let loaded = hostmesh_config::load_all(path, hostmesh_config::process_env());
        let config = match &loaded {
            Ok((config, _)) => Some(config.clone()),
            Err(_) => AgentConfig::load(path, hostmesh_config::process_env()).ok(),
        };
        let tls = config.map(|c| TlsStore::for_config(path, &c));
        match (loaded, tls) {
            (Ok((config, specs)), Some(Ok(tls))) => Ok((config, specs, tls)),
            (loaded, tls) => {
                let mut problems = loaded.err().map(|p| p.0).unwrap_or_default();
                if let Some(Err(found)) = tls {
                    problems.extend(found.0);
                }
                Err(Problems(problems))
            }
        }
    }

    /// The material for a new handshake.
    pub fn current(&self) -> Arc<Material> {
        self.current.load_full()
    }

    /// Re-reads the files (SIGHUP, or a change seen by [`TlsStore::watch`]). Returns whether the
    /// new material was taken; on problems they are logged and the old material stays.
    pub fn reload(&self, why: &str) -> bool {
        let stamps = stamps(&self.files);
        *self.stamps.lock().unwrap_or_else(|e| e.into_inner()) = stamps;
        match Material::load(&self.files) {
            Ok(material) => {
                tracing::info!(
                    why,
                    identity = %material.identity,
                    expires_in_s = material.expiry_seconds() as i64,
                    "TLS material reloaded; new connections use it"
                );
                self.current.store(Arc::new(material));
                true
            }
            Err(problems) => {
                for p in &problems {
                    tracing::error!(why, "TLS reload rejected, keeping the old material: {p}");
                }
                false
            }
        }
    }

    /// Polls the files every [`POLL_INTERVAL`] until `cancel`, reloading when one changed.
    pub async fn watch(self: Arc<Self>, cancel: CancellationToken) {
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(POLL_INTERVAL) => {}
            }
            let now = stamps(&self.files);
            let changed = *self.stamps.lock().unwrap_or_else(|e| e.into_inner()) != now;
            if changed {
                self.reload("files changed");
            }
        }
    }

    /// Seconds until the current certificate expires.
    pub fn expiry_seconds(&self) -> f64 {
        self.current.load().expiry_seconds()
    }
}

fn stamps(files: &TlsFiles) -> [Stamp; 3] {
    [
        stamp(&files.ca_file),
        stamp(&files.cert_file),
        stamp(&files.key_file),
    ]
}

fn stamp(path: &Path) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len(), m.ino()))
}
