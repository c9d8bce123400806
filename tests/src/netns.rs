//! Network namespaces by name: creating, entering, and destroying them with every process inside,
//! plus sweeping namespaces left behind by test processes that were killed before their `Drop`.

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use crate::process::{Signal, run, send_signal};

/// Every namespace this harness creates starts with `hmt<pid>-`: unique per test process (tests in
/// one process add a per-`Net` counter), and the pid tells a later run whether its owner is gone.
pub(crate) const PREFIX: &str = "hmt";

const IP_TIMEOUT: Duration = Duration::from_secs(30);

/// Environment variables that would send HTTP or gRPC clients to a proxy. They are removed from
/// every command run in a namespace: test traffic must only ever go to the namespaces' own
/// addresses, and a proxy outside them is unreachable anyway.
const PROXY_VARS: &[&str] = &[
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "grpc_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "GRPC_PROXY",
];

/// `hmt<pid>`: the prefix of every namespace made by this test process.
pub(crate) fn process_prefix() -> String {
    format!("{PREFIX}{}", std::process::id())
}

/// Runs `f` on a thread of its own that has entered network namespace `ns` (setns moves only
/// the calling thread), so the sockets it opens belong to that host. Its panic is re-raised.
pub(crate) fn run_in<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    use std::os::fd::AsFd;

    use rustix::thread::{LinkNameSpaceType, move_into_link_name_space};

    std::thread::scope(|scope| {
        let thread = scope.spawn(|| {
            let path = format!("/run/netns/{ns}");
            let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("opening {path}: {e}"));
            move_into_link_name_space(file.as_fd(), Some(LinkNameSpaceType::Network))
                .unwrap_or_else(|e| panic!("entering network namespace {ns}: {e}"));
            f()
        });
        thread
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Runs `ip ARGS`, returning stdout or the trimmed stderr on failure.
pub(crate) fn try_ip(args: &[&str]) -> Result<String, String> {
    let mut cmd = Command::new("ip");
    cmd.args(args);
    let out = run(cmd, IP_TIMEOUT);
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// Runs `ip ARGS`, panicking with its stderr on failure.
#[track_caller]
pub(crate) fn ip(args: &[&str]) -> String {
    try_ip(args).unwrap_or_else(|e| panic!("`ip {}` failed: {e}", args.join(" ")))
}

/// `ip netns exec NS PROGRAM`, as a `Command` to add arguments to. `ip` enters the namespace,
/// bind-mounts `/etc/netns/NS/*` over `/etc/*` in a private mount namespace, and then execs the
/// program, so the spawned child's pid is the program's own.
pub(crate) fn exec(ns: &str, program: impl AsRef<OsStr>) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns]).arg(program);
    for var in PROXY_VARS {
        cmd.env_remove(var);
    }
    cmd
}

/// The pids of all processes whose network namespace is `ns`.
pub(crate) fn pids(ns: &str) -> Vec<u32> {
    try_ip(&["netns", "pids", ns])
        .map(|out| {
            out.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The directory whose files `ip netns exec` mounts over `/etc` for `ns`.
pub(crate) fn etc_dir(ns: &str) -> PathBuf {
    PathBuf::from("/etc/netns").join(ns)
}

/// Kills every process in `ns`, deletes it and its `/etc/netns` directory. Never panics: this runs
/// from `Drop`, possibly while a test is already panicking. Deleting a namespace also destroys
/// the veth ends inside it, and with them their peers.
pub(crate) fn destroy(ns: &str) {
    // Processes keep a deleted namespace alive (and their sockets open), so kill them first. Loop:
    // a process may fork between listing and killing.
    let gone = crate::wait::try_wait_for(Duration::from_secs(5), || {
        let pids = pids(ns);
        for pid in &pids {
            let _ = send_signal(*pid, Signal::Kill);
        }
        pids.is_empty().then_some(())
    });
    if gone.is_none() {
        eprintln!(
            "processes in netns {ns} survived SIGKILL for 5s: {:?}",
            pids(ns)
        );
    }
    if let Err(e) = try_ip(&["netns", "del", ns])
        && !e.contains("No such file")
    {
        eprintln!("deleting netns {ns}: {e}");
    }
    let dir = etc_dir(ns);
    if dir.exists()
        && let Err(e) = std::fs::remove_dir_all(&dir)
    {
        eprintln!("removing {}: {e}", dir.display());
    }
}

/// Once per test process, destroys namespaces (and `/etc/netns` dirs, and temp dirs) named
/// `hmt<pid>-…` whose test process no longer exists, i.e. leftovers of a run that was SIGKILLed before `Drop` ran.
/// Namespaces of live test processes (parallel `cargo test` binaries) are left alone.
pub(crate) fn sweep_stale() {
    static SWEPT: OnceLock<()> = OnceLock::new();
    SWEPT.get_or_init(|| {
        let mut names: Vec<String> = try_ip(&["netns", "list"])
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .collect();
        if let Ok(dir) = std::fs::read_dir("/etc/netns") {
            names.extend(
                dir.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned()),
            );
        }
        names.sort();
        names.dedup();
        for name in names.iter().filter(|n| owner_is_dead(n)) {
            eprintln!("removing stale test namespace {name}");
            destroy(name);
        }
        crate::tmp::sweep_stale();
    });
}

/// Whether `name` is `hmt<pid>-…` for a test process that no longer runs.
pub(crate) fn owner_is_dead(name: &str) -> bool {
    let Some(rest) = name.strip_prefix(PREFIX) else {
        return false;
    };
    let Some((pid, _)) = rest.split_once('-') else {
        return false;
    };
    match pid.parse::<u32>() {
        Ok(pid) => pid != std::process::id() && !is_alive(pid),
        Err(_) => false,
    }
}

/// Whether `pid` is a live process. A SIGKILLed test binary can linger as a zombie until its
/// reaper gets to it, so a zombie counts as dead.
fn is_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name, which may itself contain ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}
