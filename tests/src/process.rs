//! Child processes owned by a test: spawned with their output in a log file, signalled by pid,
//! always killed and reaped on drop; and one-shot commands bounded by a timeout.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::wait::POLL_INTERVAL;

/// The signals tests send to processes under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Graceful shutdown: deregister, drain, exit 0.
    Term,
    /// Like `Term` (Ctrl-C).
    Int,
    /// Reload config and service definitions.
    Hup,
    /// Freeze the process (a hung agent: sockets open, nothing answers).
    Stop,
    /// Unfreeze after `Stop`.
    Cont,
    /// Crash: no cleanup at all.
    Kill,
}

impl Signal {
    fn raw(self) -> rustix::process::Signal {
        use rustix::process::Signal as S;
        match self {
            Signal::Term => S::TERM,
            Signal::Int => S::INT,
            Signal::Hup => S::HUP,
            Signal::Stop => S::STOP,
            Signal::Cont => S::CONT,
            Signal::Kill => S::KILL,
        }
    }
}

/// Sends `sig` to `pid`. Errors (typically: already gone) are returned, not panicked on, because
/// teardown paths call this for processes that may have died on their own.
pub(crate) fn send_signal(pid: u32, sig: Signal) -> std::io::Result<()> {
    let raw = i32::try_from(pid).map_err(|_| std::io::Error::other("pid out of range"))?;
    let pid = rustix::process::Pid::from_raw(raw)
        .ok_or_else(|| std::io::Error::other("pid 0 is not a process"))?;
    rustix::process::kill_process(pid, sig.raw()).map_err(std::io::Error::from)
}

/// A long-running child process owned by a test. Its stdout and stderr are appended to `log`, and
/// it is killed (SIGKILL) and reaped when the `Proc` is dropped, whatever happened to the test.
#[derive(Debug)]
pub struct Proc {
    what: String,
    log: PathBuf,
    child: Child,
    exited: Option<ExitStatus>,
}

impl Proc {
    /// Spawns `cmd` with stdin from /dev/null and stdout/stderr appended to `log`. `what` names the
    /// process in panics and log banners. Panics if it cannot be spawned at all.
    #[track_caller]
    pub fn spawn(mut cmd: Command, what: &str, log: &Path) -> Proc {
        let out = open_log(log);
        let err = out
            .try_clone()
            .unwrap_or_else(|e| panic!("cloning log handle {}: {e}", log.display()));
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {what} ({cmd:?}): {e}"));
        Proc {
            what: what.to_string(),
            log: log.to_path_buf(),
            child,
            exited: None,
        }
    }

    /// The child's pid. With `ip netns exec NS prog` this is `prog`'s pid, because `ip` execs the
    /// program in place after entering the namespace (checked by a harness smoke test).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What this process is, as given to [`Proc::spawn`].
    pub fn what(&self) -> &str {
        &self.what
    }

    /// The log file receiving stdout and stderr.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The last `n` lines of the log.
    pub fn log_tail(&self, n: usize) -> String {
        crate::logs::tail(&self.log, n)
    }

    /// Sends a signal to the process (a no-op once it has been reaped, so that a pid reused by
    /// the OS is never hit). Failures are logged, not panicked on.
    pub fn signal(&self, sig: Signal) {
        // Until reaped, the pid can't be reused (at worst it is a zombie, and signalling a zombie
        // is a harmless no-op), so only a recorded exit needs checking.
        if self.exited.is_some() {
            return;
        }
        if let Err(e) = send_signal(self.pid(), sig) {
            eprintln!("signal {sig:?} to {} (pid {}): {e}", self.what, self.pid());
        }
    }

    /// The exit status if the process has exited (reaping it), else `None`.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            match self.child.try_wait() {
                Ok(Some(st)) => self.exited = Some(st),
                Ok(None) => {}
                Err(e) => eprintln!("waiting for {}: {e}", self.what),
            }
        }
        self.exited
    }

    /// True while the process has not exited (a stopped process is still running).
    pub fn is_running(&mut self) -> bool {
        self.try_exit().is_none()
    }

    /// Waits up to `timeout` for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        crate::wait::try_wait_for(timeout, || self.try_exit())
    }

    /// SIGKILL and reap. Safe to call repeatedly and on a process that already exited.
    pub fn kill(&mut self) -> ExitStatus {
        if let Some(st) = self.try_exit() {
            return st;
        }
        // A stopped process dies from SIGKILL too, so no SIGCONT is needed first.
        let _ = self.child.kill();
        match self.child.wait() {
            Ok(st) => {
                self.exited = Some(st);
                st
            }
            Err(e) => panic!("reaping {} after SIGKILL: {e}", self.what),
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.try_exit().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[track_caller]
pub(crate) fn open_log(path: &Path) -> File {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("opening log {}: {e}", path.display()))
}

/// Runs `cmd` to completion, capturing stdout and stderr, killing it if it runs longer than
/// `timeout` (then panicking: a helper command that hangs is a harness bug or a dead host, and a
/// test must never hang forever on it).
#[track_caller]
pub fn run(mut cmd: Command, timeout: Duration) -> Output {
    let shown = format!("{cmd:?}");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {shown}: {e}"));
    // Pipes are drained on threads so a chatty command can't block on a full pipe while we wait.
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{shown} did not finish within {timeout:?}");
            }
            Ok(None) => thread::sleep(Duration::from_millis(5).min(POLL_INTERVAL)),
            Err(e) => panic!("waiting for {shown}: {e}"),
        }
    };
    Output {
        status,
        stdout: collect(stdout, &shown),
        stderr: collect(stderr, &shown),
    }
}

fn drain(pipe: Option<impl Read + Send + 'static>) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    if let Some(mut p) = pipe {
        thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = p.read_to_end(&mut buf);
            let _ = tx.send(buf);
        });
    }
    rx
}

fn collect(rx: mpsc::Receiver<Vec<u8>>, shown: &str) -> Vec<u8> {
    // A grandchild that inherited the pipe could keep it open after the command exited; don't
    // wait for it forever.
    rx.recv_timeout(Duration::from_secs(5)).unwrap_or_else(|_| {
        eprintln!("output of {shown} still open 5s after it exited; ignoring the rest");
        Vec::new()
    })
}
