//! A tiny HTTP app (python3) inside a host, standing in for a legacy service: fixed body, a
//! `/healthz` the test can flip, optional status and delay, and a record of the requests it got.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use tempfile::TempDir;

use crate::net::Host;
use crate::process::Proc;
use crate::wait::try_wait_for;

const SCRIPT: &str = include_str!("backend.py");

/// A running backend. Killed on drop; its log is shown if the test panicked.
#[derive(Debug)]
pub struct Backend {
    host: Host,
    bind: Ipv4Addr,
    port: u16,
    dir: TempDir,
    proc: Proc,
}

impl Backend {
    /// Serves `body` on `0.0.0.0:port` in `host` (so on its loopback and its bridge address),
    /// healthy.
    #[track_caller]
    pub fn http(host: &Host, port: u16, body: &str) -> Backend {
        Backend::http_on(host, Ipv4Addr::UNSPECIFIED, port, body)
    }

    /// Serves `body` on `bind:port` in `host`, e.g. `127.0.0.1` for an app only reachable through
    /// the local agent. Returns once the socket listens; panics if python exits first.
    #[track_caller]
    pub fn http_on(host: &Host, bind: Ipv4Addr, port: u16, body: &str) -> Backend {
        let dir = crate::tmp::tempdir(&format!("backend-{}-{port}", host.name()));
        let write = |name: &str, data: &[u8]| {
            let p = dir.path().join(name);
            std::fs::write(&p, data).unwrap_or_else(|e| panic!("writing {}: {e}", p.display()));
        };
        write("backend.py", SCRIPT.as_bytes());
        write("body", body.as_bytes());
        write("healthy", b"");
        let mut cmd = host.cmd("python3");
        cmd.arg("-u")
            .arg(dir.path().join("backend.py"))
            .arg(dir.path())
            .arg(bind.to_string())
            .arg(port.to_string())
            .arg(host.name());
        let what = format!("backend {}:{port} on {}", bind, host.name());
        let mut proc = Proc::spawn(cmd, &what, &dir.path().join("backend.log"));
        let ready = dir.path().join("ready");
        let up = try_wait_for(Duration::from_secs(10), || {
            if let Some(st) = proc.try_exit() {
                panic!("{what} exited ({st}):\n{}", proc.log_tail(30));
            }
            ready.exists().then_some(())
        });
        assert!(
            up.is_some(),
            "{what} not listening after 10s:\n{}",
            proc.log_tail(30)
        );
        Backend {
            host: host.clone(),
            bind,
            port,
            dir,
            proc,
        }
    }

    /// The host it runs in.
    /// What `/bytes?n=N` and `/chunked?n=N` send: a fixed pattern of `n` bytes.
    pub fn bytes(n: usize) -> Vec<u8> {
        b"0123456789abcdef"
            .iter()
            .copied()
            .cycle()
            .take(n)
            .collect()
    }

    pub fn host(&self) -> &Host {
        &self.host
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://<addr>:<port><path>`, where addr is the bind address, or the host's bridge address
    /// for a wildcard bind. `path` starts with `/`.
    pub fn url(&self, path: &str) -> String {
        let addr = if self.bind.is_unspecified() {
            self.host.addr()
        } else {
            self.bind
        };
        format!("http://{addr}:{}{path}", self.port)
    }

    /// Makes `/healthz` answer 200 (true) or 500 (false) from the next request on.
    #[track_caller]
    pub fn set_healthy(&self, healthy: bool) {
        let p = self.dir.path().join("healthy");
        let r = if healthy {
            std::fs::write(&p, b"")
        } else {
            std::fs::remove_file(&p).or_else(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    Ok(())
                } else {
                    Err(e)
                }
            })
        };
        r.unwrap_or_else(|e| panic!("flipping {}: {e}", p.display()));
    }

    /// SIGKILLs the app (a crash): connections in flight are reset, new ones refused.
    pub fn kill(&mut self) {
        self.proc.kill();
    }

    /// Hang up on every request (other than `/healthz`) after reading it, without answering.
    pub fn set_hangup(&self, on: bool) {
        let p = self.dir.path().join("hangup");
        if on {
            std::fs::write(&p, b"").unwrap_or_else(|e| panic!("writing {}: {e}", p.display()));
        } else {
            let _ = std::fs::remove_file(&p);
        }
    }

    /// The status of every request other than `/healthz` (default 200).
    #[track_caller]
    pub fn set_status(&self, status: u16) {
        self.write_control("status", &status.to_string());
    }

    /// A delay before answering every request other than `/healthz` (default none).
    #[track_caller]
    pub fn set_delay(&self, delay: Duration) {
        self.write_control("delay_ms", &delay.as_millis().to_string());
    }

    /// Lets a `GET /chunked?hold=1` answer that sent its first chunk send the rest.
    #[track_caller]
    pub fn release(&self) {
        self.write_control("release", "");
    }

    #[track_caller]
    fn write_control(&self, name: &str, value: &str) {
        // Written under a temporary name and renamed, so a request never reads half a value.
        let tmp = self.dir.path().join(format!(".{name}.tmp"));
        let p = self.dir.path().join(name);
        std::fs::write(&tmp, value)
            .and_then(|()| std::fs::rename(&tmp, &p))
            .unwrap_or_else(|e| panic!("writing {}: {e}", p.display()));
    }

    /// The requests received so far (except `/healthz`, `/echo` and `/bytes`), oldest first,
    /// each `{"method", "path", "headers": {lowercase name: value}, "raw": [[name as written,
    /// value], …] in order, "body_len"}`, plus `"json"` (the parsed body) for
    /// `content-type: application/json`.
    pub fn requests(&self) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(self.requests_path()).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The requests (their path and query) whose client closed the connection while
    /// `GET /hold?ms=N` waited, oldest first.
    pub fn gone(&self) -> Vec<String> {
        let text = std::fs::read_to_string(self.dir.path().join("gone.jsonl")).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|v| v["path"].as_str().map(str::to_owned))
            .collect()
    }

    /// How many requests (except `/healthz`) were received so far.
    pub fn request_count(&self) -> usize {
        self.requests().len()
    }

    fn requests_path(&self) -> PathBuf {
        self.dir.path().join("requests.jsonl")
    }

    /// The backend's log (python's access log and errors).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.proc.log_path()).unwrap_or_default()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        crate::logs::dump_on_panic(self.proc.what(), self.proc.log_path());
    }
}
