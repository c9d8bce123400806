//! Duration text (`"250ms"`, `"10s"`, `"1m 30s"`, `"1.5h"`, `"1day"`): humantime's syntax, read
//! by our own parser. Config files, route policies, `x-hostmesh-timeout` and command-line flags
//! all read durations with it.
//!
//! Not `humantime::parse_duration`: it panics ("overflow in Duration::new") when its components
//! add up to `u64::MAX` seconds and their fractions to exactly one second, and a client controls
//! `x-hostmesh-timeout` (found by the peer_headers fuzz target). Here every sum saturates; the
//! callers cap what they accept (a day) anyway. humantime still writes durations.

use std::time::Duration;

/// Nanoseconds per unit, by every name humantime accepts.
const UNITS: &[(&[&str], u128)] = &[
    (&["nsec", "ns", "nanos"], 1),
    (&["usec", "us", "µs", "micros"], 1_000),
    (&["msec", "ms", "millis"], 1_000_000),
    (&["seconds", "second", "secs", "sec", "s"], 1_000_000_000),
    (&["minutes", "minute", "mins", "min", "m"], 60_000_000_000),
    (&["hours", "hour", "hrs", "hr", "h"], 3_600_000_000_000),
    (&["days", "day", "d"], 86_400_000_000_000),
    (&["weeks", "week", "w"], 604_800_000_000_000),
    // humantime's month and year: 30.44 and 365.25 days.
    (&["months", "month", "M"], 2_630_016_000_000_000),
    (&["years", "year", "y"], 31_557_600_000_000_000),
];

/// Why a text is not a duration. Whoever wrote it must fix it; the caller says where it came
/// from (a config key, a header, a flag) and what a duration looks like.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Nothing but spaces.
    #[error("empty")]
    Empty,
    /// Something other than a digit where a component starts (`"-1s"`, `"s"`).
    #[error("expected a number at {rest:?}")]
    ExpectedNumber { rest: String },
    /// A number without a unit (`"10"`).
    #[error("a time unit is needed after {number:?}")]
    MissingUnit { number: String },
    #[error("unknown time unit {unit:?}")]
    UnknownUnit { unit: String },
}

/// Parses `text` as one or more `<number>[.<fraction>]<unit>` separated by optional spaces.
/// A sum beyond `u64::MAX` nanoseconds (584 years) saturates there.
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(DurationError::Empty);
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits == 0 {
            return Err(DurationError::ExpectedNumber {
                rest: rest.to_owned(),
            });
        }
        let (whole, after) = rest.split_at(digits);
        let (fraction, after) = match after.strip_prefix('.') {
            Some(f) => {
                let n = f.len() - f.trim_start_matches(|c: char| c.is_ascii_digit()).len();
                f.split_at(n)
            }
            None => ("", after),
        };
        let after = after.trim_start();
        let unit_len = after.len() - after.trim_start_matches(char::is_alphabetic).len();
        let (unit, after) = after.split_at(unit_len);
        if unit.is_empty() {
            return Err(DurationError::MissingUnit {
                number: whole.to_owned(),
            });
        }
        let per = UNITS
            .iter()
            .find(|(names, _)| names.contains(&unit))
            .map(|(_, per)| *per)
            .ok_or_else(|| DurationError::UnknownUnit {
                unit: unit.to_owned(),
            })?;
        total = total.saturating_add(scaled(whole, fraction, per));
        rest = after.trim_start();
    }
    Ok(Duration::from_nanos(
        u64::try_from(total).unwrap_or(u64::MAX),
    ))
}

/// `whole.fraction` units in nanoseconds, saturating; fraction digits beyond 18 are dropped.
fn scaled(whole: &str, fraction: &str, per: u128) -> u128 {
    // More than 30 digits is beyond any sum that fits in u64 nanoseconds.
    let whole: u128 = if whole.len() > 30 {
        u128::MAX
    } else {
        whole.parse().unwrap_or(u128::MAX)
    };
    let fraction = &fraction[..fraction.len().min(18)];
    let part = if fraction.is_empty() {
        0
    } else {
        let digits: u128 = fraction.parse().unwrap_or(0);
        digits.saturating_mul(per) / 10u128.pow(fraction.len() as u32)
    };
    whole.saturating_mul(per).saturating_add(part)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn humantimes_forms_read_the_same() {
        for (text, want) in [
            ("250ms", Duration::from_millis(250)),
            ("10s", Duration::from_secs(10)),
            ("1m 30s", Duration::from_secs(90)),
            ("1m30s", Duration::from_secs(90)),
            ("1.5h", Duration::from_secs(5400)),
            ("1day", Duration::from_secs(86_400)),
            ("2 hours", Duration::from_secs(7200)),
            ("33ns", Duration::from_nanos(33)),
            ("163µs", Duration::from_micros(163)),
            (" 0s ", Duration::ZERO),
        ] {
            assert_eq!(parse(text), Ok(want), "{text}");
            assert_eq!(humantime::parse_duration(text.trim()), Ok(want), "{text}");
        }
        for bad in ["", "10", "s", "1x", "1.s.", "-1s", "1s -"] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn refusals_say_what_is_wrong() {
        for (text, want) in [
            ("  ", "empty"),
            ("-1s", "expected a number at \"-1s\""),
            ("1s -", "expected a number at \"-\""),
            ("10", "a time unit is needed after \"10\""),
            ("1.5 ", "a time unit is needed after \"1\""),
            ("1x", "unknown time unit \"x\""),
        ] {
            assert_eq!(
                parse(text).map_err(|e| e.to_string()),
                Err(want.to_owned()),
                "{text:?}"
            );
        }
    }

    #[test]
    fn sums_saturate_instead_of_panicking() {
        // humantime panics on this one (a fraction carrying into u64::MAX seconds).
        let max = Duration::from_nanos(u64::MAX);
        assert_eq!(parse("18446744073709551615s 0.5s 0.5s"), Ok(max));
        assert_eq!(
            parse("0.2sec0.3s018446744073709551615s0.2s0.3secs20d"),
            Ok(max)
        );
        assert_eq!(parse(&format!("{}y", "9".repeat(80))), Ok(max));
    }
}
