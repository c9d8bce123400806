//! The agent's lifecycle as systemd and operators see it: notify messages, reload, drain.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use hostmesh_tests::{Agent, AgentOpts, Etcd, Net, Signal, wait_for};

/// A `NOTIFY_SOCKET` as systemd would offer it: every datagram the agent sends, kept in order.
struct NotifySocket {
    _dir: tempfile::TempDir,
    path: String,
    sock: UnixDatagram,
    seen: Vec<String>,
}

impl NotifySocket {
    fn new() -> NotifySocket {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("notify.sock");
        let sock = UnixDatagram::bind(&path).expect("bind the notify socket");
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("read timeout");
        NotifySocket {
            path: path.to_string_lossy().into_owned(),
            _dir: dir,
            sock,
            seen: Vec::new(),
        }
    }

    /// Reads until a message with the line `state` arrives; returns its index in `seen`.
    #[track_caller]
    fn expect(&mut self, state: &str, after: usize) -> usize {
        let mut buf = [0u8; 4096];
        wait_for(Duration::from_secs(10), &format!("notify {state}"), || {
            if let Ok(n) = self.sock.recv(&mut buf) {
                self.seen
                    .push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
            self.seen
                .iter()
                .enumerate()
                .skip(after)
                .find(|(_, m)| m.lines().any(|l| l == state))
                .map(|(i, _)| i)
        })
    }
}

#[test]
fn systemd_hears_ready_reloading_stopping_and_watchdog() {
    let net = Net::new();
    let etcd = Etcd::start(&net);
    let mut notify = NotifySocket::new();
    let mut a = Agent::start(
        &net.host("a"),
        &etcd,
        AgentOpts::new()
            .env("NOTIFY_SOCKET", &notify.path)
            .env("WATCHDOG_USEC", "300000"),
    );
    let ready = notify.expect("READY=1", 0);
    // READY means what /ready means: sent only once it would answer 200.
    assert!(a.is_ready(), "READY=1 sent before /ready said 200");
    let first_ping = notify.expect("WATCHDOG=1", 0);
    notify.expect("WATCHDOG=1", first_ping + 1);

    a.signal(Signal::Hup);
    let reloading = notify.expect("RELOADING=1", ready + 1);
    assert!(
        notify.seen[reloading]
            .lines()
            .any(|l| l.starts_with("MONOTONIC_USEC=")),
        "RELOADING=1 comes with MONOTONIC_USEC (Type=notify-reload): {:?}",
        notify.seen[reloading]
    );
    notify.expect("READY=1", reloading + 1);

    a.signal(Signal::Term);
    notify.expect("STOPPING=1", reloading + 1);
    let status = a
        .wait_exit(Duration::from_secs(5))
        .expect("exits after SIGTERM");
    assert_eq!(status.code(), Some(0), "{}", a.log_tail(20));
}
