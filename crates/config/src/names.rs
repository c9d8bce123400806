//! Name rules for everything a name can come from: the agent config, service definitions, and
//! the records other hosts write to etcd (which the catalog checks as strictly as local files).
//! Host names, DNS names, service names, tags, instance ids; each returns why a name is refused.

/// `agent.host`: lowercase `[a-z0-9.-]`, 1..=253 chars. It becomes an etcd key segment and the
/// host's certificate identity, so other characters would break one or the other.
pub fn host(s: &str) -> Result<(), String> {
    charset(s, 253, |c| {
        c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-'
    })
    .map_err(|e| format!("{e}; a host name is lowercase letters, digits, '.' and '-'"))
}

/// A service name: `[a-z0-9-]`, 1..=63 chars, not starting or ending with '-', since it is a DNS
/// label under the mesh domain (`orders.mesh`).
pub fn service(s: &str) -> Result<(), String> {
    label(s).map_err(|e| {
        format!("{e}; a service name is a DNS label: lowercase letters, digits and '-'")
    })
}

/// A tag: `[a-z0-9-]`, 1..=63 chars (it is matched in route rules, never used in DNS).
pub fn tag(s: &str) -> Result<(), String> {
    charset(s, 63, |c| {
        c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'
    })
    .map_err(|e| format!("{e}; a tag is lowercase letters, digits and '-'"))
}

/// An instance id (the service file's name without `.toml`): `[A-Za-z0-9._-]`, 1..=128 chars,
/// since it is an etcd key segment and travels in a header.
pub fn instance_id(s: &str) -> Result<(), String> {
    charset(s, 128, |c| {
        c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
    })
    .map_err(|e| format!("{e}; an instance id is letters, digits, '.', '_' and '-'"))
}

/// A DNS name such as `mesh` or `mesh.example`: lowercase labels, no trailing dot.
pub fn dns_name(s: &str) -> Result<(), String> {
    if s.ends_with('.') {
        return Err("must not end with '.'".to_owned());
    }
    if s.len() > 253 {
        return Err(format!("is {} characters long; at most 253", s.len()));
    }
    for part in s.split('.') {
        label(part).map_err(|e| format!("label {part:?} {e}"))?;
    }
    Ok(())
}

/// A SPIFFE trust domain: lowercase letters, digits, '.', '-' and '_', 1..=255 chars.
pub fn trust_domain(s: &str) -> Result<(), String> {
    charset(s, 255, |c| {
        c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_')
    })
    .map_err(|e| format!("{e}; a trust domain is lowercase letters, digits, '.', '-' and '_'"))
}

/// `agent.zone`: letters, digits, '.', '_' and '-', 1..=63 chars, as cloud zone names are; it
/// travels in the host record and in metrics labels.
pub fn zone(s: &str) -> Result<(), String> {
    charset(s, 63, |c| {
        c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
    })
    .map_err(|e| format!("{e}; a zone is letters, digits, '.', '_' and '-'"))
}

/// A DNS label: `[a-z0-9-]`, 1..=63, no '-' at either end.
fn label(s: &str) -> Result<(), String> {
    charset(s, 63, |c| {
        c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'
    })?;
    if s.starts_with('-') || s.ends_with('-') {
        return Err("must not start or end with '-'".to_owned());
    }
    Ok(())
}

fn charset(s: &str, max: usize, allowed: impl Fn(char) -> bool) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if s.len() > max {
        return Err(format!("is {} characters long; at most {max}", s.len()));
    }
    if let Some(c) = s.chars().find(|c| !allowed(*c)) {
        return Err(format!("has the character {c:?}"));
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
}
