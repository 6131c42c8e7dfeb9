//! The standalone pools file: YAML in, a validated [`PoolsFile`] out, or one error naming the
//! line and the field.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use weir_api::PoolsFile;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// Why a pools file was refused. The running configuration is kept.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: cannot read: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file is not YAML of the expected shape, or a field failed validation.
    #[error("{}", Located { path, line: *line, field, message })]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line of the offending field, when known.
        line: Option<usize>,
        /// Path of the field, such as `pools[0].targets[1].weight`.
        field: String,
        /// What is wrong.
        message: String,
    },
}

struct Located<'a> {
    path: &'a Path,
    line: Option<usize>,
    field: &'a str,
    message: &'a str,
}

impl fmt::Display for Located<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if self.field.is_empty() {
            write!(f, ": {}", self.message)
        } else {
            write!(f, ": field {}: {}", self.field, self.message)
        }
    }
}

/// Reads and validates the pools file at `path`.
pub fn load(path: &Path) -> Result<PoolsFile, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(path, &text)
}

/// Parses and validates pools-file text; `path` only names the file in errors.
pub fn parse(path: &Path, text: &str) -> Result<PoolsFile, ConfigError> {
    let invalid = |line, field: String, message: String| ConfigError::Invalid {
        path: path.to_owned(),
        line,
        field,
        message,
    };
    if text.trim().is_empty() {
        return Ok(PoolsFile::default());
    }
    let file: PoolsFile = serde_yaml::from_str(text).map_err(|e| {
        let line = e.location().map(|l| l.line());
        // serde_yaml prefixes the message with the field path ("pools[0].weight: ...") and
        // suffixes the location; split them so the error reads as file:line: field: message.
        let mut message = e.to_string();
        if let Some(at) = message.rfind(" at line ") {
            message.truncate(at);
        }
        let (field, message) = match message.split_once(": ") {
            Some((field, rest)) if !field.contains(' ') => (field.to_owned(), rest.to_owned()),
            _ => (String::new(), message),
        };
        invalid(line, field, message)
    })?;
    file.validate()
        .map_err(|e| invalid(line_of(text, &e.path), e.path, e.message))?;
    Ok(file)
}

/// The 1-based line at which the node at `field` (such as `pools[1].targets[0].weight`)
/// starts, found with a YAML event parser because serde's data model has no positions.
fn line_of(text: &str, field: &str) -> Option<usize> {
    let mut lines = LineIndex::default();
    Parser::new_from_str(text).load(&mut lines, false).ok()?;
    lines.lines.get(field).copied()
}

/// Records where each node starts, by its field path.
#[derive(Default)]
struct LineIndex {
    lines: HashMap<String, usize>,
    stack: Vec<Frame>,
}

enum Frame {
    Map { path: String, key: Option<String> },
    Seq { path: String, index: usize },
}

impl LineIndex {
    /// The path of the node about to start, given the enclosing frame.
    fn child_path(&self) -> String {
        match self.stack.last() {
            None => String::new(),
            Some(Frame::Map { path, key }) => {
                let key = key.as_deref().unwrap_or("");
                if path.is_empty() {
                    key.to_owned()
                } else {
                    format!("{path}.{key}")
                }
            }
            Some(Frame::Seq { path, index }) => format!("{path}[{index}]"),
        }
    }

    /// Moves the enclosing frame past the node just finished.
    fn advance(&mut self) {
        match self.stack.last_mut() {
            Some(Frame::Map { key, .. }) => *key = None,
            Some(Frame::Seq { index, .. }) => *index += 1,
            None => {}
        }
    }
}

impl MarkedEventReceiver for LineIndex {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        match ev {
            Event::Scalar(value, ..) => {
                if let Some(Frame::Map {
                    key: key @ None, ..
                }) = self.stack.last_mut()
                {
                    *key = Some(value);
                    return;
                }
                let path = self.child_path();
                self.lines.entry(path).or_insert(mark.line());
                self.advance();
            }
            Event::Alias(_) => self.advance(),
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                let path = self.child_path();
                self.lines.entry(path.clone()).or_insert(mark.line());
                self.stack.push(if matches!(ev, Event::MappingStart(..)) {
                    Frame::Map { path, key: None }
                } else {
                    Frame::Seq { path, index: 0 }
                });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
                self.advance();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        parse(Path::new("pools.yaml"), text)
            .unwrap_err()
            .to_string()
    }

    const GOOD: &str = "\
pools:
  - name: web
    routes: [{ host: \"*\", pathPrefix: / }]
    algorithm: WeightedRoundRobin
    sessionAffinity: { type: Cookie, cookieName: weir-session }
    targets:
      - { address: 127.0.0.1:9001, weight: 3 }
      - { address: 127.0.0.1:9002, weight: 1 }
";

    #[test]
    fn the_documented_example_parses() {
        let file = parse(Path::new("pools.yaml"), GOOD).unwrap();
        assert_eq!(file.pools[0].targets[0].weight, 3);
        assert_eq!(
            file.pools[0]
                .session_affinity
                .as_ref()
                .unwrap()
                .cookie_name(),
            "weir-session"
        );
    }

    #[test]
    fn a_wrong_type_names_line_and_field() {
        let text = GOOD.replace("weight: 1 }", "weight: heavy }");
        let e = err(&text);
        assert!(
            e.starts_with("pools.yaml:8: field pools[0].targets[1].weight: invalid type"),
            "{e}"
        );
    }

    #[test]
    fn an_unknown_field_names_line_and_field() {
        let text = GOOD.replace("algorithm:", "algoritm:");
        let e = err(&text);
        assert!(
            e.starts_with("pools.yaml:4: field pools[0]: unknown field `algoritm`"),
            "{e}"
        );
    }

    #[test]
    fn a_bad_address_names_its_line() {
        let text = GOOD.replace("127.0.0.1:9002", "localhost:9002");
        let e = err(&text);
        assert!(
            e.starts_with("pools.yaml:8: field pools[0].targets[1].address: invalid"),
            "{e}"
        );
    }

    #[test]
    fn a_validation_failure_names_line_and_field() {
        let text = GOOD.replace("weight: 3", "weight: 5000000");
        assert_eq!(
            err(&text),
            "pools.yaml:7: field pools[0].targets[0].weight: 5000000 is above the maximum weight 1000000"
        );
        let text = format!("{GOOD}{}", GOOD.replace("pools:\n", ""));
        assert_eq!(
            err(&text),
            "pools.yaml:9: field pools[1].name: pool name \"web\" is used twice"
        );
    }

    #[test]
    fn broken_yaml_names_its_line() {
        let e = err("pools:\n  - name: web\n    targets: [\n");
        assert!(e.starts_with("pools.yaml:"), "{e}");
    }

    #[test]
    fn an_empty_file_means_no_pools() {
        assert_eq!(parse(Path::new("p"), "\n").unwrap(), PoolsFile::default());
    }
}
