//! What the schema of the spec checks beyond what schemars derives from the types.
//!
//! The spec reuses the contract's types (`weir_api::HealthCheck`, `Retries`, ...), whose serde
//! attributes and doc comments give the field names, defaults and descriptions. What Kubernetes
//! can check on top (ranges, patterns, list bounds, CEL rules where fields depend on each
//! other) is Kubernetes-only, so it lives here, as one table keyed by field path, rather than
//! as attributes in the kube-free contract. It mirrors what [`weir_api::Pool::validate`]
//! checks, so that a pool the apiserver accepts compiles into a valid contract pool; what it
//! cannot express (a route claimed by two pools) is left to the controller.
//!
//! Each path must exist: a field renamed in `weir-api` fails the generation (and the tests)
//! rather than dropping a check silently.

use schemars::Schema;
use serde_json::{Map, Value, json};

/// Most backends a pool may name (the apiserver needs a bound to cost its validation rules).
pub const MAX_BACKENDS: u32 = 64;
/// Most routes a pool may take.
pub const MAX_ROUTES: u32 = 64;

/// A DNS label (RFC 1123), as Kubernetes names most objects.
pub(crate) const DNS_LABEL: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

/// CEL: an IP address and port, as Rust's `SocketAddr` reads it (`10.0.0.7:8080`,
/// `[2001:db8::7]:8080`).
pub(crate) const ADDRESS_RULE: &str = "self.matches('^([0-9.]+|\\\\[[0-9a-fA-F.]*:[0-9a-fA-F:.]*\\\\]):[0-9]{1,5}$') \
    && isIP(self.startsWith('[') ? self.substring(1, self.lastIndexOf(']')) : self.substring(0, self.lastIndexOf(':'))) \
    && int(self.substring(self.lastIndexOf(':') + 1)) >= 1 \
    && int(self.substring(self.lastIndexOf(':') + 1)) <= 65535";

/// A Go-style duration, as `weir_api::Duration` reads it.
const DURATION_PATTERN: &str = "^(0|([0-9]+(\\\\.[0-9]+)?(ns|us|µs|ms|s|m|h))+)$";
/// An RFC 9110 token, what header and cookie names are made of.
const TOKEN_PATTERN: &str = "^[-!#$%&'*+.^_`|~0-9A-Za-z]+$";
/// `api.example.com`, `*.example.com` or `*`: lowercase DNS names, as `weir_api` checks hosts.
const HOST_PATTERN: &str =
    "^(\\*|(\\*\\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*)$";

/// One refinement of the field at a path.
enum Check {
    /// An integer's bounds.
    Range(Option<u32>, Option<u32>),
    /// A string's pattern and maximum length.
    Pattern(&'static str, u32),
    /// A list's bounds on its number of items.
    Items(u32, u32),
    /// A duration; `positive` when zero is refused.
    Duration { positive: bool },
    /// An integer or a string (a YAML `503` or `"503"`), checked by a CEL rule.
    IntOrString(&'static str, &'static str),
    /// CEL rules on an object: rule, message.
    Rules(&'static [(&'static str, &'static str)]),
    /// A description in place of the derived one: for enums, whose variants' doc comments
    /// do not survive the structural schema's `enum` list.
    Describe(&'static str),
}

/// Fields by path from the spec: `a.b` for properties, `a[]` for a list's items.
const CHECKS: &[(&str, Check)] = &[
    ("routes", Check::Items(1, MAX_ROUTES)),
    ("routes[].host", Check::Pattern(HOST_PATTERN, 253)),
    ("routes[].pathPrefix", Check::Pattern("^/[^?# ]*$", 1024)),
    ("backends", Check::Items(0, MAX_BACKENDS)),
    (
        "sessionAffinity",
        Check::Rules(&[
            (
                "self.type != 'Header' || has(self.headerName)",
                "headerName is required when type is Header",
            ),
            (
                "self.type == 'Header' || !has(self.headerName)",
                "headerName applies only when type is Header",
            ),
            (
                "self.type == 'Cookie' || (!has(self.cookieName) && !has(self.ttl))",
                "cookieName and ttl apply only when type is Cookie",
            ),
        ]),
    ),
    (
        "sessionAffinity.type",
        Check::Describe(
            "What the affinity key is: Cookie (a cookie the proxy sets on the first response \
             names the target), Header (the value of the headerName request header is hashed to \
             a target) or ClientIP (the client's address is hashed to a target).",
        ),
    ),
    (
        "sessionAffinity.cookieName",
        Check::Pattern(TOKEN_PATTERN, 256),
    ),
    (
        "sessionAffinity.headerName",
        Check::Pattern(TOKEN_PATTERN, 256),
    ),
    ("sessionAffinity.ttl", Check::Duration { positive: true }),
    (
        "upstream.protocol",
        Check::Describe(
            "Protocol to targets: HTTP/1.1 (with keep-alive) or HTTP/2 (cleartext, prior \
             knowledge: h2c).",
        ),
    ),
    ("timeouts.connect", Check::Duration { positive: true }),
    ("timeouts.request", Check::Duration { positive: true }),
    ("timeouts.perTry", Check::Duration { positive: true }),
    ("timeouts.idle", Check::Duration { positive: false }),
    ("healthCheck.path", Check::Pattern("^/[^ ]*$", 1024)),
    ("healthCheck.interval", Check::Duration { positive: true }),
    ("healthCheck.timeout", Check::Duration { positive: true }),
    ("healthCheck.healthyThreshold", Check::Range(Some(1), None)),
    (
        "healthCheck.unhealthyThreshold",
        Check::Range(Some(1), None),
    ),
    ("healthCheck.expectedStatuses", Check::Items(1, 16)),
    (
        "healthCheck.expectedStatuses[]",
        Check::IntOrString(
            "type(self) == int ? self >= 100 && self <= 599 \
             : self.matches('^[1-5][0-9][0-9](-[1-5][0-9][0-9])?$') \
               && (size(self) == 3 || int(self.substring(0, 3)) <= int(self.substring(4)))",
            "must be a status (404) or a range of statuses (200-399) between 100 and 599",
        ),
    ),
    (
        "outlierDetection",
        Check::Rules(&[(
            "!has(self.maxEjectionTime) || !has(self.baseEjectionTime) \
             || duration(self.maxEjectionTime) >= duration(self.baseEjectionTime)",
            "maxEjectionTime must not be below baseEjectionTime",
        )]),
    ),
    (
        "outlierDetection.baseEjectionTime",
        Check::Duration { positive: true },
    ),
    (
        "outlierDetection.maxEjectionTime",
        Check::Duration { positive: false },
    ),
    (
        "outlierDetection.maxEjectionPercent",
        Check::Range(None, Some(100)),
    ),
    ("circuitBreaker.maxConnections", Check::Range(Some(1), None)),
    ("circuitBreaker.maxRequests", Check::Range(Some(1), None)),
    (
        "circuitBreaker.halfOpenRequests",
        Check::Range(Some(1), None),
    ),
    (
        "circuitBreaker.resetTimeout",
        Check::Duration { positive: true },
    ),
    ("panicThreshold", Check::Range(None, Some(100))),
    ("slowStart.window", Check::Duration { positive: true }),
    (
        "retries",
        Check::Rules(&[(
            "!has(self.backoffMax) || !has(self.backoffBase) \
             || duration(self.backoffMax) >= duration(self.backoffBase)",
            "backoffMax must not be below backoffBase",
        )]),
    ),
    ("retries.attempts", Check::Range(Some(1), Some(10))),
    ("retries.retryOn", Check::Items(0, 16)),
    (
        "retries.retryOn[]",
        Check::IntOrString(
            "type(self) == int ? self >= 500 && self <= 599 \
             : self in ['connect-failure', 'reset', 'per-try-timeout'] || self.matches('^5[0-9][0-9]$')",
            "must be connect-failure, reset, per-try-timeout or a 5xx status",
        ),
    ),
    ("retries.budgetPercent", Check::Range(None, Some(100))),
    ("accessLog.samplePercent", Check::Range(None, Some(100))),
    ("retries.backoffBase", Check::Duration { positive: false }),
    ("retries.backoffMax", Check::Duration { positive: false }),
];

/// The spec's schema transform (`#[schemars(transform = ...)]`): applies [`CHECKS`].
///
/// # Panics
/// When a path of [`CHECKS`] is not in the schema, naming it.
pub(crate) fn refine_spec(schema: &mut Schema) {
    let root = schema
        .as_object_mut()
        .expect("the spec's schema is an object");
    for (path, check) in CHECKS {
        let field = field(root, path).unwrap_or_else(|| {
            panic!("weir-crds: no field spec.{path} in the schema; update crds/src/schema.rs")
        });
        apply(field, check);
    }
    reflow_descriptions(root);
}

/// A schema transform that joins the lines of each description's paragraphs: doc comments
/// are wrapped at 100 columns, `kubectl explain` wraps them again at its own width.
pub(crate) fn reflow(schema: &mut Schema) {
    if let Some(root) = schema.as_object_mut() {
        reflow_descriptions(root);
    }
}

/// Paths of the durations [`CHECKS`] knows, for the test that finds every duration.
#[cfg(test)]
pub(crate) fn duration_paths() -> impl Iterator<Item = &'static str> {
    CHECKS
        .iter()
        .filter(|(_, check)| matches!(check, Check::Duration { .. }))
        .map(|(path, _)| *path)
}

fn apply(field: &mut Map<String, Value>, check: &Check) {
    let mut insert = |key: &str, value: Value| {
        field.insert(key.to_owned(), value);
    };
    match *check {
        Check::Range(min, max) => {
            if let Some(min) = min {
                insert("minimum", min.into());
            }
            if let Some(max) = max {
                insert("maximum", max.into());
            }
        }
        Check::Pattern(pattern, max_length) => {
            insert("pattern", pattern.into());
            insert("maxLength", max_length.into());
        }
        Check::Items(min, max) => {
            if min > 0 {
                insert("minItems", min.into());
            }
            insert("maxItems", max.into());
        }
        Check::Duration { positive } => {
            insert("maxLength", 32.into());
            // One rule rather than a `pattern` and a rule, so that a malformed duration gets
            // one clear message. The pattern keeps to what `weir_api::Duration` reads (CEL's
            // `duration()` also takes signs); `duration()` refuses what is too long for Go's
            // (and CEL's) int64 nanoseconds, so that every stored duration reads in Rust.
            let (rule, message) = if positive {
                (
                    format!(
                        "self.matches('{DURATION_PATTERN}') && duration(self) > duration('0s')"
                    ),
                    "must be a duration above 0, such as 500ms, 2s or 1m30s",
                )
            } else {
                (
                    format!(
                        "self.matches('{DURATION_PATTERN}') && duration(self) >= duration('0s')"
                    ),
                    "must be a duration, such as 500ms, 2s or 1m30s",
                )
            };
            add_rules(field, &[(&rule, message)]);
        }
        Check::IntOrString(rule, message) => {
            field.remove("type");
            field.remove("format");
            field.insert("x-kubernetes-int-or-string".to_owned(), true.into());
            field.insert("maxLength".to_owned(), 16.into());
            add_rules(field, &[(rule, message)]);
        }
        Check::Rules(rules) => add_rules(field, rules),
        Check::Describe(description) => insert("description", description.into()),
    }
}

fn add_rules(field: &mut Map<String, Value>, rules: &[(&str, &str)]) {
    let list = field
        .entry("x-kubernetes-validations")
        .or_insert_with(|| Value::Array(Vec::new()));
    let list = list
        .as_array_mut()
        .expect("x-kubernetes-validations is a list");
    for (rule, message) in rules {
        list.push(json!({ "rule": rule, "message": message }));
    }
}

/// The schema of the field at `path` within the object schema `root`.
fn field<'a>(root: &'a mut Map<String, Value>, path: &str) -> Option<&'a mut Map<String, Value>> {
    let mut node = root;
    for segment in path.split('.') {
        let (name, items) = match segment.strip_suffix("[]") {
            Some(name) => (name, true),
            None => (segment, false),
        };
        node = object_schema(node)?
            .get_mut("properties")?
            .get_mut(name)?
            .as_object_mut()?;
        if items {
            node = node.get_mut("items")?.as_object_mut()?;
        }
    }
    Some(node)
}

/// The schema that holds the properties: `node` itself, or for an `Option` the branch of its
/// `anyOf` that is not `null`.
fn object_schema(node: &mut Map<String, Value>) -> Option<&mut Map<String, Value>> {
    if node.contains_key("properties") {
        return Some(node);
    }
    node.get_mut("anyOf")?
        .as_array_mut()?
        .iter_mut()
        .filter_map(Value::as_object_mut)
        .find(|branch| branch.contains_key("properties"))
}

fn reflow_descriptions(node: &mut Map<String, Value>) {
    for (key, value) in node.iter_mut() {
        match value {
            Value::String(text) if key == "description" => {
                *text = text
                    .split("\n\n")
                    .map(|paragraph| {
                        paragraph
                            .split('\n')
                            .map(str::trim)
                            .collect::<Vec<_>>()
                            .join(" ")
                    })
                    .collect::<Vec<_>>()
                    .join("\n\n");
            }
            Value::Object(child) => reflow_descriptions(child),
            Value::Array(items) => {
                for child in items.iter_mut().filter_map(Value::as_object_mut) {
                    reflow_descriptions(child);
                }
            }
            _ => {}
        }
    }
}
