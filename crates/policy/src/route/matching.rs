//! Which rule takes a request, and which split of that rule a request goes to.

use hostmesh_wire::headers::HeaderLookup;

use super::policy::{RoutePolicy, Rule, Split};

impl RoutePolicy {
    /// First matching rule for a request (path and headers), if any. `path` is the request
    /// path; a query string (`?…`) is ignored.
    pub fn matching_rule(
        &self,
        path: &str,
        headers: &(impl HeaderLookup + ?Sized),
    ) -> Option<&Rule> {
        self.rules.iter().find(|rule| rule.matches(path, headers))
    }
}

impl Rule {
    /// Whether the request matches `path_prefix` (if any) and every header of `headers`.
    pub fn matches(&self, path: &str, headers: &(impl HeaderLookup + ?Sized)) -> bool {
        let path_ok = self
            .path_prefix
            .as_deref()
            .is_none_or(|prefix| path_has_prefix(path, prefix));
        path_ok
            && self.headers.iter().all(|(name, want)| {
                headers.any_value(name.as_str(), &mut |value| value == want.as_bytes())
            })
    }

    /// Picks one split by weight with a random number in 0..total_weight; None when no split.
    /// A roll past the total wraps around; splits of weight 0 are never picked.
    pub fn choose_split(&self, roll: u32) -> Option<&Split> {
        let total = self.total_weight();
        if total == 0 {
            return None;
        }
        let mut roll = roll % total;
        for split in &self.split {
            if roll < split.weight {
                return Some(split);
            }
            roll -= split.weight;
        }
        None
    }

    /// The sum of the splits' weights; 0 when there is no split.
    pub fn total_weight(&self) -> u32 {
        self.split
            .iter()
            .fold(0u32, |sum, s| sum.saturating_add(s.weight))
    }
}

/// Path-segment prefix, as Gateway API's `PathPrefix` (which Linkerd uses): `/api` takes `/api`,
/// `/api/` and `/api/x`, but not `/apix`. A trailing `/` in the prefix changes nothing; `/` takes
/// every path.
pub(crate) fn path_has_prefix(path: &str, prefix: &str) -> bool {
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    let prefix = prefix.trim_end_matches('/');
    if prefix.is_empty() {
        return true;
    }
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use http::{HeaderMap, HeaderName, HeaderValue};

    use super::*;

    fn rule(prefix: Option<&str>, headers: &[(&'static str, &str)], tag: &str) -> Rule {
        Rule {
            path_prefix: prefix.map(str::to_owned),
            headers: headers
                .iter()
                .map(|(n, v)| (HeaderName::from_static(n), (*v).to_owned()))
                .collect(),
            split: vec![Split {
                tags: vec![tag.to_owned()],
                weight: 1,
            }],
            timeout: None,
        }
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (n, v) in pairs {
            map.append(*n, HeaderValue::from_static(v));
        }
        map
    }

    fn picked<'a>(policy: &'a RoutePolicy, path: &str, h: &HeaderMap) -> Option<&'a str> {
        policy
            .matching_rule(path, h)
            .map(|r| r.split[0].tags[0].as_str())
    }

    #[test]
    fn first_match_wins() {
        let policy = RoutePolicy {
            rules: vec![
                rule(Some("/api/v2"), &[("x-canary", "1")], "canary"),
                rule(Some("/api"), &[], "api"),
                rule(None, &[], "all"),
            ],
            ..RoutePolicy::default()
        };
        let canary = headers(&[("x-canary", "1")]);
        let none = HeaderMap::new();
        assert_eq!(picked(&policy, "/api/v2/orders", &canary), Some("canary"));
        assert_eq!(picked(&policy, "/api/v2/orders", &none), Some("api"));
        assert_eq!(picked(&policy, "/api/v1", &canary), Some("api"));
        assert_eq!(picked(&policy, "/health", &canary), Some("all"));
    }

    #[test]
    fn path_prefix_is_by_segment() {
        assert!(path_has_prefix("/api/v2", "/api/v2"));
        assert!(path_has_prefix("/api/v2/", "/api/v2"));
        assert!(path_has_prefix("/api/v2/x/y", "/api/v2"));
        assert!(path_has_prefix("/api/v2?q=1", "/api/v2"));
        assert!(path_has_prefix("/api/v2/x", "/api/v2/"));
        assert!(path_has_prefix("/api/v2", "/api/v2/"));
        assert!(!path_has_prefix("/api/v2x", "/api/v2"));
        assert!(!path_has_prefix("/api", "/api/v2"));
        assert!(!path_has_prefix("/API/v2", "/api/v2"));
        assert!(path_has_prefix("/anything", "/"));
        assert!(path_has_prefix("/", "/"));
    }

    #[test]
    fn headers_must_all_match_exactly() {
        let policy = RoutePolicy {
            rules: vec![rule(None, &[("x-canary", "1"), ("x-user", "ann")], "c")],
            ..RoutePolicy::default()
        };
        let both = headers(&[("x-canary", "1"), ("x-user", "ann")]);
        assert!(policy.matching_rule("/", &both).is_some());
        let one = headers(&[("x-canary", "1")]);
        assert!(policy.matching_rule("/", &one).is_none());
        let wrong_case = headers(&[("x-canary", "1"), ("x-user", "Ann")]);
        assert!(policy.matching_rule("/", &wrong_case).is_none());
        // A repeated header matches when any of its values does.
        let repeated = headers(&[("x-canary", "0"), ("x-canary", "1"), ("x-user", "ann")]);
        assert!(policy.matching_rule("/", &repeated).is_some());
    }

    #[test]
    fn no_rule_matches() {
        let policy = RoutePolicy {
            rules: vec![rule(Some("/api"), &[], "api")],
            ..RoutePolicy::default()
        };
        assert!(policy.matching_rule("/web", &HeaderMap::new()).is_none());
        assert!(
            RoutePolicy::default()
                .matching_rule("/", &HeaderMap::new())
                .is_none()
        );
    }

    fn split(tag: &str, weight: u32) -> Split {
        Split {
            tags: vec![tag.to_owned()],
            weight,
        }
    }

    #[test]
    fn choose_split_by_weight() {
        let r = Rule {
            path_prefix: None,
            headers: Vec::new(),
            split: vec![split("v2", 90), split("v1", 10)],
            timeout: None,
        };
        assert_eq!(r.total_weight(), 100);
        let tag = |roll| r.choose_split(roll).unwrap().tags[0].as_str();
        assert_eq!(tag(0), "v2");
        assert_eq!(tag(89), "v2");
        assert_eq!(tag(90), "v1");
        assert_eq!(tag(99), "v1");
        let v1 = (0..100).filter(|roll| tag(*roll) == "v1").count();
        assert_eq!(v1, 10);
        // Out-of-range rolls wrap rather than fail.
        assert_eq!(tag(100), "v2");
        assert_eq!(tag(190), "v1");
    }

    #[test]
    fn zero_weights_and_no_split() {
        let r = Rule {
            path_prefix: None,
            headers: Vec::new(),
            split: vec![split("off", 0), split("on", 3), split("off2", 0)],
            timeout: Some(Duration::from_secs(1)),
        };
        for roll in 0..6 {
            assert_eq!(r.choose_split(roll).unwrap().tags[0], "on");
        }
        let bare = Rule {
            split: Vec::new(),
            ..r
        };
        assert_eq!(bare.total_weight(), 0);
        assert!(bare.choose_split(0).is_none());
    }

    #[test]
    fn split_selects_instances_with_every_tag() {
        let s = Split {
            tags: vec!["v2".into(), "eu".into()],
            weight: 1,
        };
        assert!(s.selects(&["eu".into(), "v2".into(), "x".into()]));
        assert!(!s.selects(&["v2".into()]));
    }

    #[test]
    fn rule_timeout_replaces_the_policy_timeout() {
        let mut r = rule(None, &[], "a");
        let policy = RoutePolicy {
            timeout: Some(Duration::from_secs(2)),
            ..RoutePolicy::default()
        };
        assert_eq!(policy.timeout_for(Some(&r)), Some(Duration::from_secs(2)));
        r.timeout = Some(Duration::from_millis(500));
        assert_eq!(
            policy.timeout_for(Some(&r)),
            Some(Duration::from_millis(500))
        );
        assert_eq!(policy.timeout_for(None), Some(Duration::from_secs(2)));
    }
}
