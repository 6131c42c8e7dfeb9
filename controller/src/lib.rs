//! Weir's Kubernetes controller: it watches `LoadBalancerPool`s (crate `weir-crds`) and the
//! Services and EndpointSlices their backends name, compiles each pool into the contract's
//! `weir_api::Pool` and serves those to the data planes over the JSON channel.
//!
//! Start with [`targets::compile`], the pure heart of it: a pool and the Services and
//! EndpointSlices of its namespace in, the pool the data planes serve (targets as address and
//! weight, Gateway-API weights split across ready endpoints) and a [`targets::Report`] of how
//! each backend resolved out, which the status's `targets` and `ResolvedRefs` are made of. It
//! is unit-tested with plain values, without an API server.

pub mod targets;

#[cfg(test)]
mod fixtures;
