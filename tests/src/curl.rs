//! HTTP requests from inside a host, with the real curl, as a legacy app on that host would make
//! them (same resolver, same loopback, same routes).

use std::fmt;
use std::time::Duration;

use crate::netns;
use crate::process::run;

/// Why curl produced no HTTP status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurlError {
    /// curl's exit code (`None` if killed by a signal): 6 no such host, 7 refused, 28 timeout,
    /// 52 empty reply, 56 connection reset.
    pub exit_code: Option<i32>,
    /// curl's own message.
    pub stderr: String,
}

impl CurlError {
    /// Connection refused (exit 7).
    pub fn is_refused(&self) -> bool {
        self.exit_code == Some(7)
    }

    /// Connect or transfer timeout (exit 28).
    pub fn is_timeout(&self) -> bool {
        self.exit_code == Some(28)
    }
}

impl fmt::Display for CurlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "curl exit {:?}: {}", self.exit_code, self.stderr)
    }
}

impl std::error::Error for CurlError {}

/// Default connect timeout: hosts share one bridge, so a healthy connect takes microseconds and
/// anything slower is a cut link or a dead peer.
pub const CONNECT_TIMEOUT: &str = "2";
/// Default limit for a whole request.
pub const MAX_TIME: &str = "5";

/// Runs `curl ARGS` inside `ns`. `args` usually is just a URL but may add options (`-H`, `-X`,
/// `--max-time`: the last occurrence wins over the defaults here); it must not use `-w`/`-o`,
/// which the status parsing relies on. Returns the status and the body (lossily decoded).
pub fn curl_in(ns: &str, args: &[&str]) -> Result<(u16, String), CurlError> {
    let mut cmd = netns::exec(ns, "curl");
    cmd.args([
        "--silent",
        "--show-error",
        "--noproxy",
        "*",
        "--connect-timeout",
        CONNECT_TIMEOUT,
        "--max-time",
        MAX_TIME,
        // The status goes last on stdout, after the body, always exactly three digits.
        "--write-out",
        "%{http_code}",
    ]);
    cmd.args(args);
    // Generous safety net above any --max-time a test might pass; curl stops itself long before.
    let out = run(cmd, Duration::from_secs(300));
    let split = out.stdout.len().saturating_sub(3);
    let code = std::str::from_utf8(&out.stdout[split..])
        .ok()
        .and_then(|c| c.parse::<u16>().ok())
        .unwrap_or(0);
    if !out.status.success() || code == 0 {
        return Err(CurlError {
            exit_code: out.status.code(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok((
        code,
        String::from_utf8_lossy(&out.stdout[..split]).into_owned(),
    ))
}
