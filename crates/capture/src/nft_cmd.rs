//! Running the `nft` command, shared by capture's table ([`super::nft`]) and lockdown's
//! ([`super::lockdown`]): they differ in what they write, not in how it is applied.
//!
//! A whole batch goes to `nft -f -` on standard input, which nft applies in one transaction, so
//! the kernel never holds a half-written table. Failures are classified once here: the command
//! missing, missing privileges (CAP_NET_ADMIN), or anything else nft said (its first line).

use std::ffi::OsStr;
use std::io::{self, Write};
use std::process::{Output, Stdio};
use std::time::Duration;

use tokio::io::AsyncWriteExt;

/// An `nft` call that takes longer than this is stuck (it normally takes milliseconds).
const NFT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why an `nft` call failed. Each caller turns it into its own error, whose message says what
/// to do in its own terms (`proxy.capture`, `proxy.lockdown`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NftError {
    /// The `nft` program is not installed (or not on `PATH`).
    #[error("nft not found")]
    NotFound,
    /// The kernel refused: the agent lacks CAP_NET_ADMIN.
    #[error("{0}")]
    PermissionDenied(String),
    /// nft ran and failed; its first line of output says why.
    #[error("{0}")]
    Failed(String),
}

impl NftError {
    /// Whether nft said the table (or chain) named in a `list` does not exist.
    pub fn is_no_such_table(&self) -> bool {
        matches!(self, NftError::Failed(e) if e.contains("No such file or directory"))
    }
}

/// Runs `nft ARGS` with `stdin` on its standard input; its standard output on success.
pub(crate) async fn run(
    program: &OsStr,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<String, NftError> {
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(spawn_error)?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .await
            .map_err(|e| NftError::Failed(format!("writing to nft: {e}")))?;
        // Dropping the pipe closes it: nft reads to end of file before it applies anything.
    }
    let output = tokio::time::timeout(NFT_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| NftError::Failed(format!("nft did not finish within {NFT_TIMEOUT:?}")))?
        .map_err(|e| NftError::Failed(e.to_string()))?;
    check(output)
}

/// Applies `batch` with `nft -f -`.
pub(crate) async fn apply(program: &OsStr, batch: &str) -> Result<(), NftError> {
    run(program, &["-f", "-"], Some(batch)).await.map(drop)
}

/// [`apply`] without a runtime, for `Drop`.
pub(crate) fn apply_blocking(program: &OsStr, batch: &str) -> Result<(), NftError> {
    let mut child = std::process::Command::new(program)
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_error)?;
    if let Some(mut pipe) = child.stdin.take() {
        pipe.write_all(batch.as_bytes())
            .map_err(|e| NftError::Failed(format!("writing to nft: {e}")))?;
    }
    let output = child
        .wait_with_output()
        .map_err(|e| NftError::Failed(e.to_string()))?;
    check(output).map(drop)
}

/// The batch that deletes `table` (`"ip hostmesh"`) whether or not it exists: declaring it first
/// makes the delete succeed either way, so "remove the old one, add the new one" can be one
/// transaction, and removing twice is no error.
pub(crate) fn delete_batch(table: &str) -> String {
    format!("table {table}\ndelete table {table}\n")
}

fn spawn_error(e: io::Error) -> NftError {
    if e.kind() == io::ErrorKind::NotFound {
        NftError::NotFound
    } else {
        NftError::Failed(format!("cannot run nft: {e}"))
    }
}

fn check(output: Output) -> Result<String, NftError> {
    if output.status.success() {
        return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    Err(classify(&stderr, output.status))
}

fn classify(stderr: &str, status: std::process::ExitStatus) -> NftError {
    // nft prints the failing batch line with a caret line under it; the first line says why.
    let first = stderr.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let why = if first.is_empty() {
        format!("nft exited with {status}")
    } else {
        first.trim().to_owned()
    };
    if stderr.contains("Operation not permitted") || stderr.contains("Permission denied") {
        NftError::PermissionDenied(why)
    } else {
        NftError::Failed(why)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::process::Command;

    use super::*;

    #[test]
    fn errors_are_classified() {
        let status = Command::new("false").status().unwrap();
        let e = classify(
            "netlink: Error: cache initialization failed: Operation not permitted\n",
            status,
        );
        assert!(matches!(e, NftError::PermissionDenied(_)), "{e}");
        let e = classify("Error: syntax error\nfoo\n^^^\n", status);
        assert_eq!(e, NftError::Failed("Error: syntax error".into()));
        let e = classify("", status);
        assert!(e.to_string().contains("exited"), "{e}");
        let e = classify(
            "Error: No such file or directory\nlist table inet x\n",
            status,
        );
        assert!(e.is_no_such_table());
    }

    #[tokio::test]
    async fn a_missing_program_is_not_found() {
        let e = run(
            OsStr::new("/nonexistent/hostmesh-test/nft"),
            &["list"],
            None,
        )
        .await
        .unwrap_err();
        assert_eq!(e, NftError::NotFound);
    }
}
