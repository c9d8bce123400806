#![allow(clippy::unwrap_used)]

use std::path::Path;

use serde_json::json;

use super::*;

fn parse(text: &str) -> Result<AccessPolicy, hostmesh_config::Problems> {
    AccessPolicy::parse_toml(text, Path::new("p.toml"))
}

/// Every problem's `key: message`.
fn problems(text: &str) -> Vec<String> {
    parse(text)
        .unwrap_err()
        .0
        .iter()
        .map(|p| format!("{}: {}", p.key, p.message))
        .collect()
}

#[test]
fn the_documented_example_parses() {
    let p = parse("allow = [\"web\", \"billing\"]   # services\nallow_hosts = [\"batch-7\"]\n")
        .unwrap();
    assert_eq!(p.allow, ["web", "billing"]);
    assert_eq!(p.allow_hosts, [HostPattern::Exact("batch-7".into())]);
    let p = parse("allow_hosts = [\"batch-*\", \"*\"]").unwrap();
    assert_eq!(
        p.allow_hosts,
        [
            HostPattern::Prefix("batch-".into()),
            HostPattern::Prefix(String::new())
        ]
    );
    // Deny everyone, explicitly.
    assert_eq!(parse("allow = []").unwrap(), AccessPolicy::default());
}

#[test]
fn every_problem_is_reported_with_its_key() {
    let found = problems(
        "allow = [\"Web\", \"ok\", 5, \"-x\", \"\"]\n\
         allow_hosts = [\"a*b\", \"b**\", \"\", \"h_1\", \"fine.example\", \"x*\"]\n\
         deny = [\"web\"]\n",
    );
    let expected = [
        "deny: unknown key; known keys: allow, allow_hosts",
        "allow[0]: \"Web\" has the character 'W'",
        "allow[2]: expected a string, found integer 5",
        "allow[3]: \"-x\" must not start or end with '-'",
        "allow[4]: \"\" must not be empty",
        "allow_hosts[0]: \"a*b\" '*' may only end a pattern, once",
        "allow_hosts[1]: \"b**\" '*' may only end a pattern, once",
        "allow_hosts[2]: \"\" must not be empty",
        "allow_hosts[3]: \"h_1\" has the character '_'",
    ];
    assert_eq!(found.len(), expected.len(), "{found:#?}");
    for (got, want) in found.iter().zip(expected) {
        assert!(
            got.starts_with(want),
            "{got:?} does not start with {want:?}"
        );
    }
}

#[test]
fn wrong_shapes_and_empty_files_are_problems() {
    assert_eq!(
        problems("allow = \"web\"\nallow_hosts = {}\n"),
        [
            "allow: expected a list of service names such as [\"web\"], found string \"web\"",
            "allow_hosts: expected a list of host names or prefixes such as [\"batch-7\", \
             \"batch-*\"], found a table"
        ]
    );
    let empty = problems("");
    assert_eq!(empty.len(), 1);
    assert!(
        empty[0].contains("needs `allow`, `allow_hosts` or both"),
        "{empty:?}"
    );
    let syntax = problems("allow = [");
    assert!(
        syntax[0].contains("TOML syntax error at line 1"),
        "{syntax:?}"
    );
    // Too long: a service name is a DNS label.
    assert!(problems(&format!("allow = [\"{}\"]", "a".repeat(64)))[0].starts_with("allow[0]:"));
}

#[test]
fn json_round_trips_and_toml_output_is_accepted_by_set() {
    let policies = [
        AccessPolicy::default(),
        parse("allow = [\"web\", \"billing\"]\nallow_hosts = [\"batch-7\", \"batch-*\", \"*\"]")
            .unwrap(),
    ];
    for p in policies {
        let v = p.to_json();
        let bytes = serde_json::to_vec(&v).unwrap();
        let back: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(AccessPolicy::from_json(&back).unwrap(), p, "{v}");
        assert_eq!(parse(&p.to_toml()).unwrap(), p, "{}", p.to_toml());
    }
    let p = parse("allow = [\"web\"]\nallow_hosts = [\"batch-*\"]").unwrap();
    assert_eq!(
        p.to_json(),
        json!({"allow": ["web"], "allow_hosts": ["batch-*"]})
    );
    assert_eq!(
        p.to_toml(),
        "allow = [\"web\"]\nallow_hosts = [\"batch-*\"]\n"
    );
}

#[test]
fn json_readers_ignore_unknown_fields_and_reject_bad_values() {
    let p = AccessPolicy::from_json(&json!({"allow": ["web"], "future": 1, "allow_hosts": null}))
        .unwrap();
    assert_eq!(p.allow, ["web"]);
    assert!(p.allow_hosts.is_empty());
    for (v, want) in [
        (json!([]), "expected a JSON object"),
        // The catalog's form of a stored text that is not JSON.
        (json!("{\"allow\":[\"web\"]"), "not JSON"),
        (json!({}), "needs `allow`"),
        (json!({"allow": ["Web"]}), "allow[0]:"),
        (
            json!({"allow": ["web"], "allow_hosts": [1]}),
            "allow_hosts[0]: expected a string",
        ),
    ] {
        let err = AccessPolicy::from_json(&v).unwrap_err().to_string();
        assert!(err.contains(want), "{v}: {err}");
    }
}

#[test]
fn refusals_read_in_full() {
    let long = "a".repeat(254);
    for (pattern, want) in [
        (
            "",
            "must not be empty; a host name, or a prefix ending in '*'",
        ),
        (long.as_str(), "is 254 characters long; at most 253"),
        (
            "a*b",
            "'*' may only end a pattern, once; a host pattern is lowercase letters, digits, '.' \
             and '-', optionally ending in '*'",
        ),
        (
            "h_1*",
            "has the character '_'; a host pattern is lowercase letters, digits, '.' and '-', \
             optionally ending in '*'",
        ),
    ] {
        assert_eq!(
            HostPattern::parse(pattern).unwrap_err().to_string(),
            want,
            "{pattern:?}"
        );
    }
    for (v, want) in [
        (
            json!("{\"allow\""),
            "the stored value is not JSON (8 bytes)",
        ),
        (json!({"allow": [null]}), "a list holds null"),
        (
            json!({"allow": ["Web"], "allow_hosts": ["x y"]}),
            "allow[0]: \"Web\" has the character 'W'; a service name is a DNS label: lowercase \
             letters, digits and '-'; allow_hosts[0]: \"x y\" has the character ' '; a host \
             pattern is lowercase letters, digits, '.' and '-', optionally ending in '*'",
        ),
    ] {
        assert_eq!(
            AccessPolicy::from_json(&v).unwrap_err().to_string(),
            want,
            "{v}"
        );
    }
}
