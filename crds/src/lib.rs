//! Weir's Kubernetes API: the `LoadBalancerPool` custom resource (`weir.dev/v1alpha1`, short
//! name `lbp`).
//!
//! Start with [`LoadBalancerPoolSpec`]: a pool's routes, its [`Backend`]s (Services or static
//! addresses, each with a Gateway-API weight) and the balancing and resilience settings, which
//! are the contract's own types from `weir-api`, so that a pool reads the same in Kubernetes and
//! in a standalone pools file. [`LoadBalancerPoolStatus`] is what the controller reports, with
//! the conditions of [`condition`]. The schema's checks beyond the types are in `schema.rs`.
//!
//! The CRD is generated from these types: [`crd_yaml`] is what the `crdgen` binary prints and
//! what `crds/loadbalancerpool.yaml` holds; a test fails when the two drift apart. The
//! controller compiles a pool into the contract's `weir_api::Pool`; this crate knows nothing of
//! EndpointSlices.

use kube::CustomResourceExt;

mod pool;
mod schema;
mod status;

pub use pool::{Backend, LoadBalancerPool, LoadBalancerPoolSpec, ServiceBackend};
pub use schema::{MAX_BACKENDS, MAX_ROUTES};
pub use status::{DataPlaneCounts, LoadBalancerPoolStatus, TargetCounts, condition};

/// The command that regenerates the checked-in CRD, from the repository root.
pub const REGENERATE: &str = "cargo run -p weir-crds --bin crdgen > crds/loadbalancerpool.yaml";

/// The `LoadBalancerPool` CRD as YAML, with a header saying how it was made.
///
/// serde-saphyr quotes what YAML 1.1 readers (kubectl) would take for another type, such as
/// `on`, `yes` or `no` in enums and descriptions.
pub fn crd_yaml() -> String {
    let yaml = serde_saphyr::to_string(&LoadBalancerPool::crd()).expect("a CRD serializes to YAML");
    format!("# Generated from crds/src by `{REGENERATE}`; do not edit.\n{yaml}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checked_in_crd_matches_the_types() {
        let checked_in = include_str!("../loadbalancerpool.yaml");
        assert!(
            checked_in == crd_yaml(),
            "crds/loadbalancerpool.yaml is out of date with the types in crds/src; regenerate \
             it from the repository root with:\n    {REGENERATE}"
        );
    }
}
