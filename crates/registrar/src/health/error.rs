//! Why a probe failed ([`ProbeError`]), and how its messages are written: short lowercase
//! phrases on one line ("connect 127.0.0.1:8080: connection refused", not "Connection refused
//! (os error 111)"), since they end up in logs and `hostmesh status`.

use std::borrow::Cow;
use std::io;
use std::net::SocketAddr;
use std::process::ExitStatus;
use std::time::Duration;

/// Why one probe attempt failed. The caller counts it towards `unhealthy_after` and shows its
/// message as the instance's last error; the next probe is the retry. Inner errors are part of
/// the message, so they are not also a `source`.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// An `http` check path that is no request target (config validation refuses it first).
    #[error("invalid check path {path:?}: must start with '/'")]
    RelativePath { path: String },
    #[error("invalid check path {path:?}: {error}")]
    BadPath {
        path: String,
        error: hyper::http::Error,
    },
    /// Nothing accepts connections at the target.
    #[error("connect {target}: {}", io_msg(.error))]
    Connect {
        target: SocketAddr,
        error: io::Error,
    },
    #[error("HTTP handshake: {}", describe(.error))]
    Handshake { error: hyper::Error },
    #[error("HTTP request: {}", describe(.error))]
    Request { error: hyper::Error },
    /// A 3xx, not followed: landing on some other page says nothing about the app. `location`
    /// is cut to a length fit for a log line.
    #[error("HTTP {status} redirect to {location} (not followed)")]
    Redirect { status: u16, location: String },
    #[error("HTTP {status} redirect without Location")]
    RedirectWithoutLocation { status: u16 },
    /// Any other status that is not 2xx.
    #[error("HTTP {status}")]
    Status { status: u16 },
    /// A 2xx whose body broke off: not a healthy answer.
    #[error("HTTP {status}: reading body: {}", describe(.error))]
    Body { status: u16, error: hyper::Error },
    /// `exec = []` (config validation refuses it first).
    #[error("exec: empty command")]
    EmptyCommand,
    /// The program could not be started, or waited for.
    #[error("exec {program}: {}", io_msg(.error))]
    Exec { program: String, error: io::Error },
    /// The program failed; `output` is the start of what it wrote, on one line (may be empty).
    #[error("{}", exited(.status, .output))]
    Exited { status: ExitStatus, output: String },
    /// The attempt took the whole check timeout (an `exec` child is killed and reaped).
    // Duration's Debug is the readable one: "1s", "200ms", "1.5s".
    #[error("timed out after {0:?}")]
    TimedOut(Duration),
}

/// "exit status 2: disk almost full"; killed by a signal, std's wording names it
/// ("signal: 9 (SIGKILL)").
fn exited(status: &ExitStatus, output: &str) -> String {
    let status = match status.code() {
        Some(code) => format!("exit status {code}"),
        None => status.to_string(),
    };
    if output.is_empty() {
        status
    } else {
        format!("{status}: {output}")
    }
}

/// An I/O error as a short lowercase phrase: "connection refused", not
/// "Connection refused (os error 111)".
fn io_msg(e: &io::Error) -> String {
    tidy(&e.to_string())
}

/// An error and its sources, joined with ": ", tidied like [`io_msg`]. hyper's errors in
/// particular only say what failed in their own message and keep the why in the source.
fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = tidy(&e.to_string());
    let mut source = e.source();
    while let Some(cause) = source {
        let msg = tidy(&cause.to_string());
        // Some errors already include their source in their own message.
        if !msg.is_empty() && !out.ends_with(&msg) {
            out.push_str(": ");
            out.push_str(&msg);
        }
        source = cause.source();
    }
    out
}

fn tidy(msg: &str) -> String {
    let msg = match msg.rfind(" (os error ") {
        Some(i) if msg.ends_with(')') => &msg[..i],
        _ => msg,
    };
    let mut chars = msg.chars();
    match chars.next() {
        // Only lowercase a capitalised word ("Connection"), not an acronym ("TLS").
        Some(first) if first.is_uppercase() && !chars.next().is_some_and(char::is_uppercase) => {
            first
                .to_lowercase()
                .chain(msg[first.len_utf8()..].chars())
                .collect()
        }
        _ => msg.to_string(),
    }
}

/// Cuts `s` to at most `max` bytes on a character boundary, marking the cut with "…".
pub(super) fn truncate(s: &str, max: usize) -> Cow<'_, str> {
    if s.len() <= max {
        return Cow::Borrowed(s);
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}…", &s[..end]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tidy_messages() {
        assert_eq!(
            tidy("Connection refused (os error 111)"),
            "connection refused"
        );
        assert_eq!(tidy("TLS handshake failed"), "TLS handshake failed");
        assert_eq!(tidy("already fine"), "already fine");
        assert_eq!(tidy(""), "");
    }

    #[test]
    fn truncate_on_char_boundary() {
        assert_eq!(truncate("short", 10), "short");
        assert_eq!(truncate("abcdef", 3), "abc…");
        // 'é' is two bytes; cutting at 2 would split it.
        assert_eq!(truncate("aé", 2), "a…");
    }

    #[test]
    fn messages() {
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        let target: SocketAddr = "127.0.0.1:8080".parse().expect("address");
        for (error, want) in [
            (
                ProbeError::RelativePath {
                    path: "x".to_owned(),
                },
                "invalid check path \"x\": must start with '/'",
            ),
            (
                ProbeError::Connect {
                    target,
                    error: io::Error::from_raw_os_error(111),
                },
                "connect 127.0.0.1:8080: connection refused",
            ),
            (
                ProbeError::Exec {
                    program: "/bin/x".to_owned(),
                    error: refused,
                },
                "exec /bin/x: connection refused",
            ),
            (
                ProbeError::Redirect {
                    status: 302,
                    location: "/login".to_owned(),
                },
                "HTTP 302 redirect to /login (not followed)",
            ),
            (
                ProbeError::RedirectWithoutLocation { status: 307 },
                "HTTP 307 redirect without Location",
            ),
            (ProbeError::Status { status: 503 }, "HTTP 503"),
            (ProbeError::EmptyCommand, "exec: empty command"),
            (
                ProbeError::TimedOut(Duration::from_millis(1500)),
                "timed out after 1.5s",
            ),
        ] {
            assert_eq!(error.to_string(), want);
        }
    }
}
