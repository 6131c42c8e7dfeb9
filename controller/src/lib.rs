//! Weir's Kubernetes controller: it watches `LoadBalancerPool`s (crate `weir-crds`) and the
//! Services and EndpointSlices their backends name, compiles each pool into the contract's
//! `weir_api::Pool`, serves those to the data planes over the JSON channel, and writes what
//! the data planes report back into each pool's status.
//!
//! Start with [`targets::compile`], the pure heart of it: a pool and the Services and
//! EndpointSlices of its namespace in, the pool the data planes serve (targets as address and
//! weight, Gateway-API weights split across ready endpoints) and a [`targets::Report`] of how
//! each backend resolved out, which the status's `targets` and `ResolvedRefs` are made of. It
//! is unit-tested with plain values, without an API server.
//!
//! Then, around it:
//! - [`controller`]: kube-runtime's `Controller`, [`controller::reconcile`] and its
//!   [`controller::Context`]; it stages compiled pools in the [`hub::Hub`] and writes status.
//! - [`hub`]: the revisioned pools, their change log and the coalescing of changes.
//! - [`channel`]: the HTTP server data planes stream from and report to, with [`auth`] and
//!   [`selector`]; [`dataplanes`] keeps what they report.
//! - [`status`]: a pool's status and Events as a pure function of what is known.
//! - [`leader`]: the Lease election that picks the one replica writing status, and [`relay`],
//!   which sends reports that reach the other replicas on to it.
//! - [`trim`]: what the caches keep of each watched object; [`endpoints`]: EndpointSlices,
//!   compact and indexed by Service; [`pools`]: pools indexed by the Services they name; both
//!   indexes follow their watcher through [`relist`].
//! - [`config`] and [`metrics`]: the binary's flags and its Prometheus listener; [`serve`]:
//!   the accept loop of both listeners.

pub mod auth;
pub mod channel;
pub mod config;
pub mod controller;
pub mod dataplanes;
pub mod endpoints;
pub mod hub;
pub mod leader;
pub mod metrics;
pub mod pools;
pub mod relay;
pub mod relist;
pub mod serve;
/// Label selectors, shared with the data plane, which checks its own at startup.
pub use weir_api::selector;
pub mod status;
pub mod targets;
pub mod trim;

#[cfg(test)]
mod fixtures;
