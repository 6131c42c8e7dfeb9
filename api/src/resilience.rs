//! How a pool copes with failing targets: health checks, outlier ejection, circuit breaking,
//! panic mode, slow start and retries. Every field has a default, so a pool names only what
//! it changes.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::Duration;

/// Active HTTP health checks of every target.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HealthCheck {
    /// Path probed with `GET`.
    #[serde(default = "default_health_path")]
    pub path: String,
    /// Time between probes of one target; each wait is jittered by up to 10%.
    #[serde(default = "default_interval")]
    pub interval: Duration,
    /// Time a probe may take before it counts as failed.
    #[serde(default = "default_check_timeout")]
    pub timeout: Duration,
    /// Consecutive passing probes that make an unhealthy target healthy (rise).
    #[serde(default = "default_healthy_threshold")]
    pub healthy_threshold: u32,
    /// Consecutive failing probes that make a healthy target unhealthy (fall).
    #[serde(default = "default_unhealthy_threshold")]
    pub unhealthy_threshold: u32,
    /// Statuses that pass, as codes or ranges (`"200-399"`, `"404"`).
    #[serde(default = "default_expected_statuses")]
    pub expected_statuses: Vec<StatusRange>,
    /// Whether a new target waits for its first passing probes before taking traffic; by
    /// default it is usable at once.
    #[serde(default)]
    pub start_unhealthy: bool,
}

/// Passive outlier detection: ejects targets that fail real requests.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutlierDetection {
    /// Consecutive 5xx responses that eject a target; 0 turns this rule off.
    #[serde(default = "default_consecutive")]
    pub consecutive_5xx: u32,
    /// Consecutive gateway failures (connect errors, resets, timeouts, 502-504) that eject a
    /// target; 0 turns this rule off.
    #[serde(default = "default_consecutive")]
    pub consecutive_gateway_failures: u32,
    /// Ejection time, multiplied by the number of times the target was ejected.
    #[serde(default = "default_base_ejection")]
    pub base_ejection_time: Duration,
    /// Cap on one ejection's length.
    #[serde(default = "default_max_ejection")]
    pub max_ejection_time: Duration,
    /// Most targets of the pool ejected at once, in percent; one is always allowed.
    #[serde(default = "default_max_ejection_percent")]
    pub max_ejection_percent: u32,
}

/// Limits that keep a pool and its targets from being overwhelmed.
///
/// The three pool-wide limits default to 8,192: high enough that ordinary concurrency is never
/// refused (`h2load -c16 -m100` keeps 1,600 streams in flight, and with HTTP/1.1 to the targets
/// each needs its own connection, all opened at once when the run starts), low enough that a
/// pool whose targets stall stops piling up requests, connections and descriptors long before
/// the proxy runs out of memory or open files. Envoy's 1,024, the old default, refused 4.8% of
/// that h2load run.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CircuitBreaker {
    /// Most open connections to all the pool's targets together: bounds the descriptors the
    /// pool holds and the connections its targets must accept. With HTTP/1.1 to the targets
    /// each request in flight holds one, so this is also a cap on requests in flight.
    #[serde(default = "default_limit")]
    pub max_connections: u32,
    /// Most requests waiting for a connection to be opened: bounds the connects in progress
    /// when targets stop accepting (each waits up to `timeouts.connect`).
    #[serde(default = "default_limit")]
    pub max_pending_requests: u32,
    /// Most requests in flight to the pool's targets: bounds the memory and target load a
    /// pool whose targets slow down can accumulate.
    #[serde(default = "default_limit")]
    pub max_requests: u32,
    /// Consecutive failures (gateway failures and 5xx) that open one target's breaker.
    #[serde(default = "default_consecutive")]
    pub failure_threshold: u32,
    /// Time an open breaker waits before letting trial requests through (half-open).
    #[serde(default = "default_reset_timeout")]
    pub reset_timeout: Duration,
    /// Trial requests a half-open breaker lets through at once; one success closes it, one
    /// failure opens it again.
    #[serde(default = "default_half_open")]
    pub half_open_requests: u32,
}

/// Ramps a target's weight up after it joins or returns.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SlowStart {
    /// Time over which the weight grows from a tenth to all of it.
    pub window: Duration,
}

/// When and how a failed request is tried again on another target.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Retries {
    /// Tries in all, the first included; 1 turns retries off.
    #[serde(default = "default_attempts")]
    pub attempts: u32,
    /// Failures that are retried: connect-failure, reset, per-try-timeout, or a 5xx status.
    // Not Envoy's `on`: YAML 1.1 readers (kubectl among them) take a bare `on` for `true`.
    // Pools files written with `on` still read.
    #[serde(default = "default_retry_on", rename = "retryOn", alias = "on")]
    pub retry_on: Vec<RetryOn>,
    /// Whether non-idempotent requests (POST, PATCH) are retried after they may have reached
    /// a target; a connect failure is always safe to retry.
    #[serde(default)]
    pub non_idempotent: bool,
    /// Retries allowed, as a percentage of the pool's requests over the last 10 seconds: what
    /// keeps a pool that fails as a whole from getting its load multiplied (a retry storm).
    #[serde(default = "default_budget_percent")]
    pub budget_percent: u32,
    /// Retries per second allowed on top of `budgetPercent`, however few requests there are
    /// (Linkerd's `minRetriesPerSecond`): a burst of failures, such as the requests in flight
    /// to a target that dies, is retried whole even when it is more than the percentage.
    #[serde(default = "default_min_retries_per_second")]
    pub min_retries_per_second: u32,
    /// First backoff step; each retry waits a random time up to base × 2^retry (full jitter).
    #[serde(default = "default_backoff_base")]
    pub backoff_base: Duration,
    /// Cap on one backoff.
    #[serde(default = "default_backoff_max")]
    pub backoff_max: Duration,
    /// Request bodies up to this size are buffered so they can be replayed; larger ones are
    /// streamed and not retried once sent.
    #[serde(default = "default_buffer")]
    pub max_buffer_bytes: u64,
}

/// A failure that may be retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
// Written as a string (see Serialize); weir-crds refines the schema for Kubernetes.
#[cfg_attr(
    feature = "schemars",
    derive(schemars::JsonSchema),
    schemars(with = "String")
)]
pub enum RetryOn {
    /// The connection to the target could not be made (`connect-failure`).
    ConnectFailure,
    /// The connection broke before a response arrived (`reset`).
    Reset,
    /// One try exceeded `timeouts.perTry` (`per-try-timeout`).
    PerTryTimeout,
    /// The target answered this status (`"503"`).
    Status(u16),
}

/// An inclusive range of HTTP statuses, written `"200-399"` or `"404"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
// Written as a string (see Serialize); weir-crds refines the schema for Kubernetes.
#[cfg_attr(
    feature = "schemars",
    derive(schemars::JsonSchema),
    schemars(with = "String")
)]
pub struct StatusRange {
    /// Lowest status in the range.
    pub min: u16,
    /// Highest status in the range.
    pub max: u16,
}

impl StatusRange {
    /// Whether `status` is in the range.
    pub fn contains(&self, status: u16) -> bool {
        (self.min..=self.max).contains(&status)
    }
}

impl FromStr for StatusRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let status = |t: &str| -> Result<u16, String> {
            t.trim()
                .parse::<u16>()
                .ok()
                .filter(|c| (100..=599).contains(c))
                .ok_or_else(|| format!("{s:?} is not a status or range of statuses between 100 and 599 (e.g. \"200-399\")"))
        };
        let (min, max) = match s.split_once('-') {
            Some((a, b)) => (status(a)?, status(b)?),
            None => (status(s)?, status(s)?),
        };
        if min > max {
            return Err(format!("{s:?} is an empty range"));
        }
        Ok(Self { min, max })
    }
}

impl fmt::Display for StatusRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.min == self.max {
            write!(f, "{}", self.min)
        } else {
            write!(f, "{}-{}", self.min, self.max)
        }
    }
}

impl FromStr for RetryOn {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "connect-failure" => Ok(Self::ConnectFailure),
            "reset" => Ok(Self::Reset),
            "per-try-timeout" => Ok(Self::PerTryTimeout),
            code => code
                .parse::<u16>()
                .ok()
                .filter(|c| (500..=599).contains(c))
                .map(Self::Status)
                .ok_or_else(|| {
                    format!("{s:?} is not a retry condition: use connect-failure, reset, per-try-timeout or a 5xx status")
                }),
        }
    }
}

impl fmt::Display for RetryOn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ConnectFailure => f.write_str("connect-failure"),
            Self::Reset => f.write_str("reset"),
            Self::PerTryTimeout => f.write_str("per-try-timeout"),
            Self::Status(code) => write!(f, "{code}"),
        }
    }
}

/// Serializes through `Display` and deserializes through `FromStr`, accepting YAML numbers for
/// bare status codes (`on: [503]`).
macro_rules! string_form {
    ($t:ty) => {
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                #[derive(Deserialize)]
                #[serde(untagged)]
                enum Form {
                    Number(u16),
                    Text(String),
                }
                match Form::deserialize(deserializer)? {
                    Form::Number(n) => n.to_string().parse(),
                    Form::Text(s) => s.parse(),
                }
                .map_err(serde::de::Error::custom)
            }
        }
    };
}

string_form!(StatusRange);
string_form!(RetryOn);

impl Default for HealthCheck {
    fn default() -> Self {
        Self {
            path: default_health_path(),
            interval: default_interval(),
            timeout: default_check_timeout(),
            healthy_threshold: default_healthy_threshold(),
            unhealthy_threshold: default_unhealthy_threshold(),
            expected_statuses: default_expected_statuses(),
            start_unhealthy: false,
        }
    }
}

impl Default for OutlierDetection {
    fn default() -> Self {
        Self {
            consecutive_5xx: default_consecutive(),
            consecutive_gateway_failures: default_consecutive(),
            base_ejection_time: default_base_ejection(),
            max_ejection_time: default_max_ejection(),
            max_ejection_percent: default_max_ejection_percent(),
        }
    }
}

impl Default for CircuitBreaker {
    fn default() -> Self {
        Self {
            max_connections: default_limit(),
            max_pending_requests: default_limit(),
            max_requests: default_limit(),
            failure_threshold: default_consecutive(),
            reset_timeout: default_reset_timeout(),
            half_open_requests: default_half_open(),
        }
    }
}

impl Default for Retries {
    fn default() -> Self {
        Self {
            attempts: default_attempts(),
            retry_on: default_retry_on(),
            non_idempotent: false,
            budget_percent: default_budget_percent(),
            min_retries_per_second: default_min_retries_per_second(),
            backoff_base: default_backoff_base(),
            backoff_max: default_backoff_max(),
            max_buffer_bytes: default_buffer(),
        }
    }
}

fn default_health_path() -> String {
    "/health".to_owned()
}
fn default_interval() -> Duration {
    Duration::from_secs(5)
}
fn default_check_timeout() -> Duration {
    Duration::from_secs(1)
}
fn default_healthy_threshold() -> u32 {
    2
}
fn default_unhealthy_threshold() -> u32 {
    3
}
fn default_expected_statuses() -> Vec<StatusRange> {
    vec![StatusRange { min: 200, max: 399 }]
}
fn default_consecutive() -> u32 {
    5
}
fn default_base_ejection() -> Duration {
    Duration::from_secs(30)
}
fn default_max_ejection() -> Duration {
    Duration::from_secs(300)
}
fn default_max_ejection_percent() -> u32 {
    50
}
/// See [`CircuitBreaker`] for why 8,192.
fn default_limit() -> u32 {
    8192
}
fn default_reset_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_half_open() -> u32 {
    1
}
fn default_attempts() -> u32 {
    2
}
/// A reset is retried by default, as NGINX's `proxy_next_upstream error` does: only for
/// idempotent requests whose body could be replayed, so nothing is done twice, and it is what
/// keeps a target dying under load invisible to clients.
fn default_retry_on() -> Vec<RetryOn> {
    vec![RetryOn::ConnectFailure, RetryOn::Reset]
}
fn default_budget_percent() -> u32 {
    20
}
fn default_min_retries_per_second() -> u32 {
    10
}
fn default_backoff_base() -> Duration {
    Duration::from_millis(25)
}
fn default_backoff_max() -> Duration {
    Duration::from_millis(250)
}
fn default_buffer() -> u64 {
    64 * 1024
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_read_as_codes_or_ranges() {
        let r: Vec<StatusRange> = serde_json::from_str(r#"["200-399", "404", 418]"#).unwrap();
        assert_eq!(
            r,
            [
                StatusRange { min: 200, max: 399 },
                StatusRange { min: 404, max: 404 },
                StatusRange { min: 418, max: 418 }
            ]
        );
        assert!(r[0].contains(302) && !r[0].contains(404));
        let e = serde_json::from_str::<StatusRange>(r#""399-200""#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("empty range"), "{e}");
    }

    #[test]
    fn retry_conditions_are_retry_on_and_envoys_on_still_reads() {
        let r: Retries = serde_json::from_str(r#"{"on": ["reset"]}"#).unwrap();
        assert_eq!(r.retry_on, [RetryOn::Reset]);
        assert!(
            serde_json::to_string(&r)
                .unwrap()
                .contains(r#""retryOn":["reset"]"#)
        );
    }

    #[test]
    fn retry_conditions_read_as_words_or_5xx_codes() {
        let on: Vec<RetryOn> =
            serde_json::from_str(r#"["connect-failure", "reset", 503, "504"]"#).unwrap();
        assert_eq!(
            on,
            [
                RetryOn::ConnectFailure,
                RetryOn::Reset,
                RetryOn::Status(503),
                RetryOn::Status(504)
            ]
        );
        let e = serde_json::from_str::<RetryOn>(r#""404""#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a retry condition"), "{e}");
        assert_eq!(
            serde_json::to_string(&on).unwrap(),
            r#"["connect-failure","reset","503","504"]"#
        );
    }
}
