//! The pool: which requests it takes, how it balances them and where they go.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::Duration;
use crate::resilience::{CircuitBreaker, HealthCheck, OutlierDetection, Retries, SlowStart};

/// The standalone data plane's pools file: `pools:` and a list of [`Pool`]s.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PoolsFile {
    /// Every pool this data plane serves.
    #[serde(default)]
    pub pools: Vec<Pool>,
}

/// One load-balanced pool of targets and the routes that lead to it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Pool {
    /// Unique name: it labels metrics and status, and names the pool in the admin API.
    pub name: String,
    /// Requests this pool takes; the most specific host, then the longest prefix, wins
    /// across all pools.
    #[serde(default = "default_routes")]
    pub routes: Vec<Route>,
    /// How a target is picked for each request.
    #[serde(default)]
    pub algorithm: Algorithm,
    /// Keeps a client on one target while that target is usable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_affinity: Option<SessionAffinity>,
    /// Where requests go.
    #[serde(default)]
    pub targets: Vec<Target>,
    /// How the data plane talks to targets.
    #[serde(default)]
    pub upstream: Upstream,
    /// Time limits on the way to targets.
    #[serde(default)]
    pub timeouts: Timeouts,
    /// Active health checks; without them, targets are judged by real traffic only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    /// Passive ejection of targets that fail requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
    /// Pool limits and per-target breakers; on by default.
    #[serde(default)]
    pub circuit_breaker: CircuitBreaker,
    /// Below this percentage of usable targets, the pool balances across all of them
    /// instead of overloading the few (Envoy's panic mode); 0 turns it off.
    #[serde(default = "default_panic_threshold")]
    pub panic_threshold: u32,
    /// Ramps up the weight of targets that join or return.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slow_start: Option<SlowStart>,
    /// Retries of failed requests on other targets.
    #[serde(default)]
    pub retries: Retries,
    /// What the pool writes to the data plane's access log (`--access-log`); without it,
    /// every request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_log: Option<AccessLog>,
}

/// A pool's share of the access log.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessLog {
    /// Percentage of the pool's requests that are logged; requests that failed (a 5xx, or
    /// an answer the proxy gave itself) are always logged, so 0 logs the failures only.
    #[serde(default = "default_sample_percent")]
    pub sample_percent: u32,
}

impl Default for AccessLog {
    fn default() -> Self {
        Self {
            sample_percent: default_sample_percent(),
        }
    }
}

fn default_sample_percent() -> u32 {
    100
}

/// A host and path prefix that lead to a pool.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Route {
    /// `api.example.com` (exact), `*.example.com` (any subdomain) or `*` (any host).
    #[serde(default = "default_host")]
    pub host: String,
    /// Leading path segment(s) matched literally, starting with `/`.
    #[serde(default = "default_path_prefix")]
    pub path_prefix: String,
}

/// How a pool picks a target.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
pub enum Algorithm {
    /// NGINX's smooth weighted round robin: exact shares, evenly interleaved.
    #[default]
    WeightedRoundRobin,
    /// Power of two choices over in-flight requests; with unequal weights, Envoy's
    /// `weight / (active + 1)`.
    LeastRequest,
    /// Weighted random.
    Random,
    /// Maglev hashing of the session-affinity key (client IP when the pool has none).
    ConsistentHash,
}

/// Session affinity: which part of a request keeps it on one target.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SessionAffinity {
    /// What the affinity key is.
    #[serde(rename = "type")]
    pub kind: AffinityKind,
    /// Cookie the proxy sets and reads (`Cookie` only); default `weir-session`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie_name: Option<String>,
    /// Request header carrying the key (`Header` only, required there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header_name: Option<String>,
    /// Lifetime of the cookie (`Cookie` only); a session cookie when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<Duration>,
}

/// The kinds of session affinity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
pub enum AffinityKind {
    /// A cookie set by the proxy on the first response names the target.
    Cookie,
    /// A request header's value is hashed to a target.
    Header,
    /// The client's address is hashed to a target.
    #[serde(rename = "ClientIP")]
    ClientIp,
}

/// One backend address and its share of the pool's traffic.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Target {
    /// IP address and port; names are resolved by whoever writes the pool (the controller,
    /// from EndpointSlices), never on the request path.
    pub address: SocketAddr,
    /// Relative share of traffic, 0 to [`crate::MAX_WEIGHT`]; 0 drains the target.
    #[serde(default = "default_weight")]
    pub weight: u32,
}

/// How the data plane talks to a pool's targets.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Upstream {
    /// Protocol to targets; HTTP/2 is prior knowledge (h2c).
    #[serde(default)]
    pub protocol: UpstreamProtocol,
    /// Idle keep-alive connections kept per target.
    #[serde(default = "default_max_idle")]
    pub max_idle_per_target: usize,
}

/// Protocols spoken to targets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
pub enum UpstreamProtocol {
    /// HTTP/1.1 with keep-alive.
    #[default]
    #[serde(rename = "HTTP/1.1")]
    Http1,
    /// HTTP/2 over cleartext, prior knowledge.
    #[serde(rename = "HTTP/2")]
    Http2,
}

/// Time limits on the way to a pool's targets.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Timeouts {
    /// Establishing a TCP connection to a target.
    #[serde(default = "default_connect")]
    pub connect: Duration,
    /// From the request's arrival to the response head, retries included; answered 504 when
    /// exceeded.
    #[serde(default = "default_request")]
    pub request: Duration,
    /// One try's limit, so a hung target leaves time to retry another; unset, a try may take
    /// the whole request timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_try: Option<Duration>,
    /// How long an unused keep-alive connection to a target is kept.
    #[serde(default = "default_idle")]
    pub idle: Duration,
}

impl Default for Upstream {
    fn default() -> Self {
        Self {
            protocol: UpstreamProtocol::default(),
            max_idle_per_target: default_max_idle(),
        }
    }
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: default_connect(),
            request: default_request(),
            per_try: None,
            idle: default_idle(),
        }
    }
}

impl Default for Route {
    fn default() -> Self {
        Self {
            host: default_host(),
            path_prefix: default_path_prefix(),
        }
    }
}

impl SessionAffinity {
    /// The cookie name in force for `Cookie` affinity.
    pub fn cookie_name(&self) -> &str {
        self.cookie_name.as_deref().unwrap_or("weir-session")
    }
}

fn default_panic_threshold() -> u32 {
    50
}

fn default_routes() -> Vec<Route> {
    vec![Route::default()]
}

fn default_host() -> String {
    "*".to_owned()
}

fn default_path_prefix() -> String {
    "/".to_owned()
}

fn default_weight() -> u32 {
    1
}

fn default_max_idle() -> usize {
    256
}

fn default_connect() -> Duration {
    Duration::from_secs(2)
}

fn default_request() -> Duration {
    Duration::from_secs(30)
}

fn default_idle() -> Duration {
    Duration::from_secs(90)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minimal_pool_gets_documented_defaults() {
        let pool: Pool =
            serde_json::from_str(r#"{"name":"web","targets":[{"address":"127.0.0.1:9001"}]}"#)
                .unwrap();
        assert_eq!(
            pool.routes,
            vec![Route {
                host: "*".into(),
                path_prefix: "/".into()
            }]
        );
        assert_eq!(pool.algorithm, Algorithm::WeightedRoundRobin);
        assert_eq!(pool.targets[0].weight, 1);
        assert_eq!(pool.timeouts.connect, Duration::from_secs(2));
        assert_eq!(pool.upstream.protocol, UpstreamProtocol::Http1);
    }

    #[test]
    fn unknown_fields_are_refused_by_name() {
        let err = serde_json::from_str::<Pool>(r#"{"name":"web","algoritm":"Random"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `algoritm`"), "{err}");
    }

    #[test]
    fn affinity_uses_kubernetes_spelling() {
        let a: SessionAffinity = serde_json::from_str(r#"{"type":"ClientIP"}"#).unwrap();
        assert_eq!(a.kind, AffinityKind::ClientIp);
        let up: Upstream = serde_json::from_str(r#"{"protocol":"HTTP/2"}"#).unwrap();
        assert_eq!(up.protocol, UpstreamProtocol::Http2);
    }
}
