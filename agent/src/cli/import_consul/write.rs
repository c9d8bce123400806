//! Where imported definitions go: one `<id>.toml` per instance in the output directory, never
//! over an existing file without `--force`, never two in one run to the same file, never an
//! instance whose protocol differs from its service's other instances there (`check-config
//! --config` refuses that directory). Each file is written to a hidden temporary file in the same
//! directory and renamed into place, so a reloading agent never reads half a file.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use hostmesh_config::spec::InstanceSpec;

/// Why a definition is not written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("{} already exists; pass --force to replace it", .0.display())]
    Exists(PathBuf),
    #[error("{} is also where {earlier} goes, earlier in this run", path.display())]
    Twice { path: PathBuf, earlier: String },
    #[error(
        "service {service:?} is {theirs} in {}; all instances of a service speak one protocol",
        other.display()
    )]
    Protocol {
        service: String,
        theirs: String,
        other: PathBuf,
    },
    #[error("cannot write {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The output directory: the definitions already there and those this run wrote.
#[derive(Debug)]
pub struct Out {
    dir: PathBuf,
    force: bool,
    /// By instance id: the file and its instance, for definitions that parse.
    existing: BTreeMap<String, (PathBuf, InstanceSpec)>,
    /// By instance id: what this run put there (a label naming its source).
    claimed: BTreeMap<String, (String, InstanceSpec)>,
}

impl Out {
    /// Reads the definitions in `dir` (missing is empty; files that do not parse are ignored:
    /// `check-config` reports them on its own).
    pub fn open(dir: &Path, force: bool) -> Out {
        let mut existing = BTreeMap::new();
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            let hidden = entry.file_name().as_encoded_bytes().starts_with(b".");
            if hidden || path.extension().is_none_or(|e| e != "toml") {
                continue;
            }
            if let Ok(spec) = hostmesh_config::load_service(&path) {
                existing.insert(spec.id.clone(), (path, spec));
            }
        }
        Out {
            dir: dir.to_owned(),
            force,
            existing,
            claimed: BTreeMap::new(),
        }
    }

    /// Where instance `id` goes.
    pub fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.toml"))
    }

    /// Takes the file for `spec` (from `label`) if nothing stands against it.
    pub fn claim(&mut self, spec: &InstanceSpec, label: &str) -> Result<PathBuf, WriteError> {
        let path = self.path(&spec.id);
        if let Some((earlier, _)) = self.claimed.get(&spec.id) {
            return Err(WriteError::Twice {
                path,
                earlier: earlier.clone(),
            });
        }
        if !self.force && path.exists() {
            return Err(WriteError::Exists(path));
        }
        let others = self
            .existing
            .iter()
            .filter(|(id, _)| **id != spec.id)
            .map(|(_, (path, other))| (path.clone(), other))
            .chain(
                self.claimed
                    .iter()
                    .map(|(id, (_, other))| (self.path(id), other)),
            );
        for (other_path, other) in others {
            if other.service == spec.service && other.protocol != spec.protocol {
                return Err(WriteError::Protocol {
                    service: spec.service.clone(),
                    theirs: other.protocol.to_string(),
                    other: other_path,
                });
            }
        }
        self.claimed
            .insert(spec.id.clone(), (label.to_owned(), spec.clone()));
        Ok(path)
    }
}

/// Writes `text` to `path` through a temporary file and a rename, mode 0644 (the agent, as its
/// own user, reads it). Without `force` an existing file is kept even if it appeared since
/// [`Out::claim`] looked.
pub fn write(path: &Path, text: &str, force: bool) -> Result<(), WriteError> {
    let io = |source| WriteError::Io {
        path: path.to_owned(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io)?;
    let mut file = tempfile::Builder::new()
        .prefix(".hostmesh-import-")
        .tempfile_in(dir)
        .map_err(io)?;
    file.write_all(text.as_bytes()).map_err(io)?;
    file.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))
        .map_err(io)?;
    file.as_file().sync_all().map_err(io)?;
    let persisted = if force {
        file.persist(path).map(drop)
    } else {
        file.persist_noclobber(path).map(drop)
    };
    persisted.map_err(|e| {
        if e.error.kind() == std::io::ErrorKind::AlreadyExists {
            WriteError::Exists(path.to_owned())
        } else {
            io(e.error)
        }
    })
}
