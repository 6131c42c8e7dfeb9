//! The label selector a data plane may pass on its stream (`?selector=`) to serve only some
//! pools, as a gateway for a team or as a sidecar next to one application.
//!
//! Equality-based requirements only, comma-separated and all required: `k=v`, `k==v`, `k!=v`
//! (Kubernetes' syntax; `k!=v` also matches a pool without the label). Set-based requirements
//! (`k in (a,b)`, `k notin (...)`, `k`, `!k`) are refused with a clear error rather than
//! misread.

use std::collections::BTreeMap;
use std::fmt;

/// A parsed label selector; the empty selector selects every pool.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector {
    requirements: Vec<Requirement>,
}

/// One `key=value` or `key!=value`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Requirement {
    key: String,
    value: String,
    equal: bool,
}

/// Why a selector was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// A requirement is not `key=value`, `key==value` or `key!=value`.
    #[error(
        "label selector requirement {0:?} is not key=value, key==value or key!=value \
         (set-based selectors are not supported)"
    )]
    NotEquality(String),
    /// A key or value holds characters no label may.
    #[error("label selector requirement {0:?} has an invalid label key or value")]
    Invalid(String),
}

impl Selector {
    /// Parses `k=v,k2!=v2`; the empty string selects everything.
    pub fn parse(text: &str) -> Result<Self, SelectorError> {
        let mut requirements = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            if part.contains(['(', ')']) || part.starts_with('!') {
                return Err(SelectorError::NotEquality(part.to_owned()));
            }
            let (key, value, equal) = if let Some((k, v)) = part.split_once("!=") {
                (k, v, false)
            } else if let Some((k, v)) = part.split_once("==") {
                (k, v, true)
            } else if let Some((k, v)) = part.split_once('=') {
                (k, v, true)
            } else {
                return Err(SelectorError::NotEquality(part.to_owned()));
            };
            let (key, value) = (key.trim(), value.trim());
            if !valid_key(key) || !valid_value(value) {
                return Err(SelectorError::Invalid(part.to_owned()));
            }
            requirements.push(Requirement {
                key: key.to_owned(),
                value: value.to_owned(),
                equal,
            });
        }
        Ok(Self { requirements })
    }

    /// Whether a pool with `labels` is selected.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| {
            let has = labels.get(&r.key).is_some_and(|v| *v == r.value);
            has == r.equal
        })
    }

    /// Whether it selects every pool.
    pub fn is_everything(&self) -> bool {
        self.requirements.is_empty()
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            let op = if r.equal { "=" } else { "!=" };
            write!(
                f,
                "{}{}{op}{}",
                if i > 0 { "," } else { "" },
                r.key,
                r.value
            )?;
        }
        Ok(())
    }
}

/// `[prefix/]name`: a DNS subdomain prefix and a name of up to 63 characters.
fn valid_key(key: &str) -> bool {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    let prefix_ok = prefix.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|l| {
                !l.is_empty()
                    && l.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            })
    });
    prefix_ok && !name.is_empty() && valid_value(name)
}

/// Up to 63 characters, alphanumeric at both ends, `-_.` inside; empty is allowed.
fn valid_value(value: &str) -> bool {
    let bytes = value.as_bytes();
    value.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(b))
        && bytes.first().is_none_or(u8::is_ascii_alphanumeric)
        && bytes.last().is_none_or(u8::is_ascii_alphanumeric)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn equality_requirements_must_all_hold() {
        let s = Selector::parse("team=shop, weir.dev/tier==edge").unwrap();
        assert!(s.matches(&labels(&[("team", "shop"), ("weir.dev/tier", "edge")])));
        assert!(!s.matches(&labels(&[("team", "shop")])));
        assert!(!s.matches(&labels(&[("team", "web"), ("weir.dev/tier", "edge")])));
        assert_eq!(s.to_string(), "team=shop,weir.dev/tier=edge");
    }

    #[test]
    fn inequality_matches_a_missing_label_too() {
        let s = Selector::parse("team!=shop").unwrap();
        assert!(s.matches(&labels(&[])));
        assert!(s.matches(&labels(&[("team", "web")])));
        assert!(!s.matches(&labels(&[("team", "shop")])));
    }

    #[test]
    fn the_empty_selector_selects_everything() {
        let s = Selector::parse("").unwrap();
        assert!(s.is_everything());
        assert!(s.matches(&labels(&[("a", "b")])));
    }

    #[test]
    fn set_based_and_malformed_selectors_are_refused() {
        for text in ["team in (a,b)", "team", "!team", "team notin (a)"] {
            let e = Selector::parse(text).unwrap_err();
            assert!(matches!(e, SelectorError::NotEquality(_)), "{text}: {e}");
            assert!(e.to_string().contains("set-based"), "{e}");
        }
        for text in ["=x", "te am=x", "team=-x", "Team.Example/x=y"] {
            assert!(
                matches!(Selector::parse(text), Err(SelectorError::Invalid(_))),
                "{text}"
            );
        }
    }
}
