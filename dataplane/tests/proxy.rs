//! Loopback integration tests of the data plane: the real `weir-dataplane` binary in front of
//! real `weir-echo` backends, each test with its own processes on its own 127.0.0.1 ports.
//!
//! Every test reads as one line of the specification and prints the figures it saw
//! (`cargo test -p weir-dataplane --test proxy -- --nocapture`). `weir-echo` must be built
//! first: `cargo test --workspace` does it, or `cargo build -p weir-echo`.
//!
//! A test crate's root looks for its modules beside itself, so each is named with `#[path]`
//! to keep them together in `tests/proxy/`.

#[path = "proxy/support.rs"]
mod support;

#[path = "proxy/access_log.rs"]
mod access_log;
#[path = "proxy/admin.rs"]
mod admin;
#[path = "proxy/affinity.rs"]
mod affinity;
#[path = "proxy/balancing.rs"]
mod balancing;
#[path = "proxy/battery.rs"]
mod battery;
#[path = "proxy/blame.rs"]
mod blame;
#[path = "proxy/channel.rs"]
mod channel;
#[path = "proxy/failures.rs"]
mod failures;
#[path = "proxy/h2_abuse.rs"]
mod h2_abuse;
#[path = "proxy/h2_wire.rs"]
mod h2_wire;
#[path = "proxy/headers.rs"]
mod headers;
#[path = "proxy/lifecycle.rs"]
mod lifecycle;
#[path = "proxy/limits.rs"]
mod limits;
#[path = "proxy/malformed.rs"]
mod malformed;
#[path = "proxy/reload.rs"]
mod reload;
#[path = "proxy/resilience.rs"]
mod resilience;
#[path = "proxy/routing.rs"]
mod routing;
#[path = "proxy/upgrade.rs"]
mod upgrade;
