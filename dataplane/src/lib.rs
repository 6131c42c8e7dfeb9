//! Weir's data plane: a hyper load-balancing proxy.
//!
//! The binary (`main.rs`) parses [`settings::Args`], builds a [`state::State`] and runs
//! [`server::serve`] beside the [`admin`] listener. Each request goes through
//! [`proxy::serve`]: [`router`] finds the pool, [`balance`] picks a target, [`headers`]
//! rewrites the header block and the pooled [`upstream`] client forwards it; every failure
//! becomes one status in [`error`]. Configuration lives in [`state`], swapped atomically on
//! every change so readers never lock; in standalone mode it comes from a pools file
//! ([`config_file`], reloaded by [`reload`]). Counters are in [`stats`], exported by
//! [`metrics`]; each request's line in the [`access_log`] is written off the request path.
//!
//! # The request path is plain functions, not tower layers
//!
//! [`proxy::serve`] checks, routes and answers; inside [`proxy`], `forward` runs the pool's
//! limits and the tries (`attempts`, a state machine whose every decision is unit-tested),
//! each to a target `select` chose, and `respond` hands the target's response on. They are
//! async functions calling each other, not a stack of tower `Layer`s, for these reasons:
//!
//! - **One status per error, in one place.** Every failure, from any step, comes back to
//!   `serve` as one [`error::ProxyError`] that knows its status, its culprit and whether a
//!   retry is safe, and is answered and counted there. Layers would each turn their failure
//!   into a response or a `BoxError` that the outer ones downcast to find out who failed.
//! - **A try is not a request.** Retries, the per-try timeout, breakers and outlier
//!   ejection read and write the pool's shared state (its retry budget, every target's
//!   health, the share already ejected) and the request's own scratch (targets tried, the
//!   body buffered or streamed, the request the connection handed back unsent). tower's
//!   `Retry` clones the request for every try, which a streamed body cannot be, and its
//!   `Timeout` cannot start the per-try clock when the client's body has ended rather than
//!   when the try began (so a slow upload is not taken for a slow target).
//! - **Backpressure is per target, decided inside the request.** `poll_ready` cannot say
//!   which target is full before the target is chosen; the pool's limits are counters read
//!   at the moment of choice and refused with 503 naming the limit.
//! - **Nothing boxed, one path.** hyper serves HTTP/1.1 and HTTP/2 through one `service_fn`
//!   calling `serve`, monomorphised once: no boxed service or future per layer, no `dyn`
//!   call per step, and only `tower-service` (hyper-util's) in the dependency tree. The
//!   service is generic over the request body so tests call it in-process
//!   (`tests/service.rs`), which is what a tower stack's `oneshot` would have given.
//!
//! What the ecosystem's middleware would add (authentication, rate limits) can still wrap
//! `serve` as layers at the listener, outside the tries.

pub mod access_log;
pub mod admin;
pub mod affinity;
pub mod balance;
pub mod body;
pub mod channel;
pub mod checker;
pub mod config_file;
pub mod error;
pub mod hash;
pub mod headers;
pub mod health;
pub mod metrics;
pub mod proxy;
pub mod reload;
pub mod retry;
pub mod router;
pub mod server;
pub mod settings;
pub mod state;
pub mod stats;
pub mod upstream;
pub mod validate;
