//! What the controller reports about a pool, in its status subresource, and the Gateway API
//! condition vocabulary it reports in.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The pool as the controller and the data planes see it.
///
/// Written by the controller only, through the status subresource with server-side apply.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = crate::schema::reflow)]
pub struct LoadBalancerPoolStatus {
    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The routes the pool takes, host and path prefix, comma-separated; what
    /// `kubectl get lbp` shows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routes: Option<String>,
    /// Targets resolved from the backends, and how many of them are usable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub targets: Option<TargetCounts>,
    /// Data planes connected to the controller, and how many run the current generation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_planes: Option<DataPlaneCounts>,
    /// The latest observations of the pool's state: Accepted (the spec is valid), ResolvedRefs
    /// (every backend resolved) and Programmed (every connected data plane applied the current
    /// generation), each with the generation it was observed at.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    #[schemars(length(max = 8))]
    pub conditions: Vec<Condition>,
}

/// Counts of a pool's targets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetCounts {
    /// Endpoints of the backends' Services, ready or not, and static addresses.
    pub total: u32,
    /// Targets ready to take traffic, by their EndpointSlice conditions (static addresses
    /// always are).
    pub ready: u32,
    /// Ready targets the data planes find healthy (health checks passing, not ejected, breaker
    /// closed).
    pub healthy: u32,
}

/// Counts of the data planes serving a pool.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DataPlaneCounts {
    /// Data planes connected to the controller that serve this pool.
    pub connected: u32,
    /// Connected data planes that applied the pool's current generation.
    pub synced: u32,
}

/// Condition types and reasons, in Gateway API's vocabulary.
pub mod condition {
    /// The spec is valid and the pool does not conflict with another.
    pub const ACCEPTED: &str = "Accepted";
    /// Every backend resolved: its Service and port exist, or its address is valid.
    pub const RESOLVED_REFS: &str = "ResolvedRefs";
    /// Every connected data plane applied the pool's current generation.
    pub const PROGRAMMED: &str = "Programmed";

    /// Reasons a condition gives for its status.
    pub mod reason {
        /// `Accepted=True`.
        pub const ACCEPTED: &str = "Accepted";
        /// `Accepted=False`: the spec is invalid (a check the schema cannot express failed).
        pub const INVALID: &str = "Invalid";
        /// `Accepted=False`: a route is already taken by another pool.
        pub const ROUTE_CONFLICT: &str = "RouteConflict";
        /// `ResolvedRefs=True`.
        pub const RESOLVED_REFS: &str = "ResolvedRefs";
        /// `ResolvedRefs=False`: a Service, or a port of it, does not exist.
        pub const BACKEND_NOT_FOUND: &str = "BackendNotFound";
        /// `ResolvedRefs=False`: a backend cannot be used (an ExternalName Service, a non-TCP
        /// port, an address that is not an IP address and port).
        pub const UNSUPPORTED_BACKEND: &str = "UnsupportedBackend";
        /// `Programmed=True`.
        pub const PROGRAMMED: &str = "Programmed";
        /// `Programmed=False` or `Unknown`: not every data plane applied the generation yet.
        pub const PENDING: &str = "Pending";
        /// `Programmed=False`: a data plane refused the pool.
        pub const REJECTED: &str = "Rejected";
        /// `Programmed=False`: no data plane is connected.
        pub const NO_DATA_PLANES: &str = "NoDataPlanes";
    }
}
