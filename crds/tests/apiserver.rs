//! The CRD against a real kube-apiserver (weir-e2e's shared control plane): `kubectl apply`
//! installs it, its schema accepts the design's pool and refuses invalid ones with clear
//! messages, `kubectl explain` reads as documentation and `kubectl get` shows the columns.
//!
//! Needs the binaries of `scripts/control-plane` (`scripts/test` builds them).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use weir_crds::{LoadBalancerPool, condition};
use weir_e2e::ControlPlane;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// The pool of the design sketch, in Kubernetes' YAML, with `retryOn` for the sketch's `on`.
const DESIGN_POOL: &str = r#"
apiVersion: weir.dev/v1alpha1
kind: LoadBalancerPool
metadata: { name: users }
spec:
  routes:
    - host: api.example.com
      pathPrefix: /api/v1/users
  backends:
    - service: { name: users-v1, port: 8080 }
      weight: 90
    - service: { name: users-v2, port: http }
      weight: 10
    - address: 203.0.113.7:8080
      weight: 5
    - address: "[2001:db8::7]:8080"
  algorithm: WeightedRoundRobin
  sessionAffinity: { type: Cookie, cookieName: weir-session, ttl: 1h }
  healthCheck: { path: /health, interval: 5s, timeout: 1s, healthyThreshold: 2, unhealthyThreshold: 3 }
  outlierDetection: { consecutive5xx: 5, baseEjectionTime: 30s, maxEjectionPercent: 50 }
  circuitBreaker: { maxConnections: 1024, maxPendingRequests: 1024, maxRequests: 1024 }
  retries: { attempts: 2, retryOn: [connect-failure, reset, 502, 503, 504], budgetPercent: 20 }
  timeouts: { connect: 2s, request: 30s, idle: 120s }
"#;

/// Installs the checked-in CRD once per test binary and waits until it is served.
async fn plane() -> Result<&'static ControlPlane, Box<dyn std::error::Error>> {
    Ok(ControlPlane::shared_with_crds().await?)
}

/// A pool named `name` with `spec` (YAML, indented by two spaces).
fn pool(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: weir.dev/v1alpha1\nkind: LoadBalancerPool\nmetadata: {{ name: {name} }}\nspec:\n{spec}"
    )
}

/// The design's pool is accepted; what the apiserver stores, with its schema defaults filled
/// in, reads back into the Rust types.
#[tokio::test]
async fn a_valid_pool_is_accepted_and_reads_back() -> TestResult {
    let plane = plane().await?;
    let ns = plane.namespace("lbp-valid").await?;
    let out = plane
        .kubectl_with_input(["apply", "-n", &ns, "-f", "-"], DESIGN_POOL)
        .await?;
    assert!(
        out.contains("loadbalancerpool.weir.dev/users created"),
        "{out}"
    );

    let pools = Api::<LoadBalancerPool>::namespaced(plane.client(), &ns);
    let read = pools.get("users").await?;
    let spec = &read.spec;
    assert_eq!(spec.backends.len(), 4);
    assert_eq!(spec.backends[0].weight, 90);
    assert_eq!(spec.backends[3].weight, 1, "the schema's default weight");
    assert_eq!(spec.service_names(), ["users-v1", "users-v2"]);
    assert_eq!(spec.retries.retry_on.len(), 5);
    assert_eq!(spec.timeouts.idle, weir_api::Duration::from_secs(120));
    // Defaults the apiserver filled in from the schema, as serde would have.
    let stored = plane
        .kubectl([
            "get",
            "lbp",
            "users",
            "-n",
            &ns,
            "-o",
            "jsonpath={.spec.upstream.protocol} {.spec.outlierDetection.maxEjectionTime} {.spec.panicThreshold}",
        ])
        .await?;
    assert_eq!(stored, "HTTP/1.1 5m 50");
    assert_eq!(spec.panic_threshold, 50);
    Ok(())
}

/// Pools the schema refuses are refused by `kubectl apply`, each with a message that names
/// the field and says what is wrong.
#[tokio::test]
async fn invalid_pools_are_refused_with_clear_errors() -> TestResult {
    let plane = plane().await?;
    let ns = plane.namespace("lbp-invalid").await?;
    let cases = [
        (
            "both",
            "  backends:\n    - { service: { name: web, port: 80 }, address: 10.0.0.1:80 }\n",
            "spec.backends[0]: Invalid value: a backend names exactly one of service or address",
        ),
        (
            "neither",
            "  backends:\n    - { weight: 3 }\n",
            "spec.backends[0]: Invalid value: a backend names exactly one of service or address",
        ),
        (
            "heavy",
            "  backends:\n    - { address: 10.0.0.1:80, weight: 1000001 }\n",
            "spec.backends[0].weight: Invalid value: 1000001: spec.backends[0].weight in body should be less than or equal to 1000000",
        ),
        (
            "fastest",
            "  backends: []\n  algorithm: Fastest\n",
            "spec.algorithm: Unsupported value: \"Fastest\": supported values: \"WeightedRoundRobin\", \"LeastRequest\", \"Random\", \"ConsistentHash\"",
        ),
        (
            "header",
            "  backends: []\n  sessionAffinity: { type: Header }\n",
            "spec.sessionAffinity: Invalid value: headerName is required when type is Header",
        ),
        (
            "address",
            "  backends:\n    - address: 10.0.0.300:80\n",
            "spec.backends[0].address: Invalid value: \"10.0.0.300:80\": must be an IP address and port",
        ),
        (
            "port",
            "  backends:\n    - service: { name: web, port: 0 }\n",
            "spec.backends[0].service.port: Invalid value: 0: must be a port number (1-65535) or a port name",
        ),
        (
            "retry",
            "  backends: []\n  retries: { retryOn: [404] }\n",
            "spec.retries.retryOn[0]: Invalid value: 404: must be connect-failure, reset, per-try-timeout or a 5xx status",
        ),
        (
            "days",
            "  backends: []\n  timeouts: { connect: 5 days }\n",
            "spec.timeouts.connect: Invalid value: \"5 days\": must be a duration above 0, such as 500ms, 2s or 1m30s",
        ),
        (
            // Fits the pattern, but not in int64 nanoseconds (nor would Rust read it).
            "long",
            "  backends: []\n  timeouts: { idle: 100000000000h }\n",
            "spec.timeouts.idle: Invalid value: \"string\": type conversion error from 'string' to 'google.protobuf.Duration' evaluating rule: must be a duration, such as 500ms, 2s or 1m30s",
        ),
        (
            "zero",
            "  backends: []\n  timeouts: { request: 0s }\n",
            "spec.timeouts.request: Invalid value: \"0s\": must be a duration above 0",
        ),
        (
            "ejection",
            "  backends: []\n  outlierDetection: { baseEjectionTime: 1m, maxEjectionTime: 30s }\n",
            "spec.outlierDetection: Invalid value: maxEjectionTime must not be below baseEjectionTime",
        ),
        (
            "host",
            "  backends: []\n  routes: [{ host: API.example.com }]\n",
            "spec.routes[0].host: Invalid value: \"API.example.com\": spec.routes[0].host in body should match",
        ),
    ];
    let mut failures = Vec::new();
    for (name, spec, expected) in cases {
        let invalid = format!("The LoadBalancerPool \"{name}\" is invalid");
        match plane
            .kubectl_with_input(["apply", "-n", &ns, "-f", "-"], &pool(name, spec))
            .await
        {
            Ok(out) => failures.push(format!("{name}: accepted ({})", out.trim())),
            Err(e) if e.to_string().contains(&invalid) && e.to_string().contains(expected) => {}
            Err(e) => failures.push(format!("{name}: expected {expected:?} in\n  {e}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // kubectl reads YAML 1.1, where a bare `on` is the boolean `true`: that is why the field
    // is `retryOn`, and a pool written with Envoy's bare `on` is refused rather than stored
    // without its retries.
    let bare_on = plane
        .kubectl_with_input(
            ["apply", "-n", &ns, "-f", "-"],
            &pool("bare-on", "  backends: []\n  retries: { on: [503] }\n"),
        )
        .await
        .expect_err("a bare `on` is refused")
        .to_string();
    assert!(
        bare_on.contains("strict decoding error: unknown field \"spec.retries.true\""),
        "{bare_on}"
    );
    Ok(())
}

/// `kubectl explain` reads the schema's descriptions: what a backend is and how its weight
/// works.
#[tokio::test]
async fn kubectl_explain_documents_the_fields() -> TestResult {
    let plane = plane().await?;
    let backends = plane.kubectl(["explain", "lbp.spec.backends"]).await?;
    for expected in [
        "GROUP:      weir.dev",
        "KIND:       LoadBalancerPool",
        "VERSION:    v1alpha1",
        "Where requests go: Services, whose ready endpoints become targets",
        "address\t<string>",
        "A static target, IP address and port",
        "service\t<Object>",
        "weight\t<integer>",
        "Gateway API semantics",
    ] {
        assert!(
            backends.contains(expected),
            "{expected:?} not in\n{backends}"
        );
    }
    let spec = plane.kubectl(["explain", "lbp.spec"]).await?;
    for expected in [
        "backends\t<[]Object> -required-",
        "healthCheck\t<Object>",
        "sessionAffinity\t<Object>",
        "Active HTTP health checks of every target",
    ] {
        assert!(spec.contains(expected), "{expected:?} not in\n{spec}");
    }
    let algorithm = plane.kubectl(["explain", "lbp.spec.algorithm"]).await?;
    assert!(algorithm.contains("ConsistentHash"), "{algorithm}");
    Ok(())
}

/// `kubectl get lbp` (and the `weir` category) shows routes, healthy/total targets,
/// synced/connected data planes, Programmed and age from the status; conditions are a list
/// keyed by type, so two field managers can each own one.
#[tokio::test]
async fn kubectl_get_shows_the_status_columns() -> TestResult {
    let plane = plane().await?;
    let ns = plane.namespace("lbp-get").await?;
    plane
        .kubectl_with_input(["apply", "-n", &ns, "-f", "-"], DESIGN_POOL)
        .await?;

    let pools = Api::<LoadBalancerPool>::namespaced(plane.client(), &ns);
    let generation = pools.get("users").await?.metadata.generation;
    let status = |conditions: serde_json::Value| {
        json!({
            "apiVersion": "weir.dev/v1alpha1",
            "kind": "LoadBalancerPool",
            "status": {
                "observedGeneration": generation,
                "routes": "api.example.com/api/v1/users",
                "targets": { "total": 12, "ready": 11, "healthy": 10 },
                "dataPlanes": { "connected": 3, "synced": 2 },
                "conditions": conditions,
            },
        })
    };
    let condition = |kind: &str, status: &str, reason: &str| Condition {
        type_: kind.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message: String::new(),
        last_transition_time: Time(k8s_openapi::jiff::Timestamp::now()),
        observed_generation: generation,
    };
    pools
        .patch_status(
            "users",
            &PatchParams::apply("weir-test-controller"),
            &Patch::Apply(status(json!([
                condition(condition::ACCEPTED, "True", condition::reason::ACCEPTED),
                condition(condition::PROGRAMMED, "False", condition::reason::PENDING),
            ]))),
        )
        .await?;
    // Another manager owns another entry of the list: both stay.
    pools
        .patch_status(
            "users",
            &PatchParams::apply("weir-test-other"),
            &Patch::Apply(json!({
                "apiVersion": "weir.dev/v1alpha1",
                "kind": "LoadBalancerPool",
                "status": { "conditions": [
                    condition(condition::RESOLVED_REFS, "True", condition::reason::RESOLVED_REFS),
                ] },
            })),
        )
        .await?;
    let read = pools.get_status("users").await?;
    let status = read.status.ok_or("no status")?;
    let mut kinds: Vec<_> = status.conditions.iter().map(|c| c.type_.as_str()).collect();
    kinds.sort_unstable();
    assert_eq!(kinds, ["Accepted", "Programmed", "ResolvedRefs"]);

    let table = plane.kubectl(["get", "lbp", "-n", &ns]).await?;
    let lines: Vec<Vec<&str>> = table
        .lines()
        .map(|l| {
            l.split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .collect()
        })
        .collect();
    let (header, row) = (&lines[0][..], &lines[1][..]);
    assert_eq!(
        header,
        [
            "NAME",
            "ROUTES",
            "HEALTHY",
            "TARGETS",
            "SYNCED",
            "DATA PLANES",
            "PROGRAMMED",
            "AGE"
        ],
        "{table}"
    );
    assert_eq!(
        row[..7],
        [
            "users",
            "api.example.com/api/v1/users",
            "10",
            "12",
            "2",
            "3",
            "False"
        ],
        "{table}"
    );
    // Ready has priority 1: only in the wide output.
    let wide = plane
        .kubectl(["get", "weir", "-n", &ns, "-o", "wide"])
        .await?;
    assert!(
        wide.lines().next().is_some_and(|h| h.contains(" READY ")),
        "{wide}"
    );
    assert!(
        wide.lines().nth(1).is_some_and(|r| r.starts_with("users ")),
        "{wide}"
    );
    Ok(())
}
