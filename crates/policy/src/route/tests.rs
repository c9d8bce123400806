//! Parsing, validation and TOML round trips of route policy files.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use http::HeaderName;

use super::*;

const FILE: &str = "/tmp/orders-route.toml";

fn parse(text: &str) -> RoutePolicy {
    RoutePolicy::parse_toml(text, Path::new(FILE)).unwrap_or_else(|p| panic!("{p}"))
}

fn problem_keys(text: &str) -> Vec<String> {
    let problems = RoutePolicy::parse_toml(text, Path::new(FILE)).unwrap_err();
    for p in &problems.0 {
        assert_eq!(p.file, Path::new(FILE));
    }
    problems.0.into_iter().map(|p| p.key).collect()
}

#[test]
fn the_documented_example_parses() {
    let policy = parse(include_str!("testdata/example.toml"));
    let expected = RoutePolicy {
        timeout: Some(Duration::from_secs(2)),
        locality: Locality::Zone,
        retry: RetryPolicy {
            budget_ratio: 0.2,
            min_per_second: 10,
            max_attempts: 3,
            per_try_timeout: Some(Duration::from_millis(500)),
        },
        breaker: BreakerPolicy {
            consecutive_failures: 5,
            base_ejection: Duration::from_secs(5),
            max_ejection: Duration::from_secs(60),
            max_ejected_percent: 50,
        },
        rules: vec![Rule {
            path_prefix: Some("/api/v2".into()),
            headers: vec![(HeaderName::from_static("x-canary"), "1".into())],
            split: vec![
                Split {
                    tags: vec!["v2".into()],
                    weight: 90,
                },
                Split {
                    tags: vec!["v1".into()],
                    weight: 10,
                },
            ],
            timeout: Some(Duration::from_millis(500)),
        }],
    };
    assert_eq!(policy, expected);
}

#[test]
fn empty_file_and_missing_sections_are_the_defaults() {
    assert_eq!(parse(""), RoutePolicy::default());
    let d = RoutePolicy::default();
    assert_eq!(d.timeout, None);
    assert_eq!(d.retry.budget_ratio, 0.2);
    assert_eq!(d.retry.min_per_second, 10);
    assert_eq!(d.retry.max_attempts, 3);
    assert_eq!(d.retry.per_try_timeout, None);
    assert_eq!(d.breaker.consecutive_failures, 5);
    assert_eq!(d.breaker.base_ejection, Duration::from_secs(5));
    assert_eq!(d.breaker.max_ejection, Duration::from_secs(60));
    assert_eq!(d.breaker.max_ejected_percent, 50);
    assert!(d.rules.is_empty());
    // A partial section keeps the defaults of the keys it leaves out.
    let p = parse("[retry]\nmax_attempts = 1\n[breaker]\nmax_ejection = \"5m\"\n");
    assert_eq!(p.retry.max_attempts, 1);
    assert_eq!(p.retry.budget_ratio, 0.2);
    assert_eq!(p.breaker.max_ejection, Duration::from_secs(300));
    assert_eq!(p.breaker.base_ejection, Duration::from_secs(5));
}

#[test]
fn rules_without_match_or_split() {
    let p = parse(
        "[[rules]]\ntimeout = \"100ms\"\n\
         [[rules]]\nmatch = { path_prefix = \"/\" }\nsplit = [{ tags = [\"v1\", \"eu-1\"], weight = 0 }, { tags = [\"v2\"], weight = 1 }]\n",
    );
    assert_eq!(p.rules[0].path_prefix, None);
    assert!(p.rules[0].headers.is_empty() && p.rules[0].split.is_empty());
    assert_eq!(p.rules[0].timeout, Some(Duration::from_millis(100)));
    assert_eq!(p.rules[1].split[0].tags, ["v1", "eu-1"]);
    // Integers are numbers too.
    assert_eq!(parse("[retry]\nbudget_ratio = 1").retry.budget_ratio, 1.0);
    assert_eq!(parse("[retry]\nbudget_ratio = 0").retry.budget_ratio, 0.0);
}

#[test]
fn headers_are_sorted_by_name() {
    let p = parse(
        "[[rules]]\nmatch = { headers = { \"x-b\" = \"2\", \"x-a\" = \"1\" } }\ntimeout = \"1s\"\n",
    );
    let names: Vec<&str> = p.rules[0].headers.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["x-a", "x-b"]);
}

#[test]
fn malformed_files_name_their_keys() {
    let rule = |body: &str| format!("[[rules]]\n{body}\n");
    let cases: Vec<(String, Vec<&str>)> = vec![
        ("timeout = \"0s\"".into(), vec!["timeout"]),
        ("timeout = 5".into(), vec!["timeout"]),
        ("timeout = \"soon\"".into(), vec!["timeout"]),
        // Beyond a day, as in the agent config: the agent adds it to the current time.
        ("timeout = \"25h\"".into(), vec!["timeout"]),
        (
            "[breaker]\nmax_ejection = \"1000000000000d\"".into(),
            vec!["breaker.max_ejection"],
        ),
        ("tiemout = \"1s\"".into(), vec!["tiemout"]),
        ("retry = 3".into(), vec!["retry"]),
        (
            "[retry]\nbudget_ratio = 1.5".into(),
            vec!["retry.budget_ratio"],
        ),
        (
            "[retry]\nbudget_ratio = -0.1".into(),
            vec!["retry.budget_ratio"],
        ),
        (
            "[retry]\nbudget_ratio = \"20%\"".into(),
            vec!["retry.budget_ratio"],
        ),
        (
            "[retry]\nmin_per_second = 10001".into(),
            vec!["retry.min_per_second"],
        ),
        (
            "[retry]\nmin_per_second = -1".into(),
            vec!["retry.min_per_second"],
        ),
        (
            "[retry]\nmax_attempts = 0".into(),
            vec!["retry.max_attempts"],
        ),
        (
            "[retry]\nmax_attempts = 11".into(),
            vec!["retry.max_attempts"],
        ),
        (
            "[retry]\nmax_attempts = 2.0".into(),
            vec!["retry.max_attempts"],
        ),
        (
            "[retry]\nper_try_timeout = \"0ms\"".into(),
            vec!["retry.per_try_timeout"],
        ),
        ("[retry]\nattempts = 3".into(), vec!["retry.attempts"]),
        (
            "[breaker]\nconsecutive_failures = 0".into(),
            vec!["breaker.consecutive_failures"],
        ),
        (
            "[breaker]\nconsecutive_failures = 1001".into(),
            vec!["breaker.consecutive_failures"],
        ),
        (
            "[breaker]\nmax_ejected_percent = 101".into(),
            vec!["breaker.max_ejected_percent"],
        ),
        (
            "[breaker]\nbase_ejection = \"2m\"".into(),
            vec!["breaker.base_ejection"],
        ),
        (
            "[breaker]\nbase_ejection = \"10s\"\nmax_ejection = \"9s\"".into(),
            vec!["breaker.base_ejection"],
        ),
        // A bad max_ejection is one problem, not also a comparison with its stand-in.
        (
            "[breaker]\nmax_ejection = \"1s\"\nbase_ejection = \"x\"".into(),
            vec!["breaker.base_ejection"],
        ),
        ("rules = 1".into(), vec!["rules"]),
        ("[rules]\ntimeout = \"1s\"".into(), vec!["rules"]),
        ("rules = [1]".into(), vec!["rules[0]"]),
        (rule("match = { path_prefix = \"/a\" }"), vec!["rules[0]"]),
        (rule(""), vec!["rules[0]"]),
        (
            rule("timeout = \"1s\"\nmatch = { path_prefix = \"api\" }"),
            vec!["rules[0].match.path_prefix"],
        ),
        (
            rule("timeout = \"1s\"\nmatch = { path_prefix = \"/a?b=1\" }"),
            vec!["rules[0].match.path_prefix"],
        ),
        (
            rule("timeout = \"1s\"\nmatch = { path_prefix = 1 }"),
            vec!["rules[0].match.path_prefix"],
        ),
        (
            rule("timeout = \"1s\"\nmatch = \"/api\""),
            vec!["rules[0].match"],
        ),
        (
            rule("timeout = \"1s\"\nmatch = { path = \"/api\" }"),
            vec!["rules[0].match.path"],
        ),
        (
            rule("timeout = \"1s\"\nmatch = { headers = { \"X-Canary\" = \"1\" } }"),
            vec!["rules[0].match.headers.X-Canary"],
        ),
        (
            rule("timeout = \"1s\"\nmatch = { headers = { \"x canary\" = \"1\" } }"),
            vec!["rules[0].match.headers.\"x canary\""],
        ),
        (
            rule("timeout = \"1s\"\nmatch = { headers = { \"x-canary\" = 1 } }"),
            vec!["rules[0].match.headers.x-canary"],
        ),
        (
            rule("timeout = \"1s\"\nmatch = { headers = { \"x-canary\" = \"a\\nb\" } }"),
            vec!["rules[0].match.headers.x-canary"],
        ),
        (
            rule("timeout = \"1s\"\nmatch = { headers = [\"x-canary\"] }"),
            vec!["rules[0].match.headers"],
        ),
        (rule("split = []"), vec!["rules[0].split"]),
        (
            rule("split = { tags = [\"v2\"], weight = 1 }"),
            vec!["rules[0].split"],
        ),
        (rule("split = [\"v2\"]"), vec!["rules[0].split[0]"]),
        (
            rule("split = [{ tags = [\"v2\"], weight = 0 }]"),
            vec!["rules[0].split"],
        ),
        (
            rule("split = [{ tags = [], weight = 1 }]"),
            vec!["rules[0].split[0].tags"],
        ),
        (
            rule("split = [{ tags = \"v2\", weight = 1 }]"),
            vec!["rules[0].split[0].tags"],
        ),
        (
            rule("split = [{ tags = [\"V2\"], weight = 1 }]"),
            vec!["rules[0].split[0].tags"],
        ),
        (
            rule("split = [{ tags = [\"v_2\"], weight = 1 }]"),
            vec!["rules[0].split[0].tags"],
        ),
        (
            rule("split = [{ weight = 1 }]"),
            vec!["rules[0].split[0].tags"],
        ),
        (
            rule("split = [{ tags = [\"v2\"] }]"),
            vec!["rules[0].split[0].weight"],
        ),
        (
            rule("split = [{ tags = [\"v2\"], weight = 90 }, { tags = [\"v1\"], weight = 10001 }]"),
            vec!["rules[0].split[1].weight"],
        ),
        (
            rule("split = [{ tags = [\"v2\"], weight = 90 }, { tags = [\"v1\"], weight = -1 }]"),
            vec!["rules[0].split[1].weight"],
        ),
        (
            rule("split = [{ tags = [\"v2\"], weight = 1, zone = \"eu\" }]"),
            vec!["rules[0].split[0].zone"],
        ),
        (rule("timeout = \"0s\""), vec!["rules[0].timeout"]),
        (
            rule("timeout = \"1s\"\nmirror = \"v3\""),
            vec!["rules[0].mirror"],
        ),
        (
            format!("{}{}", rule("timeout = \"1s\""), rule("timeout = \"-1s\"")),
            vec!["rules[1].timeout"],
        ),
        ("timeout = \"1s\"\ntimeout = \"2s\"".into(), vec![""]),
    ];
    for (text, want) in cases {
        assert_eq!(problem_keys(&text), want, "for:\n{text}");
    }
}

#[test]
fn every_problem_at_once() {
    let text = r#"
timeout = "never"
colour = "blue"
[retry]
budget_ratio = 2
max_attempts = 0
[breaker]
consecutive_failures = 0
base_ejection = "2m"
[[rules]]
match = { path_prefix = "api", headers = { "X-Canary" = "1" } }
split = [ { tags = ["v2"], weight = 90 }, { tags = [], weight = 20000 } ]
[[rules]]
match = { path_prefix = "/ok" }
"#;
    let mut keys = problem_keys(text);
    keys.sort();
    assert_eq!(
        keys,
        [
            "breaker.base_ejection",
            "breaker.consecutive_failures",
            "colour",
            "retry.budget_ratio",
            "retry.max_attempts",
            "rules[0].match.headers.X-Canary",
            "rules[0].match.path_prefix",
            "rules[0].split[1].tags",
            "rules[0].split[1].weight",
            "rules[1]",
            "timeout",
        ]
    );
}

#[test]
fn messages_say_what_to_do() {
    let problems = RoutePolicy::parse_toml(
        "[retry]\nmax_attempt = 3\nmax_attempts = 0\n[breaker]\nbase_ejection = \"2m\"\n",
        Path::new(FILE),
    )
    .unwrap_err();
    let text = problems.to_string();
    assert!(
        text.contains(&format!("{FILE}: retry.max_attempt: unknown key; known keys in retry: budget_ratio, min_per_second, max_attempts, per_try_timeout")),
        "{text}"
    );
    assert!(
        text.contains("retry.max_attempts: must be between 1 and 10, found 0"),
        "{text}"
    );
    assert!(
        text.contains("breaker.base_ejection: 2m is longer than breaker.max_ejection (1m)"),
        "{text}"
    );
    let syntax = RoutePolicy::parse_toml("timeout = \n", Path::new(FILE)).unwrap_err();
    assert_eq!(syntax.0.len(), 1);
    assert!(syntax.0[0].message.contains("line 1"), "{syntax}");
}

#[test]
fn toml_round_trip() {
    let texts = [
        include_str!("testdata/example.toml"),
        "",
        "locality = \"any\"",
        "[retry]\nbudget_ratio = 0.333\nmin_per_second = 0\nmax_attempts = 1\n\
         [breaker]\nbase_ejection = \"1m 30s 250ms\"\nmax_ejection = \"2h\"\nmax_ejected_percent = 0\n",
        r#"
[[rules]]
match = { headers = { "x-user" = "ann \"the\" admin", "x-canary" = "" } }
split = [ { tags = ["v2", "eu-west-1"], weight = 0 }, { tags = ["v1"], weight = 10000 } ]
[[rules]]
match = { path_prefix = "/ünïcode/'quote'" }
timeout = "1ns"
[[rules]]
timeout = "10s"
"#,
    ];
    for text in texts {
        let policy = parse(text);
        let printed = policy.to_toml();
        let again = RoutePolicy::parse_toml(&printed, Path::new("printed.toml"))
            .unwrap_or_else(|p| panic!("{p}\n{printed}"));
        assert_eq!(again, policy, "printed:\n{printed}");
        // And the JSON agents read agrees with both.
        assert_eq!(RoutePolicy::from_json(&policy.to_json()).unwrap(), policy);
    }
}

#[test]
fn printed_toml_looks_like_the_spec() {
    let printed = parse(include_str!("testdata/example.toml")).to_toml();
    let expected = r#"timeout = "2s"
locality = "zone"

[retry]
budget_ratio = 0.2
min_per_second = 10
max_attempts = 3
per_try_timeout = "500ms"

[breaker]
consecutive_failures = 5
base_ejection = "5s"
max_ejection = "1m"
max_ejected_percent = 50

[[rules]]
match = { path_prefix = "/api/v2", headers = { "x-canary" = "1" } }
split = [ { tags = ["v2"], weight = 90 }, { tags = ["v1"], weight = 10 } ]
timeout = "500ms"
"#;
    assert_eq!(printed, expected);
}

#[test]
fn locality_is_any_or_zone() {
    assert_eq!(parse("").locality, Locality::Any);
    assert_eq!(parse("locality = \"any\"").locality, Locality::Any);
    assert_eq!(parse("locality = \"zone\"").locality, Locality::Zone);
    for bad in [
        "locality = \"region\"",
        "locality = \"Zone\"",
        "locality = 1",
    ] {
        assert_eq!(problem_keys(bad), ["locality"], "{bad}");
    }
    let problems = RoutePolicy::parse_toml("locality = \"region\"", Path::new(FILE)).unwrap_err();
    assert!(
        problems.0[0]
            .message
            .contains(r#""region" is not "any" or "zone""#),
        "{problems}"
    );
}
