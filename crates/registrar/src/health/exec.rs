//! `exec = ["/usr/lib/app/check", "--quick"]`: run a program; exit status 0 passes.
//!
//! - No shell: argv is executed as given, so nothing in a service definition is ever
//!   re-interpreted (operators who want a shell write `["/bin/sh", "-c", "..."]` themselves).
//! - stdin is /dev/null so a check that reads input fails instead of hanging; stdout and stderr
//!   are captured (bounded, the rest is drained and discarded so the child never blocks on a full
//!   pipe) because the first few hundred bytes are usually the most useful failure message.
//! - This module enforces the timeout itself rather than leaving it to the caller: on expiry the
//!   child is killed *and waited for*, so no zombie is left behind. `kill_on_drop` is the
//!   backstop for when the whole probe is dropped (the runner being cancelled mid-check); tokio
//!   then kills the child and reaps it in the background.
//! - Only the direct child is killed: something it forked into the background survives.

use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};
use tokio::time::Instant;

use super::ProbeError;
use super::error::truncate;

/// Bytes kept per stream; more than the message shows, so trimming leading blank lines still
/// leaves something.
const CAPTURE: usize = 4 * 1024;
/// Bytes of output quoted in a failure message.
const MESSAGE_OUTPUT: usize = 200;
/// After the child exits, how long its pipes may stay open (held by a backgrounded grandchild)
/// before we stop waiting for more output.
const PIPE_GRACE: Duration = Duration::from_millis(100);

pub(super) async fn probe(argv: &[String], timeout: Duration) -> Result<(), ProbeError> {
    let deadline = Instant::now() + timeout;
    let Some((program, args)) = argv.split_first() else {
        return Err(ProbeError::EmptyCommand);
    };
    let failed = |error| ProbeError::Exec {
        program: program.clone(),
        error,
    };
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(failed)?;

    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    let waited =
        tokio::time::timeout_at(deadline, wait(&mut child, &mut stdout, &mut stderr)).await;
    let status = match waited {
        Ok(Ok(status)) => status,
        Ok(Err(e)) => {
            let _ = child.kill().await;
            return Err(failed(e));
        }
        Err(_elapsed) => {
            // kill() sends SIGKILL and then waits, which reaps the child.
            let _ = child.kill().await;
            return Err(ProbeError::TimedOut(timeout));
        }
    };
    if status.success() {
        return Ok(());
    }
    Err(ProbeError::Exited {
        status,
        output: excerpt(&stdout, &stderr),
    })
}

/// Waits for the child to exit while collecting its output.
async fn wait(
    child: &mut Child,
    stdout: &mut Vec<u8>,
    stderr: &mut Vec<u8>,
) -> std::io::Result<ExitStatus> {
    let out_pipe = child.stdout.take();
    let err_pipe = child.stderr.take();
    let mut readers = std::pin::pin!(async {
        tokio::join!(drain(out_pipe, stdout), drain(err_pipe, stderr));
    });
    let mut drained = false;
    let status = tokio::select! {
        status = child.wait() => status?,
        () = &mut readers => {
            drained = true;
            child.wait().await?
        }
    };
    if !drained {
        // What the child wrote before exiting is already in the pipes; only a grandchild still
        // holding them open could make us wait longer, and its output is not the check's.
        let _ = tokio::time::timeout(PIPE_GRACE, &mut readers).await;
    }
    Ok(status)
}

/// Reads `pipe` to EOF, keeping the first [`CAPTURE`] bytes.
async fn drain(pipe: Option<impl AsyncRead + Unpin>, keep: &mut Vec<u8>) {
    let Some(mut pipe) = pipe else { return };
    let mut chunk = [0u8; 4096];
    loop {
        match pipe.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let room = CAPTURE.saturating_sub(keep.len());
                keep.extend_from_slice(&chunk[..n.min(room)]);
            }
        }
    }
}

/// stdout then stderr on one line (messages end up in single-line logs and `hostmesh status`),
/// cut to about [`MESSAGE_OUTPUT`] bytes.
fn excerpt(stdout: &[u8], stderr: &[u8]) -> String {
    let text = [stdout, stderr]
        .iter()
        .map(|b| String::from_utf8_lossy(b))
        .collect::<Vec<_>>()
        .join(" ");
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    truncate(&one_line, MESSAGE_OUTPUT).into_owned()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::net::SocketAddr;
    use std::path::Path;
    use std::time::{Duration, Instant};

    use hostmesh_config::spec::CheckKind;

    use super::super::probe;
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(5);

    /// Exec checks ignore the target.
    fn target() -> SocketAddr {
        "127.0.0.1:9".parse().unwrap()
    }

    fn exec(argv: &[&str]) -> CheckKind {
        CheckKind::Exec {
            argv: argv.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[tokio::test]
    async fn true_passes() {
        probe(&exec(&["/bin/true"]), target(), TIMEOUT)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn false_fails() {
        let err = probe(&exec(&["/bin/false"]), target(), TIMEOUT)
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "exit status 1");
    }

    #[tokio::test]
    async fn failure_quotes_output() {
        let script = "echo 'disk almost'; echo '  full ' >&2; exit 2";
        let err = probe(&exec(&["/bin/sh", "-c", script]), target(), TIMEOUT)
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "exit status 2: disk almost full");
    }

    #[tokio::test]
    async fn long_output_is_truncated_and_drained() {
        // Far more than a pipe buffer: the child must not block writing it.
        let script = "head -c 1000000 /dev/zero | tr '\\0' x; exit 3";
        let err = probe(&exec(&["/bin/sh", "-c", script]), target(), TIMEOUT)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("exit status 3: xxxx"), "{err}");
        assert!(err.len() < 250, "{} bytes", err.len());
    }

    #[tokio::test]
    async fn missing_program_fails() {
        let err = probe(&exec(&["/nonexistent/check"]), target(), TIMEOUT)
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "exec /nonexistent/check: no such file or directory"
        );
    }

    #[tokio::test]
    async fn empty_argv_fails() {
        assert!(probe(&exec(&[]), target(), TIMEOUT).await.is_err());
    }

    #[tokio::test]
    async fn timeout_kills_and_reaps() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        // `exec` keeps the pid: the sleep is the very process we spawned.
        let script = format!("echo $$ > {}; exec sleep 10", pid_file.display());
        let start = Instant::now();
        let err = probe(
            &exec(&["/bin/sh", "-c", &script]),
            target(),
            Duration::from_millis(200),
        )
        .await
        .unwrap_err();
        assert_eq!(err.to_string(), "timed out after 200ms");
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );

        let pid = std::fs::read_to_string(&pid_file).unwrap();
        let pid = pid.trim();
        assert!(!pid.is_empty());
        // Gone entirely: a zombie (killed but not reaped) would still have a /proc entry.
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "process {pid} still exists"
        );
    }

    #[tokio::test]
    async fn background_grandchild_does_not_hold_the_probe() {
        // The check exits at once but leaves something holding its stdout open.
        let start = Instant::now();
        let script = "sleep 3 & echo started; exit 0";
        probe(&exec(&["/bin/sh", "-c", script]), target(), TIMEOUT)
            .await
            .unwrap();
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
    }

    #[test]
    fn excerpt_is_one_line_and_bounded() {
        assert_eq!(excerpt(b"a\nb\n", b""), "a b");
        assert_eq!(excerpt(b"", b"  err\n"), "err");
        assert_eq!(excerpt(b"", b""), "");
        let long = excerpt(&[b'y'; 1000], b"");
        assert!(
            long.len() <= MESSAGE_OUTPUT + '…'.len_utf8(),
            "{}",
            long.len()
        );
    }
}
