//! Name rules for everything a name can come from: the agent config, service definitions, and
//! the records other hosts write to etcd (which the catalog checks as strictly as local files).
//! Host names, DNS names, service names, tags, instance ids; each returns why a name is refused
//! as a [`NameError`]: the rule it broke and what is wrong with it.

use std::fmt;

/// Why a name is refused: which rule applied and what breaks it. The caller reports it after
/// the name and where it came from (`host name "Web" has the character 'W'; a host name is
/// …`); whoever wrote the name must change it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameError {
    pub rule: NameRule,
    pub problem: NameProblem,
}

/// The rule a name is checked against: which kind of name it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameRule {
    Host,
    Service,
    Tag,
    InstanceId,
    DnsName,
    TrustDomain,
    Zone,
}

/// What is wrong with a name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameProblem {
    #[error("must not be empty")]
    Empty,
    #[error("is {len} characters long; at most {max}")]
    TooLong { len: usize, max: usize },
    #[error("has the character {0:?}")]
    Character(char),
    /// A DNS label (a service name, a label of a DNS name) starts or ends with '-'.
    #[error("must not start or end with '-'")]
    HyphenAtEdge,
    /// A DNS name ends with '.': names are written without the root.
    #[error("must not end with '.'")]
    TrailingDot,
    /// One label of a DNS name breaks the label rule.
    #[error("label {label:?} {problem}")]
    BadLabel {
        label: String,
        problem: Box<NameProblem>,
    },
}

impl NameRule {
    /// What the rule allows, said after the problem; `None` for a DNS name, whose problem
    /// names the label at fault.
    fn allows(self) -> Option<&'static str> {
        Some(match self {
            NameRule::Host => "a host name is lowercase letters, digits, '.' and '-'",
            NameRule::Service => "a service name is a DNS label: lowercase letters, digits and '-'",
            NameRule::Tag => "a tag is lowercase letters, digits and '-'",
            NameRule::InstanceId => "an instance id is letters, digits, '.', '_' and '-'",
            NameRule::DnsName => return None,
            NameRule::TrustDomain => {
                "a trust domain is lowercase letters, digits, '.', '-' and '_'"
            }
            NameRule::Zone => "a zone is letters, digits, '.', '_' and '-'",
        })
    }

    /// The refusal of a name under this rule for `problem`.
    fn refuses(self) -> impl FnOnce(NameProblem) -> NameError {
        move |problem| NameError {
            rule: self,
            problem,
        }
    }
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.rule.allows() {
            Some(allows) => write!(f, "{}; {allows}", self.problem),
            None => write!(f, "{}", self.problem),
        }
    }
}

impl std::error::Error for NameError {}

/// `agent.host`: lowercase `[a-z0-9.-]`, 1..=253 chars. It becomes an etcd key segment and the
/// host's certificate identity, so other characters would break one or the other.
pub fn host(s: &str) -> Result<(), NameError> {
    charset(s, 253, |c| {
        c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-'
    })
    .map_err(NameRule::Host.refuses())
}

/// A service name: `[a-z0-9-]`, 1..=63 chars, not starting or ending with '-', since it is a DNS
/// label under the mesh domain (`orders.mesh`).
pub fn service(s: &str) -> Result<(), NameError> {
    label(s).map_err(NameRule::Service.refuses())
}

/// A tag: `[a-z0-9-]`, 1..=63 chars (it is matched in route rules, never used in DNS).
pub fn tag(s: &str) -> Result<(), NameError> {
    charset(s, 63, |c| {
        c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'
    })
    .map_err(NameRule::Tag.refuses())
}

/// An instance id (the service file's name without `.toml`): `[A-Za-z0-9._-]`, 1..=128 chars,
/// since it is an etcd key segment and travels in a header.
pub fn instance_id(s: &str) -> Result<(), NameError> {
    charset(s, 128, |c| {
        c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
    })
    .map_err(NameRule::InstanceId.refuses())
}

/// A DNS name such as `mesh` or `mesh.example`: lowercase labels, no trailing dot.
pub fn dns_name(s: &str) -> Result<(), NameError> {
    let check = || {
        if s.ends_with('.') {
            return Err(NameProblem::TrailingDot);
        }
        if s.len() > 253 {
            return Err(NameProblem::TooLong {
                len: s.len(),
                max: 253,
            });
        }
        for part in s.split('.') {
            label(part).map_err(|problem| NameProblem::BadLabel {
                label: part.to_owned(),
                problem: Box::new(problem),
            })?;
        }
        Ok(())
    };
    check().map_err(NameRule::DnsName.refuses())
}

/// A SPIFFE trust domain: lowercase letters, digits, '.', '-' and '_', 1..=255 chars.
pub fn trust_domain(s: &str) -> Result<(), NameError> {
    charset(s, 255, |c| {
        c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_')
    })
    .map_err(NameRule::TrustDomain.refuses())
}

/// `agent.zone`: letters, digits, '.', '_' and '-', 1..=63 chars, as cloud zone names are; it
/// travels in the host record and in metrics labels.
pub fn zone(s: &str) -> Result<(), NameError> {
    charset(s, 63, |c| {
        c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
    })
    .map_err(NameRule::Zone.refuses())
}

/// `s` as an owned string when `rule` accepts it, else the refusal as a config problem's
/// message: how the readers take a name from a file.
pub(crate) fn owned(s: &str, rule: fn(&str) -> Result<(), NameError>) -> Result<String, String> {
    rule(s).map(|()| s.to_owned()).map_err(|e| e.to_string())
}

/// A DNS label: `[a-z0-9-]`, 1..=63, no '-' at either end.
fn label(s: &str) -> Result<(), NameProblem> {
    charset(s, 63, |c| {
        c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'
    })?;
    if s.starts_with('-') || s.ends_with('-') {
        return Err(NameProblem::HyphenAtEdge);
    }
    Ok(())
}

fn charset(s: &str, max: usize, allowed: impl Fn(char) -> bool) -> Result<(), NameProblem> {
    if s.is_empty() {
        return Err(NameProblem::Empty);
    }
    if s.len() > max {
        return Err(NameProblem::TooLong { len: s.len(), max });
    }
    if let Some(c) = s.chars().find(|c| !allowed(*c)) {
        return Err(NameProblem::Character(c));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules() {
        assert!(host("web-01.eu").is_ok());
        assert!(host("Web").is_err());
        assert!(host(&"a".repeat(254)).is_err());
        assert!(service("orders-v2").is_ok());
        assert!(service("-orders").is_err());
        assert!(service("orders_v2").is_err());
        assert!(service(&"a".repeat(64)).is_err());
        assert!(tag("v2").is_ok());
        assert!(tag("V2").is_err());
        assert!(instance_id("orders.1_A-b").is_ok());
        assert!(instance_id("a b").is_err());
        assert!(dns_name("mesh.example").is_ok());
        assert!(dns_name("mesh.").is_err());
        assert!(dns_name("Mesh").is_err());
        assert!(dns_name("a..b").is_err());
        assert!(trust_domain("hostmesh.local").is_ok());
        assert!(trust_domain("Hostmesh").is_err());
        assert!(zone("eu-west-1a").is_ok());
        assert!(zone("eu 1").is_err());
    }

    /// The messages are what operators read in `check-config`, logs and CLI errors.
    #[test]
    fn messages() {
        let message = |r: Result<(), NameError>| r.expect_err("refused").to_string();
        assert_eq!(
            message(host("web 1")),
            "has the character ' '; a host name is lowercase letters, digits, '.' and '-'"
        );
        assert_eq!(
            message(host(&"a".repeat(254))),
            "is 254 characters long; at most 253; a host name is lowercase letters, digits, '.' \
             and '-'"
        );
        assert_eq!(
            message(service("-orders")),
            "must not start or end with '-'; a service name is a DNS label: lowercase letters, \
             digits and '-'"
        );
        assert_eq!(
            message(service("")),
            "must not be empty; a service name is a DNS label: lowercase letters, digits and '-'"
        );
        assert_eq!(
            message(tag("V2")),
            "has the character 'V'; a tag is lowercase letters, digits and '-'"
        );
        assert_eq!(
            message(instance_id("a b")),
            "has the character ' '; an instance id is letters, digits, '.', '_' and '-'"
        );
        assert_eq!(message(dns_name("mesh.")), "must not end with '.'");
        assert_eq!(
            message(dns_name(&"a".repeat(254))),
            "is 254 characters long; at most 253"
        );
        assert_eq!(message(dns_name("a..b")), "label \"\" must not be empty");
        assert_eq!(
            message(dns_name("mesh.-x")),
            "label \"-x\" must not start or end with '-'"
        );
        assert_eq!(
            message(trust_domain("Hostmesh")),
            "has the character 'H'; a trust domain is lowercase letters, digits, '.', '-' and '_'"
        );
        assert_eq!(
            message(zone("eu 1")),
            "has the character ' '; a zone is letters, digits, '.', '_' and '-'"
        );
    }
}
