//! Duration strings (`"250ms"`, `"10s"`, `"1m 30s"`): read by `hostmesh_wire::duration`,
//! written by humantime.

use std::time::Duration;

/// The longest duration any setting takes. Every duration in the config is a timeout, an
/// interval, a TTL or a drain, which the agent adds to `Instant::now()`: a value near
/// `u64::MAX` seconds overflowed that sum and panicked in a data path thread. A day is far
/// beyond any sensible value and far from any overflow. The same as the longest deadline a hop
/// passes on, so no configured timeout is cut short on the wire.
pub const MAX: Duration = hostmesh_wire::MAX_TIMEOUT;

/// Parses a duration that must be greater than zero: almost every duration in the config is a
/// timeout, an interval or a TTL, where zero means nothing sensible. Route policies read theirs
/// with it too, so a duration means the same wherever an operator writes one.
pub fn parse(s: &str) -> Result<Duration, String> {
    let d = parse_allow_zero(s)?;
    if d.is_zero() {
        return Err("must be greater than zero".to_owned());
    }
    Ok(d)
}

/// Parses a duration where zero is meaningful (`agent.drain = "0s"`: no drain).
pub(crate) fn parse_allow_zero(s: &str) -> Result<Duration, String> {
    let d = hostmesh_wire::duration::parse(s)
        .map_err(|e| format!("{s:?} is not a duration such as \"10s\" or \"250ms\" ({e})"))?;
    if d > MAX {
        return Err(format!("must be at most {}, found {s:?}", show(MAX)));
    }
    Ok(d)
}

/// Shows a duration the way the config writes it.
pub fn show(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses() {
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse("1m 30s"), Ok(Duration::from_secs(90)));
        assert!(parse("0s").is_err());
        assert_eq!(parse_allow_zero("0s"), Ok(Duration::ZERO));
        assert!(parse("10").is_err());
        assert!(parse("soon").is_err());
        assert!(parse("").is_err());
        assert_eq!(parse("24h"), Ok(MAX));
        assert_eq!(
            parse("18446744073709551615s"),
            Err("must be at most 1day, found \"18446744073709551615s\"".to_owned())
        );
        assert!(parse_allow_zero("25h").is_err());
    }
}
