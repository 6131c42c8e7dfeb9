//! The running configuration: compiled from pools, swapped atomically, read lock-free.
//!
//! A [`Snapshot`] is immutable; every change (a reload, an admin call, a push from the
//! controller) builds a new one and swaps it in, so a request sees one consistent
//! configuration from routing to response. Counters and upstream clients live in the
//! [`Registry`] and carry over from one snapshot to the next.
//!
//! This module is the store and the process's flags; the rest is in its parts, each
//! depending only on those listed before it: the admin API's edits (`edit`), compiling pools
//! into a snapshot (`compile`), and the balancing policy the request path applies to a
//! compiled pool (`policy`: usable targets, panic mode, slow start, ejection limits).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant as StdInstant;

use arc_swap::ArcSwap;
use tokio::time::Instant;
use weir_api::{Pool, PoolsFile, Target};

use crate::access_log::AccessLog;
use crate::settings::ProxySettings;
use crate::stats::ListenerStats;

mod compile;
mod edit;
mod policy;

pub use compile::{Affinity, PoolState, Registry, Snapshot, TargetState};
pub use edit::ChangeError;
pub use policy::Candidates;

/// Everything the proxy and admin listeners share.
#[derive(Debug)]
pub struct State {
    /// The configuration requests are served with.
    pub snapshot: ArcSwap<Snapshot>,
    /// Counters and clients that outlive snapshots.
    pub registry: Registry,
    /// Process-wide counters.
    pub listener: ListenerStats,
    /// Listener-level limits and behaviour.
    pub settings: ProxySettings,
    /// When the process started.
    pub started: StdInstant,
    /// Where each request's line goes, when there is an access log.
    pub access_log: Option<Arc<AccessLog>>,
    /// The pools the snapshot was built from, with admin changes applied; changes are made
    /// under this lock so two of them cannot lose each other's edit.
    desired: Mutex<PoolsFile>,
    /// Set once the first configuration is in place (`/ready`).
    ready: AtomicBool,
    /// Set on SIGTERM, so `/ready` fails and load balancers in front stop sending.
    draining: AtomicBool,
    /// Set when pools come from the controller, which then owns them: the admin API's target
    /// changes are refused.
    managed: AtomicBool,
}

impl State {
    /// A state serving `pools` (already validated).
    pub fn new(settings: ProxySettings, pools: PoolsFile) -> Self {
        let registry = Registry::default();
        let snapshot = registry.build(&pools);
        Self {
            snapshot: ArcSwap::from_pointee(snapshot),
            registry,
            listener: ListenerStats::default(),
            settings,
            started: StdInstant::now(),
            access_log: None,
            desired: Mutex::new(pools),
            ready: false.into(),
            draining: false.into(),
            managed: false.into(),
        }
    }

    /// The same state, writing an access log to `log`.
    pub fn with_access_log(mut self, log: Option<Arc<AccessLog>>) -> Self {
        self.access_log = log;
        self
    }

    /// Replaces the whole configuration with `pools` (already validated).
    pub fn apply(&self, pools: PoolsFile) {
        let mut desired = self.desired();
        self.snapshot.store(Arc::new(self.registry.build(&pools)));
        *desired = pools;
    }

    /// Marks the data plane ready to take traffic.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    /// Whether a configuration is in place and the process is not draining.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) && !self.is_draining()
    }

    /// Marks the process as draining: still serving, but asking to be taken out of rotation.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Whether SIGTERM has been received.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Periodic upkeep: re-evaluates each pool's panic mode and closes idle target
    /// connections past their idle timeout.
    pub fn maintain(&self) {
        let now = Instant::now();
        for pool in &self.snapshot.load().pools {
            pool.evaluate_panic(now);
            pool.rebalance(now);
            pool.targets.iter().for_each(|t| t.client.sweep());
        }
    }

    /// The pools in force, admin changes included.
    pub fn pools(&self) -> PoolsFile {
        self.desired().clone()
    }

    /// The pool named `name` in force, admin changes included.
    pub fn pool(&self, name: &str) -> Option<Pool> {
        self.desired()
            .pools
            .iter()
            .find(|p| p.name == name)
            .cloned()
    }

    /// Marks the pools as the controller's.
    pub fn set_managed(&self) {
        self.managed.store(true, Ordering::Release);
    }

    /// Whether the pools come from the controller.
    pub fn is_managed(&self) -> bool {
        self.managed.load(Ordering::Acquire)
    }

    /// Adds `target` to `pool`.
    pub fn add_target(&self, pool: &str, target: Target) -> Result<(), ChangeError> {
        self.change_pool(pool, |p| edit::add_target(p, target))
    }

    /// Removes the target at `address` from `pool`.
    pub fn remove_target(&self, pool: &str, address: SocketAddr) -> Result<(), ChangeError> {
        self.change_pool(pool, |p| edit::remove_target(p, address))
    }

    /// Sets the weight of the target at `address` in `pool`.
    pub fn set_weight(
        &self,
        pool: &str,
        address: SocketAddr,
        weight: u32,
    ) -> Result<(), ChangeError> {
        self.change_pool(pool, |p| edit::set_weight(p, address, weight))
    }

    fn change_pool(
        &self,
        name: &str,
        change: impl FnOnce(&mut Pool) -> Result<(), ChangeError>,
    ) -> Result<(), ChangeError> {
        if self.is_managed() {
            return Err(ChangeError::Managed);
        }
        let mut desired = self.desired();
        let mut next = desired.clone();
        let pool = next
            .pools
            .iter_mut()
            .find(|p| p.name == name)
            .ok_or_else(|| ChangeError::NoSuchPool(name.to_owned()))?;
        change(pool)?;
        next.validate()?;
        self.snapshot.store(Arc::new(self.registry.build(&next)));
        *desired = next;
        Ok(())
    }

    fn desired(&self) -> MutexGuard<'_, PoolsFile> {
        self.desired.lock().unwrap_or_else(|p| p.into_inner())
    }
}
