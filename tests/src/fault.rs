//! A user-space TCP fault proxy inside a host (this kernel has no `tc netem`): relays a listen
//! address of the host to a target and, while a test runs, adds latency per direction, resets,
//! refuses or stalls new connections. A python3 asyncio script (`fault.py`, stdlib only) run in
//! the host's namespace, controlled over a Unix socket in its temp dir; every control call returns
//! only once the proxy has applied the change.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use tempfile::TempDir;

use crate::net::Host;
use crate::process::Proc;
use crate::wait::try_wait_for;

const SCRIPT: &str = include_str!("fault.py");

/// How long a control command may take before the test fails (the proxy answers in
/// microseconds; only a frozen or dead proxy gets near this).
const CONTROL_TIMEOUT: Duration = Duration::from_secs(10);

/// How a [`FaultProxy`] treats connections accepted from now on. Connections already relayed are
/// not affected (see [`FaultProxy::reset_established`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Relay to the target (the default). If the target can't be reached the client gets an RST.
    Pass,
    /// Accept, wait for the client's first bytes (at most 200 ms), then close with an RST
    /// (`SO_LINGER` 0) without forwarding anything: the target never sees the request, and the
    /// client sees "Connection reset by peer" (curl exit 56, or 55 if it was still sending).
    Reset,
    /// Accept and RST at once, before the client sent anything. Whether the client sees a failed
    /// connect (curl exit 7) or a reset (55/56) depends on timing; use [`Mode::Reset`] to get a
    /// reset for sure.
    ResetOnAccept,
    /// Stop listening: connects are refused (curl exit 7). Any other mode listens again.
    Refuse,
    /// Accept and read, but never connect upstream and never answer: the client times out.
    Stall,
}

impl Mode {
    fn word(self) -> &'static str {
        match self {
            Mode::Pass => "pass",
            Mode::Reset => "reset",
            Mode::ResetOnAccept => "reset_on_accept",
            Mode::Refuse => "refuse",
            Mode::Stall => "stall",
        }
    }
}

/// A running fault proxy. Killed on drop; its log is shown if the test panicked.
#[derive(Debug)]
pub struct FaultProxy {
    host: Host,
    listen: SocketAddr,
    target: SocketAddr,
    control: PathBuf,
    // Declared before `dir` so the process dies before its directory is removed.
    proc: Proc,
    _dir: TempDir,
}

impl FaultProxy {
    /// Starts relaying `listen` (an address of `host`: its bridge address, `0.0.0.0` or
    /// `127.0.0.1`) to `target` (reachable from `host`), in [`Mode::Pass`] with no delay. Returns
    /// once it listens and answers its control socket; panics if it can't bind or exits.
    #[track_caller]
    pub fn start(host: &Host, listen: SocketAddr, target: SocketAddr) -> FaultProxy {
        let dir = crate::tmp::tempdir(&format!("fault-{}-{}", host.name(), listen.port()));
        let script = dir.path().join("fault.py");
        std::fs::write(&script, SCRIPT)
            .unwrap_or_else(|e| panic!("writing {}: {e}", script.display()));
        let control = dir.path().join("ctl.sock");
        let mut cmd = host.cmd("python3");
        cmd.arg("-u")
            .arg(&script)
            .arg(&control)
            .arg(listen.ip().to_string())
            .arg(listen.port().to_string())
            .arg(target.ip().to_string())
            .arg(target.port().to_string());
        let what = format!("fault proxy {listen} -> {target} on {}", host.name());
        let mut proc = Proc::spawn(cmd, &what, &dir.path().join("fault.log"));
        let up = try_wait_for(Duration::from_secs(10), || {
            if let Some(st) = proc.try_exit() {
                panic!("{what} exited ({st}):\n{}", proc.log_tail(30));
            }
            // The control socket is served only after the relay listens.
            control_call(&control, "ping").ok()
        });
        assert!(
            up.is_some_and(|r| r == "ok"),
            "{what} did not answer within 10s:\n{}",
            proc.log_tail(30)
        );
        FaultProxy {
            host: host.clone(),
            listen,
            target,
            control,
            proc,
            _dir: dir,
        }
    }

    /// The host it runs in.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// The address it listens on (as given to [`FaultProxy::start`]).
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen
    }

    /// The address it relays to.
    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// `http://<listen addr><path>`; `path` starts with `/`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.listen)
    }

    /// Delays the response path (target → client) by `delay`, and nothing on the request path:
    /// every request/response exchange takes `delay` longer. Applies to every chunk read from now
    /// on, on new and established connections alike, keeping byte order. `Duration::ZERO` removes
    /// it.
    #[track_caller]
    pub fn set_delay(&self, delay: Duration) {
        self.set_delays(Duration::ZERO, delay);
    }

    /// Delays each direction separately: bytes from the client to the target by `to_target`,
    /// bytes from the target to the client by `to_client` (a round trip costs the sum; a
    /// connection's EOF is delayed like its data).
    #[track_caller]
    pub fn set_delays(&self, to_target: Duration, to_client: Duration) {
        self.command_ok(&format!(
            "delay {} {}",
            to_target.as_micros(),
            to_client.as_micros()
        ));
    }

    /// How connections accepted from now on are treated. Returns once the proxy applied it (for
    /// [`Mode::Refuse`]: once the listening socket is closed; leaving it: once it listens again).
    #[track_caller]
    pub fn set_mode(&self, mode: Mode) {
        self.command_ok(&format!("mode {}", mode.word()));
    }

    /// Connections accepted so far, in every mode (a refused connect is never accepted).
    #[track_caller]
    pub fn connections(&self) -> usize {
        self.stats().0
    }

    /// Connections open now (relayed or stalled).
    #[track_caller]
    pub fn open_connections(&self) -> usize {
        self.stats().1
    }

    /// Resets (RST, both sides) every connection open now, e.g. to break a client's pooled
    /// keep-alive connections; returns how many there were.
    #[track_caller]
    pub fn reset_established(&self) -> usize {
        let reply = self.command("reset_established");
        reply
            .strip_prefix("ok ")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{}: unexpected reply {reply:?}", self.proc.what()))
    }

    /// The proxy's log (its control commands and relay errors).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.proc.log_path()).unwrap_or_default()
    }

    #[track_caller]
    fn stats(&self) -> (usize, usize) {
        let reply = self.command("stats");
        let words: Vec<&str> = reply.split_whitespace().collect();
        match words[..] {
            ["accepted", a, "open", o] => match (a.parse(), o.parse()) {
                (Ok(a), Ok(o)) => (a, o),
                _ => panic!("{}: unexpected stats {reply:?}", self.proc.what()),
            },
            _ => panic!("{}: unexpected stats {reply:?}", self.proc.what()),
        }
    }

    #[track_caller]
    fn command_ok(&self, line: &str) {
        let reply = self.command(line);
        assert!(
            reply == "ok",
            "{}: `{line}` failed: {reply}\n{}",
            self.proc.what(),
            self.proc.log_tail(20)
        );
    }

    #[track_caller]
    fn command(&self, line: &str) -> String {
        control_call(&self.control, line).unwrap_or_else(|e| {
            panic!(
                "{}: control `{line}`: {e}\n{}",
                self.proc.what(),
                self.proc.log_tail(20)
            )
        })
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        crate::logs::dump_on_panic(self.proc.what(), self.proc.log_path());
    }
}

/// Sends one command line over a fresh connection to the control socket and returns the reply
/// line.
fn control_call(path: &std::path::Path, line: &str) -> std::io::Result<String> {
    let mut stream = UnixStream::connect(path)?;
    stream.set_read_timeout(Some(CONTROL_TIMEOUT))?;
    stream.set_write_timeout(Some(CONTROL_TIMEOUT))?;
    stream.write_all(format!("{line}\n").as_bytes())?;
    let mut reply = String::new();
    BufReader::new(stream).read_line(&mut reply)?;
    if reply.is_empty() {
        return Err(std::io::Error::other("the proxy closed without replying"));
    }
    Ok(reply.trim_end().to_string())
}
