//! Every key of a service definition (`services.d/*.toml`), declared once. The tables under
//! "Service definitions" in docs/config.md are generated from these declarations. SIGHUP
//! re-reads every definition, so every key is applied by a reload.

use crate::key::DefaultValue::{Derived, Required, Unset, Written};
use crate::key::keys;

keys! {
    NAME = "name", Str, "string", Required, Applied,
        "`[a-z0-9-]`, 1..=63 chars, with no `-` at either end. It is a DNS label \
         (`orders.mesh`).";
    PORT = "port", Int, "integer", Required, Applied,
        "1..=65535. The port that clients use.";
    TARGET = "target", Str, "`IP:PORT`", Derived("`127.0.0.1:<port>`"), Applied,
        "Must be an IP address, not a host name. Port 0 and unspecified addresses are refused. \
         This is where the app listens on this host.";
    PROTOCOL = "protocol", Str, "string", Written("\"http\""), Applied,
        "`\"http\"`, `\"grpc\"` or `\"tcp\"`.";
    TAGS = "tags", StrList, "list of strings", Written("[]"), Applied,
        "Each tag is `[a-z0-9-]`, 1..=63 chars (`-` is allowed at the ends). No duplicates. Each \
         bad item is its own problem.";
    WEIGHT = "weight", Int, "integer", Written("100"), Applied,
        "1..=10000.";
    ALLOW_DIRECT = "allow_direct", StrList, "list of strings", Written("[]"), Applied,
        "Only with `proxy.lockdown = true`: the networks that may still connect to `target`'s \
         port directly, past the mesh (a load balancer during a migration). Each item is an \
         IPv4 or IPv6 network written as its network address (`\"10.20.0.0/16\"`, \
         `\"fd00:20::/32\"`) or one address (`\"10.20.0.7\"`, meaning /32 or /128). No \
         duplicates. Each bad item is its own problem. Instances on one port share their \
         lists.";

    CHECK_HTTP = "check.http", Str, "string", Unset("—"), Applied,
        "A path that starts with `/`, with no whitespace or control characters. The probe sends \
         one HTTP/1.1 `GET` to `target`; a 2xx response passes.";
    CHECK_TCP = "check.tcp", Bool, "boolean", Unset("—"), Applied,
        "Must be `true`; `tcp = false` is a problem. The probe passes if a TCP connection to \
         `target` opens.";
    CHECK_EXEC = "check.exec", StrList, "list of strings", Unset("—"), Applied,
        "Needs at least one item, and the first item (the program) must be non-empty. The argv \
         runs without a shell; exit status 0 passes. `target` is not used.";
    CHECK_INTERVAL = "check.interval", Str, "duration", Written("\"10s\""), Applied,
        "> 0.";
    CHECK_TIMEOUT = "check.timeout", Str, "duration", Derived("`min(2s, interval)`"), Applied,
        "> 0 and ≤ `interval`. Because of this default, `interval = \"1s\"` alone is valid.";
    CHECK_UNHEALTHY_AFTER = "check.unhealthy_after", Int, "integer", Written("2"), Applied,
        "1..=100. The number of consecutive failures before the instance turns `critical`.";
    CHECK_HEALTHY_AFTER = "check.healthy_after", Int, "integer", Written("1"), Applied,
        "1..=100. The number of consecutive successes before the instance turns `passing`.";
}
