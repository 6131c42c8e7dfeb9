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
            if num_len == 0 {
                return Err(ParseDurationError::InvalidNumber(s.to_owned()));
            }
            let number: f64 = rest[..num_len]
                .parse()
                .map_err(|_| ParseDurationError::InvalidNumber(s.to_owned()))?;
            rest = &rest[num_len..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(rest.len());
            let nanos_per_unit: f64 = match &rest[..unit_len] {
                "ns" => 1.0,
                "us" | "µs" => 1e3,
                "ms" => 1e6,
                "s" => 1e9,
                "m" => 60e9,
                "h" => 3600e9,
                _ => return Err(ParseDurationError::InvalidUnit(s.to_owned())),
            };
            rest = &rest[unit_len..];
            let nanos = number * nanos_per_unit;
            if !nanos.is_finite() || nanos > u64::MAX as f64 {
                return Err(ParseDurationError::Overflow(s.to_owned()));
            }
            total_nanos += nanos as u128;
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
    fn displays_what_it_parses() {
        for s in ["2s", "500ms", "1h30m", "1h", "0s", "90m"] {
            let d: Duration = s.parse().unwrap();
            let again: Duration = d.to_string().parse().unwrap();
            assert_eq!(d, again, "{s}");
        }
        assert_eq!(Duration::from_secs(5400).to_string(), "1h30m");
    }
}
