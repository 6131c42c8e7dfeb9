//! The label selector a data plane may pass on its stream (`?selector=`) to serve only some
//! pools, as a gateway for a team or as a sidecar next to one application.
//!
//! Kubernetes' syntax, comma-separated requirements that must all hold:
//! - equality: `k=v`, `k==v`, `k!=v` (`k!=v` also matches a pool without the label);
//! - sets: `k in (a,b)`, `k notin (a,b)` (`notin` also matches a pool without the label);
//! - existence: `k`, `!k`.
//!
//! Anything else is refused with an error naming the requirement, never misread.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::is_dns_label;

/// A parsed label selector; the empty selector selects every pool.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector {
    requirements: Vec<Requirement>,
}

/// One requirement on one label.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Requirement {
    /// `key=value` or `key==value`.
    Equals(String, String),
    /// `key!=value`.
    NotEquals(String, String),
    /// `key in (values)`.
    In(String, BTreeSet<String>),
    /// `key notin (values)`.
    NotIn(String, BTreeSet<String>),
    /// `key`.
    Exists(String),
    /// `!key`.
    NotExists(String),
}

/// Why a selector was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// A requirement in none of the forms.
    #[error(
        "label selector requirement {0:?} is none of key=value, key==value, key!=value, \
         key in (v1,v2), key notin (v1,v2), key or !key"
    )]
    Malformed(String),
    /// A key or value holds characters no label may.
    #[error("label selector requirement {0:?} has an invalid label key or value")]
    Invalid(String),
    /// Parentheses that do not pair up.
    #[error("label selector {0:?} has unbalanced parentheses")]
    Unbalanced(String),
}

impl Selector {
    /// Parses a selector; the empty string selects everything.
    pub fn parse(text: &str) -> Result<Self, SelectorError> {
        let requirements = split(text)?
            .into_iter()
            .map(requirement)
            .collect::<Result<_, _>>()?;
        Ok(Self { requirements })
    }

    /// Whether a pool with `labels` is selected.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| match r {
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            Requirement::NotEquals(k, v) => labels.get(k) != Some(v),
            Requirement::In(k, values) => labels.get(k).is_some_and(|v| values.contains(v)),
            Requirement::NotIn(k, values) => labels.get(k).is_none_or(|v| !values.contains(v)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::NotExists(k) => !labels.contains_key(k),
        })
    }

    /// Whether it selects every pool.
    pub fn is_everything(&self) -> bool {
        self.requirements.is_empty()
    }
}

/// The requirements of `text`: split at the commas outside parentheses.
fn split(text: &str) -> Result<Vec<&str>, SelectorError> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0u32, 0);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth = depth
                    .checked_sub(1)
                    .ok_or_else(|| SelectorError::Unbalanced(text.to_owned()))?;
            }
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(SelectorError::Unbalanced(text.to_owned()));
    }
    parts.push(&text[start..]);
    Ok(parts
        .into_iter()
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect())
}

fn requirement(part: &str) -> Result<Requirement, SelectorError> {
    let invalid = || SelectorError::Invalid(part.to_owned());
    let malformed = || SelectorError::Malformed(part.to_owned());
    let key = |k: &str| {
        let k = k.trim();
        if valid_key(k) {
            Ok(k.to_owned())
        } else {
            Err(invalid())
        }
    };
    let value = |v: &str| {
        let v = v.trim();
        if valid_value(v) {
            Ok(v.to_owned())
        } else {
            Err(invalid())
        }
    };
    if let Some(open) = part.find('(') {
        let inner = part[open + 1..].strip_suffix(')').ok_or_else(malformed)?;
        let mut words = part[..open].split_whitespace();
        let (Some(k), Some(op), None) = (words.next(), words.next(), words.next()) else {
            return Err(malformed());
        };
        let values: BTreeSet<String> = inner.split(',').map(value).collect::<Result<_, _>>()?;
        return match op {
            "in" => Ok(Requirement::In(key(k)?, values)),
            "notin" => Ok(Requirement::NotIn(key(k)?, values)),
            _ => Err(malformed()),
        };
    }
    if let Some(k) = part.strip_prefix('!')
        && !k.starts_with('=')
    {
        return Ok(Requirement::NotExists(key(k)?));
    }
    if let Some((k, v)) = part.split_once("!=") {
        return Ok(Requirement::NotEquals(key(k)?, value(v)?));
    }
    if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
        return Ok(Requirement::Equals(key(k)?, value(v)?));
    }
    if part.split_whitespace().count() > 1 {
        return Err(malformed());
    }
    Ok(Requirement::Exists(key(part)?))
}

impl fmt::Display for Selector {
    /// Kubernetes' canonical form, as `kubectl get -l` takes it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let set = |values: &BTreeSet<String>| values.iter().cloned().collect::<Vec<_>>().join(",");
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            match r {
                Requirement::Equals(k, v) => write!(f, "{k}={v}")?,
                Requirement::NotEquals(k, v) => write!(f, "{k}!={v}")?,
                Requirement::In(k, values) => write!(f, "{k} in ({})", set(values))?,
                Requirement::NotIn(k, values) => write!(f, "{k} notin ({})", set(values))?,
                Requirement::Exists(k) => write!(f, "{k}")?,
                Requirement::NotExists(k) => write!(f, "!{k}")?,
            }
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
    let prefix_ok = prefix.is_none_or(|p| p.len() <= 253 && p.split('.').all(is_dns_label));
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
    fn set_requirements_select_by_membership() {
        let s = Selector::parse("tier in (edge, internal),team notin (legacy)").unwrap();
        assert!(s.matches(&labels(&[("tier", "edge")])));
        assert!(s.matches(&labels(&[("tier", "internal"), ("team", "shop")])));
        assert!(!s.matches(&labels(&[("tier", "edge"), ("team", "legacy")])));
        assert!(
            !s.matches(&labels(&[("team", "shop")])),
            "in needs the label"
        );
        assert_eq!(s.to_string(), "tier in (edge,internal),team notin (legacy)");
    }

    #[test]
    fn existence_requirements_look_at_the_key_only() {
        let s = Selector::parse("weir.dev/gateway, !canary").unwrap();
        assert!(s.matches(&labels(&[("weir.dev/gateway", "")])));
        assert!(!s.matches(&labels(&[("weir.dev/gateway", "a"), ("canary", "true")])));
        assert!(!s.matches(&labels(&[])));
        assert_eq!(s.to_string(), "weir.dev/gateway,!canary");
    }

    #[test]
    fn the_canonical_form_parses_back_to_the_same_selector() {
        for text in ["a=b,c!=d", "a in (x,y),!b", "a notin (x),c"] {
            let s = Selector::parse(text).unwrap();
            assert_eq!(Selector::parse(&s.to_string()).unwrap(), s, "{text}");
        }
    }

    #[test]
    fn malformed_selectors_are_refused_naming_the_requirement() {
        for text in [
            "team in a",
            "team within (a)",
            "team in (a) x",
            "te am",
            "a b=c",
        ] {
            let e = Selector::parse(text).unwrap_err();
            assert!(
                matches!(e, SelectorError::Malformed(_) | SelectorError::Invalid(_)),
                "{text}: {e}"
            );
        }
        for text in ["team in (a", "team in a)", "a=(b"] {
            assert!(
                matches!(Selector::parse(text), Err(SelectorError::Unbalanced(_))),
                "{text}"
            );
        }
        for text in ["=x", "team=-x", "Team.Example/x=y", "team in (a,-b)", "!"] {
            assert!(
                matches!(Selector::parse(text), Err(SelectorError::Invalid(_))),
                "{text}"
            );
        }
        let e = Selector::parse("team in (a,b) ,x within (y)").unwrap_err();
        assert!(e.to_string().contains("\"x within (y)\""), "{e}");
    }
}
