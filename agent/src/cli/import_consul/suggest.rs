//! The nearest name hostmesh accepts for a Consul name it refuses: lowercase, every other
//! character as '-', runs of '-' as one, cut to the rule's length. Consul recommends DNS labels
//! but does not enforce them, so `Web_API` and `payments.v2` are common.

use hostmesh_config::names;

/// The nearest service name (a DNS label), if anything is left.
pub fn service(name: &str) -> Option<String> {
    let s = squeeze(name, 63, |c| c.is_ascii_lowercase() || c.is_ascii_digit());
    names::service(&s).is_ok().then_some(s)
}

/// The nearest tag, if anything is left.
pub fn tag(tag: &str) -> Option<String> {
    let s = squeeze(tag, 63, |c| c.is_ascii_lowercase() || c.is_ascii_digit());
    names::tag(&s).is_ok().then_some(s)
}

/// The nearest instance id (the file name), if anything is left; case and `.` and `_` stay.
pub fn instance_id(id: &str) -> Option<String> {
    let s = squeeze(id, 128, |c| {
        c.is_ascii_alphanumeric() || matches!(c, '.' | '_')
    });
    names::instance_id(&s).is_ok().then_some(s)
}

/// `s` lowercased where `keep` wants lowercase, with every character `keep` refuses as '-',
/// runs of '-' as one and no '-' at either end, at most `max` bytes.
fn squeeze(s: &str, max: usize, keep: impl Fn(char) -> bool) -> String {
    let mut out = String::new();
    for c in s.chars() {
        let c = if keep(c) { c } else { c.to_ascii_lowercase() };
        if keep(c) {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    out.truncate(max);
    out.trim_end_matches('-').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_valid_names() {
        assert_eq!(service("Web_API").as_deref(), Some("web-api"));
        assert_eq!(service("payments.v2").as_deref(), Some("payments-v2"));
        assert_eq!(service("__redis__").as_deref(), Some("redis"));
        assert_eq!(service("a  b").as_deref(), Some("a-b"));
        assert_eq!(service(&"x".repeat(70)).map(|s| s.len()), Some(63));
        assert_eq!(service("---"), None);
        assert_eq!(service("café").as_deref(), Some("caf"));
        assert_eq!(tag("Primary").as_deref(), Some("primary"));
        assert_eq!(tag("v1.2").as_deref(), Some("v1-2"));
        assert_eq!(
            tag("traefik.enable=true").as_deref(),
            Some("traefik-enable-true")
        );
        assert_eq!(instance_id("redis:6379").as_deref(), Some("redis-6379"));
        assert_eq!(instance_id("Web_1.a").as_deref(), Some("Web_1.a"));
    }
}
