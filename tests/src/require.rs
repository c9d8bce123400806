//! Preconditions: end-to-end tests need root, network namespaces and a few Debian tools. When they
//! are missing the tests fail loudly; they never skip, because a skipped suite looks green.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// Tools the harness runs, with the Debian package providing each.
pub const TOOLS: &[(&str, &str)] = &[
    ("etcd", "etcd-server"),
    ("etcdctl", "etcd-client"),
    ("ip", "iproute2"),
    ("nft", "nftables"),
    ("curl", "curl"),
    ("dig", "bind9-dnsutils"),
    ("python3", "python3"),
    ("dnsmasq", "dnsmasq-base"),
    ("nginx", "nginx-light"),
    ("redis-server", "redis-server"),
    ("redis-cli", "redis-tools"),
    ("wrk", "wrk"),
    ("openssl", "openssl"),
];

const NEED_ROOT: &str =
    "end-to-end tests need root and network namespaces (run as root, e.g. in CI); they never skip";

/// Panics unless every tool in [`TOOLS`] is on PATH, naming the missing tool and its package.
#[track_caller]
pub fn require_tools() {
    if let Some(msg) = missing_tool() {
        panic!("{msg}");
    }
}

/// Panics unless `tool` (from the Debian package `package`) is on PATH: for tools only some
/// tests need, so the others don't require them.
#[track_caller]
pub fn require_tool(tool: &str, package: &str) {
    if which(tool).is_none() {
        panic!(
            "this test needs `{tool}` on PATH: install the Debian package `{package}` \
             (apt-get install {package}); it never skips"
        );
    }
}

fn missing_tool() -> Option<String> {
    TOOLS
        .iter()
        .find(|(tool, _)| which(tool).is_none())
        .map(|(tool, package)| {
            format!(
                "end-to-end tests need `{tool}` on PATH: install the Debian package `{package}` \
             (apt-get install {package}); they never skip"
            )
        })
}

/// Checks once per process that the tools exist, that we are root, and that `ip netns add` works
/// (by creating and deleting a probe namespace); panics with a clear message otherwise.
///
/// Every harness entry point (`Net::new`) calls this, so tests don't have to.
#[track_caller]
pub fn require_root() {
    static CHECKED: OnceLock<Result<(), String>> = OnceLock::new();
    let result = CHECKED.get_or_init(|| {
        // Tools first: without `ip` the namespace probe below would blame root for it.
        if let Some(msg) = missing_tool() {
            return Err(msg);
        }
        if !rustix::process::geteuid().is_root() {
            return Err(format!("{NEED_ROOT} (euid is not 0)"));
        }
        probe_netns().map_err(|e| format!("{NEED_ROOT} (`ip netns add` failed: {e})"))
    });
    if let Err(msg) = result {
        panic!("{msg}");
    }
}

fn probe_netns() -> Result<(), String> {
    let name = format!("{}-probe", crate::netns::process_prefix());
    // A probe left by a crashed earlier run of this very pid is impossible, but one with the same
    // name would make `add` fail; delete first, ignoring "not found".
    let _ = Command::new("ip").args(["netns", "del", &name]).output();
    let out = Command::new("ip")
        .args(["netns", "add", &name])
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    let _ = Command::new("ip").args(["netns", "del", &name]).output();
    Ok(())
}

/// Looks `tool` up on PATH like a shell would.
pub fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(tool))
        .find(|p| is_executable(p))
}

fn is_executable(p: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
