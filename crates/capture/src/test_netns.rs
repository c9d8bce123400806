//! Test support: a throwaway network namespace to install nftables tables in, so that unit
//! tests never touch the machine's own ruleset.
#![allow(clippy::unwrap_used)]

use std::fs::File;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use nix::sched::{CloneFlags, setns};

/// A throwaway network namespace, deleted on drop (also when the test panics).
pub(crate) struct Netns {
    name: String,
}

impl Netns {
    pub(crate) fn new() -> Self {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test needs root: it creates a network namespace to install nftables rules in"
        );
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "hm-capture-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        sh(&["ip", "netns", "add", &name]);
        let ns = Netns { name };
        sh(&["ip", "-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Runs `f` on a thread that lives in this namespace, with its own single-threaded
    /// runtime: every socket, task and child process it makes stays inside.
    pub(crate) fn run<F: Future<Output = ()>>(&self, f: impl FnOnce() -> F + Send) {
        let path = format!("/run/netns/{}", self.name);
        std::thread::scope(|s| {
            s.spawn(|| {
                let fd = File::open(&path).unwrap();
                setns(&fd, CloneFlags::CLONE_NEWNET).unwrap();
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
                    .block_on(f());
            });
        });
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

pub(crate) fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
