//! What Weir's test harnesses and its benchmark share: Weir's programs as child processes,
//! what they say when they start, HTTP clients, tallies of which backend answered, and
//! bounded waits.
//!
//! Three harnesses use it: the data plane's loopback tests (`dataplane/tests/proxy/`, which add
//! pools files), the end-to-end tests (`tests/`, `weir-e2e`, which add a Kubernetes control
//! plane and `weir-controller`) and the benchmark (`bench/`, which starts its processes its own
//! way and shares the startup lines, the binary check and [`TempDir`]). What only one of them
//! needs stays there.
//!
//! Start with [`Echo`] (a `weir-echo` backend), [`DataPlane`] (a `weir-dataplane` on ports of
//! its choosing) and [`Process`] (any child, killed when dropped, its stderr collected and
//! printed when the test panics), then [`send`] and [`Tally`].
//!
//! The rules every harness keeps, written once here:
//! - **No port is picked by a test** and released for a process to bind: a released port can
//!   be taken meanwhile by any listener on the machine (under load a proxy's admin listener
//!   took the port a test had meant to refuse connections). Processes bind port 0 and the
//!   harness reads the ports from their startup line ([`startup`]); an address that must refuse
//!   connections is a socket kept bound without listening ([`Refusing`]).
//! - **No stale binary**: [`binary`] refuses one older than its sources or built from another
//!   checkout, with the command that builds it.
//! - **Every wait is bounded** in time, and every process is killed when its handle drops.
//!
//! This crate must never depend on `kube` or `k8s-openapi`, directly or through another
//! crate: the data plane's tests use it, and the data plane never links a Kubernetes client
//! (`.ci/run` checks both).

mod binary;
mod dataplane;
mod echo;
mod http;
mod load;
mod net;
mod process;
pub mod startup;
mod tally;
mod temp;
mod wait;

pub use binary::{binary, check_built};
pub use dataplane::{DataPlane, dataplane_command};
pub use echo::{Echo, seen_header, seen_headers};
pub use http::{HttpClient, REQUEST_BOUND, Reply, exchange, get, h2c, http1, metric, send};
pub use load::{Stop, load, load_at_rate};
pub use net::Refusing;
pub use process::{Log, Process, START_BOUND, weir_env};
pub use tally::{Answer, Tally};
pub use temp::TempDir;
pub use wait::eventually;
