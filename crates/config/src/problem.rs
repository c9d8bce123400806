//! `Problem`: one thing wrong in a config or service file, with the file and key to fix it.

use std::fmt;
use std::path::{Path, PathBuf};

/// The pseudo file name of problems that come from `HOSTMESH_*` environment variables.
pub const ENVIRONMENT: &str = "environment";

/// One thing wrong, reported with where to fix it. `check-config` prints one per line.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// The file, or [`ENVIRONMENT`] for a `HOSTMESH_*` variable.
    pub file: PathBuf,
    /// Dotted key (`etcd.lease_ttl`, `check.interval`), the variable name for environment
    /// problems, or empty for whole-file problems (syntax error, unreadable file).
    pub key: String,
    pub message: String,
}

impl Problem {
    pub fn new(
        file: impl Into<PathBuf>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Problem {
            file: file.into(),
            key: key.into(),
            message: message.into(),
        }
    }

    /// A problem with a whole file (it cannot be read or parsed), so there is no key to name.
    pub fn whole_file(file: &Path, message: impl Into<String>) -> Self {
        Problem::new(file, "", message)
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(f, "{}: {}: {}", self.file.display(), self.key, self.message)
        }
    }
}

/// Every problem found, in the order found (file order, then cross-file checks).
#[derive(Debug, Clone, PartialEq)]
pub struct Problems(pub Vec<Problem>);

impl Problems {
    /// `key: message; key: message`, without the file: for a value read from etcd, where the
    /// "file" is only a placeholder and the problems end up in one log line or error string.
    pub fn one_line(&self) -> String {
        self.0
            .iter()
            .map(|p| {
                if p.key.is_empty() {
                    p.message.clone()
                } else {
                    format!("{}: {}", p.key, p.message)
                }
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

impl From<Problem> for Problems {
    fn from(problem: Problem) -> Self {
        Problems(vec![problem])
    }
}

/// Where a value came from, so that a problem with it points at what the operator must edit:
/// a key in a file, or the environment variable that overrode it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Origin {
    File { file: PathBuf, key: String },
    Env { var: String },
}

impl Origin {
    pub(crate) fn problem(&self, message: impl Into<String>) -> Problem {
        match self {
            Origin::File { file, key } => Problem::new(file.clone(), key.clone(), message),
            Origin::Env { var } => Problem::new(ENVIRONMENT, var.clone(), message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_with_and_without_key() {
        let keyed = Problem::new("/etc/a.toml", "etcd.prefix", "must start with \"/\"");
        assert_eq!(
            keyed.to_string(),
            "/etc/a.toml: etcd.prefix: must start with \"/\""
        );
        let whole = Problem::whole_file(Path::new("/etc/a.toml"), "cannot read");
        assert_eq!(whole.to_string(), "/etc/a.toml: cannot read");
        let all = Problems(vec![keyed, whole]);
        assert_eq!(all.to_string().lines().count(), 2);
        assert_eq!(
            all.one_line(),
            "etcd.prefix: must start with \"/\"; cannot read"
        );
    }
}
