//! Weir's data plane: a hyper load-balancing proxy.
//!
//! Start with [`run`]: it binds the proxy and admin listeners and serves until SIGTERM. Each
//! request goes through [`proxy`]: [`router`] finds the pool, [`balance`] picks a target,
//! [`headers`] rewrites the header block and the pooled [`upstream`] client forwards it.
//! Configuration lives in [`state`], swapped atomically on every change so readers never lock;
//! in standalone mode it comes from a pools file ([`config_file`], reloaded by [`reload`]).
//! [`admin`] serves metrics, status and the target API.

pub mod balance;
pub mod config_file;
pub mod hash;
pub mod headers;
pub mod router;
