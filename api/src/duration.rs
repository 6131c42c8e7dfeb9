//! Durations written the way Kubernetes users write them (`500ms`, `2s`, `1h30m`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A non-negative duration, serialized as a Go-style duration string such as `1m30s`.
///
/// Go's syntax rather than humantime's because pools are also written as Kubernetes objects,
/// where `metav1.Duration` set the habit; the parser is small enough to own.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
// Written as a string (see Serialize); weir-crds refines the schema for Kubernetes.
#[cfg_attr(
    feature = "schemars",
    derive(schemars::JsonSchema),
    schemars(with = "String")
)]
pub struct Duration(pub std::time::Duration);

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseDurationError {
    /// The string was empty.
    #[error("empty duration")]
    Empty,
    /// A number was missing or could not be read.
    #[error("invalid number in duration {0:?}")]
    InvalidNumber(String),
    /// A number had no unit after it, or the unit is unknown.
    #[error("unknown or missing unit in duration {0:?} (use ms, s, m or h, e.g. 1m30s)")]
    InvalidUnit(String),
    /// The duration does not fit.
    #[error("duration {0:?} is too large")]
    Overflow(String),
}

impl Duration {
    /// A duration of `secs` seconds.
    pub const fn from_secs(secs: u64) -> Self {
        Self(std::time::Duration::from_secs(secs))
    }

    /// A duration of `millis` milliseconds.
    pub const fn from_millis(millis: u64) -> Self {
        Self(std::time::Duration::from_millis(millis))
    }

    /// The standard-library duration.
    pub const fn get(self) -> std::time::Duration {
        self.0
    }
}

impl From<std::time::Duration> for Duration {
    fn from(d: std::time::Duration) -> Self {
        Self(d)
    }
}

impl FromStr for Duration {
    type Err = ParseDurationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() {
            return Err(ParseDurationError::Empty);
        }
        if s == "0" {
            return Ok(Self::default());
        }
        let mut total_nanos: u128 = 0;
        let mut rest = s;
        while !rest.is_empty() {
            let num_len = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .ok_or_else(|| ParseDurationError::InvalidUnit(s.to_owned()))?;
            let (whole, fraction) = rest[..num_len]
                .split_once('.')
                .unwrap_or((&rest[..num_len], ""));
            if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
                return Err(ParseDurationError::InvalidNumber(s.to_owned()));
            }
            rest = &rest[num_len..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(rest.len());
            let nanos_per_unit: u128 = match &rest[..unit_len] {
                "ns" => 1,
                "us" | "µs" => 1_000,
                "ms" => 1_000_000,
                "s" => 1_000_000_000,
                "m" => 60_000_000_000,
                "h" => 3_600_000_000_000,
                _ => return Err(ParseDurationError::InvalidUnit(s.to_owned())),
            };
            rest = &rest[unit_len..];
            // In integers, not floating point, so that what is written is what is read:
            // `1.019s` is 1019 ms exactly (as f64 it was 1018999999 ns), and large values
            // written to the nanosecond read back to the nanosecond.
            let overflow = || ParseDurationError::Overflow(s.to_owned());
            let whole = whole.bytes().try_fold(0u128, |n, d| {
                n.checked_mul(10)?.checked_add(u128::from(d - b'0'))
            });
            let whole = whole
                .and_then(|n| n.checked_mul(nanos_per_unit))
                .ok_or_else(overflow)?;
            // unit × 0.d1d2…dk rounded down, digit by digit from the last: each step keeps
            // floor((d × unit + carry) / 10), which is exact for any number of digits.
            let fraction = fraction.bytes().rev().fold(0u128, |carry, d| {
                (u128::from(d - b'0') * nanos_per_unit + carry) / 10
            });
            total_nanos = total_nanos
                .checked_add(whole + fraction)
                .filter(|n| *n <= u128::from(u64::MAX))
                .ok_or_else(overflow)?;
        }
        let nanos =
            u64::try_from(total_nanos).map_err(|_| ParseDurationError::Overflow(s.to_owned()))?;
        Ok(Self(std::time::Duration::from_nanos(nanos)))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        if d.is_zero() {
            return f.write_str("0s");
        }
        if d.subsec_nanos() != 0 {
            if d.as_nanos() % 1_000_000 == 0 {
                return write!(f, "{}ms", d.as_millis());
            }
            return write!(f, "{}ns", d.as_nanos());
        }
        let secs = d.as_secs();
        let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
        if h > 0 {
            write!(f, "{h}h")?;
        }
        if m > 0 {
            write!(f, "{m}m")?;
        }
        if s > 0 {
            write!(f, "{s}s")?;
        }
        Ok(())
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<std::time::Duration, ParseDurationError> {
        s.parse::<Duration>().map(Duration::get)
    }

    #[test]
    fn reads_go_style_durations() {
        assert_eq!(parse("2s").unwrap(), std::time::Duration::from_secs(2));
        assert_eq!(
            parse("500ms").unwrap(),
            std::time::Duration::from_millis(500)
        );
        assert_eq!(
            parse("1h30m").unwrap(),
            std::time::Duration::from_secs(5400)
        );
        assert_eq!(
            parse("1.5s").unwrap(),
            std::time::Duration::from_millis(1500)
        );
        assert_eq!(parse("0").unwrap(), std::time::Duration::ZERO);
    }

    #[test]
    fn refuses_numbers_without_units_and_unknown_units() {
        assert_eq!(parse("5"), Err(ParseDurationError::InvalidUnit("5".into())));
        assert_eq!(
            parse("5 days"),
            Err(ParseDurationError::InvalidUnit("5 days".into()))
        );
        assert_eq!(parse(""), Err(ParseDurationError::Empty));
        assert_eq!(
            parse("s"),
            Err(ParseDurationError::InvalidNumber("s".into()))
        );
    }

    #[test]
    fn fractions_are_read_exactly() {
        assert_eq!(parse("1.019s"), parse("1019ms"));
        assert_eq!(parse("0.1ns").unwrap(), std::time::Duration::ZERO);
        assert_eq!(
            parse("0.000000000000000000000000000001999h").unwrap(),
            std::time::Duration::ZERO
        );
        assert_eq!(parse(".5s").unwrap(), std::time::Duration::from_millis(500));
        assert_eq!(parse("1.h").unwrap(), std::time::Duration::from_secs(3600));
        for bad in [".s", "1..5s", "1.2.3s"] {
            assert_eq!(
                parse(bad),
                Err(ParseDurationError::InvalidNumber(bad.into())),
                "{bad}"
            );
        }
        assert_eq!(
            parse("5124096h"),
            Err(ParseDurationError::Overflow("5124096h".into()))
        );
        assert_eq!(
            parse("99999999999999999999999999999999999999999ns"),
            Err(ParseDurationError::Overflow(
                "99999999999999999999999999999999999999999ns".into()
            ))
        );
    }

    /// Found by the `duration` fuzz target: read through f64, `1.019s` lost a nanosecond, so
    /// the canonical form of a duration read back as another.
    #[test]
    fn a_duration_reads_back_from_its_canonical_form() {
        for s in ["9090h01.019s0m", "1.019s", "18446744073.709551615s"] {
            let d: Duration = s.parse().unwrap();
            assert_eq!(d.to_string().parse::<Duration>(), Ok(d), "{s} written {d}");
        }
    }

    #[test]
    fn displays_what_it_parses() {
        for s in ["2s", "500ms", "1h30m", "1h", "0s", "90m"] {
            let d: Duration = s.parse().unwrap();
            let again: Duration = d.to_string().parse().unwrap();
            assert_eq!(d, again, "{s}");
        }
        assert_eq!(Duration::from_secs(5400).to_string(), "1h30m");
    }
}
