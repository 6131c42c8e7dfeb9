//! The contract between Weir's controller and its data planes.
//!
//! A data plane needs to know which requests a pool takes ([`Route`]), how to spread them
//! ([`Algorithm`], [`SessionAffinity`]) and where they go ([`Target`]): nothing of Kubernetes.
//! The controller compiles each `LoadBalancerPool` into a [`Pool`]; a standalone data plane reads
//! the same type from its pools file, so field names match the CRD's spec on purpose.
//!
//! Start with [`Pool`], then [`Pool::validate`], which every producer and consumer of a pool runs
//! so that an invalid pool is refused with the path of the offending field. The messages of
//! the channel that carries pools from the controller to data planes are in [`channel`].

pub mod channel;
mod duration;
mod pool;
mod resilience;
pub mod selector;
mod validate;

pub use duration::{Duration, ParseDurationError};
pub use pool::{
    AccessLog, AffinityKind, Algorithm, Pool, PoolsFile, Route, SessionAffinity, Target, Timeouts,
    Upstream, UpstreamProtocol,
};
pub use resilience::{
    CircuitBreaker, HealthCheck, OutlierDetection, Retries, RetryOn, SlowStart, StatusRange,
};
pub use validate::{FieldError, MAX_WEIGHT, is_dns_label};
