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
