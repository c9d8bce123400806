//! The validated access policy of one service: what `hostmesh policy set` accepts and agents
//! apply. Every value here passed the checks in [`super::parse`].

use std::fmt;

/// Who may call a service. An empty policy (both lists empty) denies every caller.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessPolicy {
    /// Services whose hosts may call: a host with a registered instance of one of them.
    pub allow: Vec<String>,
    /// Host names that may call, whatever they run.
    pub allow_hosts: Vec<HostPattern>,
}

/// Why an `allow_hosts` entry is refused: whoever wrote the policy must fix it. The caller
/// reports it after the pattern and its key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostPatternError {
    #[error("must not be empty; a host name, or a prefix ending in '*'")]
    Empty,
    #[error("is {len} characters long; at most 253")]
    TooLong { len: usize },
    /// A '*' before the end (`a*b`), or more than one (`b**`).
    #[error("'*' may only end a pattern, once; {RULE}")]
    Star,
    #[error("has the character {0:?}; {RULE}")]
    Character(char),
}

/// What a host pattern may hold, said after what breaks it.
const RULE: &str =
    "a host pattern is lowercase letters, digits, '.' and '-', optionally ending in '*'";

/// One entry of `allow_hosts`: `batch-7`, or `batch-*` for every host whose name starts with
/// `batch-` (`*` alone: every host).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostPattern {
    Exact(String),
    Prefix(String),
}

impl HostPattern {
    /// Parses one pattern: host-name characters (lowercase `[a-z0-9.-]`, at most 253) with an
    /// optional single trailing `*`. The error says why it is refused.
    pub fn parse(s: &str) -> Result<HostPattern, HostPatternError> {
        let (name, prefix) = match s.strip_suffix('*') {
            Some(name) => (name, true),
            None => (s, false),
        };
        if !prefix && name.is_empty() {
            return Err(HostPatternError::Empty);
        }
        if name.len() > 253 {
            return Err(HostPatternError::TooLong { len: name.len() });
        }
        if let Some(c) = name
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-')))
        {
            return Err(if c == '*' {
                HostPatternError::Star
            } else {
                HostPatternError::Character(c)
            });
        }
        Ok(if prefix {
            HostPattern::Prefix(name.to_owned())
        } else {
            HostPattern::Exact(name.to_owned())
        })
    }

    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(name) => host == name,
            HostPattern::Prefix(prefix) => host.starts_with(prefix.as_str()),
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Exact(name) => f.write_str(name),
            HostPattern::Prefix(prefix) => write!(f, "{prefix}*"),
        }
    }
}
