//! The `LoadBalancerPool` resource: its spec (what a user asks for) and its backends.

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use weir_api::{
    AccessLog, Algorithm, CircuitBreaker, HealthCheck, OutlierDetection, Retries, Route,
    SessionAffinity, SlowStart, Timeouts, Upstream,
};

use crate::schema;
use crate::status::LoadBalancerPoolStatus;

/// What a user asks of a pool: the requests it takes, the backends they go to and how.
///
/// Field names are those of the standalone data plane's pools file, except that `targets`
/// (addresses) become `backends` (Services or addresses), which the controller resolves into
/// targets from the Services' EndpointSlices.
// Clippy reads the repeated `type_ = ...` of the printer columns as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "weir.dev",
    version = "v1alpha1",
    kind = "LoadBalancerPool",
    namespaced,
    shortname = "lbp",
    category = "weir",
    status = "LoadBalancerPoolStatus",
    derive = "PartialEq",
    doc = "A pool of weighted backends behind Weir's data planes, and the routes that lead to it.",
    printcolumn(
        name = "Routes",
        type_ = "string",
        json_path = ".status.routes",
        description = "The routes the pool takes, host and path prefix."
    ),
    printcolumn(
        name = "Healthy",
        type_ = "integer",
        json_path = ".status.targets.healthy",
        description = "Targets taking traffic on every data plane."
    ),
    printcolumn(
        name = "Targets",
        type_ = "integer",
        json_path = ".status.targets.total",
        description = "Targets resolved from the backends."
    ),
    printcolumn(
        name = "Ready",
        type_ = "integer",
        json_path = ".status.targets.ready",
        description = "Targets whose endpoints are ready.",
        priority = 1
    ),
    printcolumn(
        name = "Synced",
        type_ = "integer",
        json_path = ".status.dataPlanes.synced",
        description = "Data planes that applied the pool's current generation."
    ),
    printcolumn(
        name = "Data Planes",
        type_ = "integer",
        json_path = ".status.dataPlanes.connected",
        description = "Data planes connected to the controller."
    ),
    printcolumn(
        name = "Programmed",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Programmed\")].status",
        description = "Whether every connected data plane applied the pool."
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = schema::refine_spec)]
pub struct LoadBalancerPoolSpec {
    /// Requests this pool takes, by host and path prefix; across all pools the most specific
    /// host wins, then the longest path prefix. By default the pool takes every request.
    #[serde(default = "default_routes")]
    pub routes: Vec<Route>,
    /// Where requests go: Services, whose ready endpoints become targets, and static
    /// addresses. Each backend's weight is its share of the pool's traffic, however many
    /// endpoints it has (as in Gateway API).
    pub backends: Vec<Backend>,
    /// How a target is picked for each request: WeightedRoundRobin (smooth, exact shares),
    /// LeastRequest (power of two choices over requests in flight), Random (weighted) or
    /// ConsistentHash (Maglev over the session-affinity key, else the client IP).
    #[serde(default)]
    pub algorithm: Algorithm,
    /// Keeps a client on one target while that target is usable: by a cookie the proxy sets
    /// (Cookie), a request header (Header) or the client's address (ClientIP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_affinity: Option<SessionAffinity>,
    /// How the data plane talks to targets.
    #[serde(default)]
    pub upstream: Upstream,
    /// Time limits on the way to targets.
    #[serde(default)]
    pub timeouts: Timeouts,
    /// Active HTTP health checks of every target; without them, targets are judged by real
    /// traffic only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    /// Passive ejection of targets that fail requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
    /// Pool limits and per-target breakers; on by default.
    #[serde(default)]
    pub circuit_breaker: CircuitBreaker,
    /// Below this percentage of usable targets, the pool balances across all of them instead
    /// of overloading the few (Envoy's panic mode); 0 turns it off.
    #[serde(default = "default_panic_threshold")]
    pub panic_threshold: u32,
    /// Ramps up the weight of targets that join or return.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slow_start: Option<SlowStart>,
    /// Retries of failed requests on other targets.
    #[serde(default)]
    pub retries: Retries,
    /// What the pool writes to the data planes' access logs (when they keep one); without
    /// it, every request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_log: Option<AccessLog>,
}

/// One backend: a Service in the pool's namespace, or a static address outside the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.service) != has(self.address)",
    "message": "a backend names exactly one of service or address",
}]))]
pub struct Backend {
    /// A Service in the pool's namespace; its ready endpoints (from its EndpointSlices)
    /// become the backend's targets. Exclusive with address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceBackend>,
    /// A static target, IP address and port (`203.0.113.7:8080` or `[2001:db8::7]:8080`), for
    /// a server outside the cluster. Exclusive with service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 53))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": schema::ADDRESS_RULE,
        "message": "must be an IP address and port, such as 203.0.113.7:8080 or [2001:db8::7]:8080",
    }]))]
    pub address: Option<String>,
    /// The backend's share of the pool's traffic, relative to the other backends' weights,
    /// however many endpoints it has (Gateway API semantics): with weights 90 and 10 a Service
    /// of 1 pod gets 90% and a Service of 5 pods 10%, 2% per pod. 0 drains the backend.
    #[serde(default = "default_weight")]
    #[schemars(range(max = weir_api::MAX_WEIGHT))]
    pub weight: u32,
}

/// A Service and one of its ports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceBackend {
    /// Name of the Service, in the pool's namespace.
    #[schemars(length(min = 1, max = 63), regex(pattern = schema::DNS_LABEL))]
    pub name: String,
    /// The Service port, by number (its `port`, not its `targetPort`) or by name. Traffic goes
    /// straight to the endpoints' port behind it, not through the Service's cluster IP.
    #[schemars(extend("maxLength" = 15, "x-kubernetes-validations" = [{
        "rule": "type(self) == int ? self >= 1 && self <= 65535 : self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')",
        "message": "must be a port number (1-65535) or a port name (an IANA service name such as http)",
    }]))]
    pub port: IntOrString,
}

impl LoadBalancerPoolSpec {
    /// Names of the Services the backends name, in order, each once.
    pub fn service_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        for service in self.backends.iter().filter_map(|b| b.service.as_ref()) {
            if !names.contains(&service.name.as_str()) {
                names.push(&service.name);
            }
        }
        names
    }

    /// The routes in a few words for `status.routes` and the Routes column of `kubectl get`:
    /// host and path prefix, comma-separated (`api.example.com/v1,*.example.com/`).
    pub fn routes_summary(&self) -> String {
        self.routes
            .iter()
            .map(|r| format!("{}{}", r.host, r.path_prefix))
            .collect::<Vec<_>>()
            .join(",")
    }
}

fn default_routes() -> Vec<Route> {
    vec![Route::default()]
}

fn default_panic_threshold() -> u32 {
    // The pools file's default (weir_api::Pool::panic_threshold).
    50
}

fn default_weight() -> u32 {
    1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_design_sketch_reads_with_defaults() {
        let spec: LoadBalancerPoolSpec = serde_saphyr::from_str(
            r#"
routes:
  - host: api.example.com
    pathPrefix: /api/v1/users
backends:
  - service: { name: users-v1, port: 8080 }
    weight: 90
  - service: { name: users-v2, port: http }
    weight: 10
  - address: 203.0.113.7:8080
algorithm: WeightedRoundRobin
sessionAffinity: { type: Cookie, cookieName: weir-session, ttl: 1h }
healthCheck: { path: /health, interval: 5s, timeout: 1s, healthyThreshold: 2, unhealthyThreshold: 3 }
retries: { attempts: 2, retryOn: [connect-failure, reset, 502, 503, 504], budgetPercent: 20 }
timeouts: { connect: 2s, request: 30s, idle: 120s }
"#,
        )
        .unwrap();
        assert_eq!(
            spec.backends[1].service.as_ref().unwrap().port,
            IntOrString::String("http".into())
        );
        assert_eq!(spec.backends[2].weight, 1);
        assert_eq!(spec.panic_threshold, 50);
        assert_eq!(spec.service_names(), ["users-v1", "users-v2"]);
        assert_eq!(spec.routes_summary(), "api.example.com/api/v1/users");
    }

    #[test]
    fn defaults_match_the_pools_file() {
        let spec: LoadBalancerPoolSpec = serde_json::from_str(r#"{"backends":[]}"#).unwrap();
        let pool: weir_api::Pool = serde_json::from_str(r#"{"name":"web"}"#).unwrap();
        assert_eq!(spec.routes, pool.routes);
        assert_eq!(spec.algorithm, pool.algorithm);
        assert_eq!(spec.upstream, pool.upstream);
        assert_eq!(spec.timeouts, pool.timeouts);
        assert_eq!(spec.circuit_breaker, pool.circuit_breaker);
        assert_eq!(spec.panic_threshold, pool.panic_threshold);
        assert_eq!(spec.retries, pool.retries);
        assert_eq!(spec.routes_summary(), "*/");
    }

    /// Every field that holds a duration gets the duration checks of `schema.rs`: found by
    /// serializing a pool with every optional part set and reading back its strings.
    #[test]
    fn every_duration_is_checked() {
        let spec: LoadBalancerPoolSpec = serde_saphyr::from_str(
            r#"
backends: []
sessionAffinity: { type: Cookie, ttl: 1h }
timeouts: { perTry: 1s }
healthCheck: {}
outlierDetection: {}
slowStart: { window: 30s }
"#,
        )
        .unwrap();
        let mut found = Vec::new();
        durations(
            &serde_json::to_value(&spec).unwrap(),
            String::new(),
            &mut found,
        );
        found.sort();
        let mut checked: Vec<String> = crate::schema::duration_paths().map(String::from).collect();
        checked.sort();
        assert_eq!(found, checked);
    }

    fn durations(value: &serde_json::Value, path: String, found: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(fields) => {
                for (name, value) in fields {
                    let path = if path.is_empty() {
                        name.clone()
                    } else {
                        format!("{path}.{name}")
                    };
                    durations(value, path, found);
                }
            }
            serde_json::Value::Array(items) => {
                for item in items {
                    durations(item, format!("{path}[]"), found);
                }
            }
            serde_json::Value::String(s) if s.parse::<weir_api::Duration>().is_ok() => {
                found.push(path);
            }
            _ => {}
        }
    }
}
