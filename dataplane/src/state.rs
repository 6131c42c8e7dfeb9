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
    /// Held by every change of configuration, so two of them cannot lose each other's edit.
    /// The pools in force are the snapshot's: they are held nowhere else.
    changing: Mutex<()>,
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
        let snapshot = registry.build(&registry.share(pools));
        Self {
            snapshot: ArcSwap::from_pointee(snapshot),
            registry,
            listener: ListenerStats::default(),
            settings,
            started: StdInstant::now(),
            access_log: None,
            changing: Mutex::default(),
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

    /// Replaces the whole configuration with `pools` (already validated together). A pool
    /// that is the same `Arc` as one in force keeps its compiled state (balancer position,
    /// hash tables); any other is compiled afresh.
    pub fn apply(&self, pools: &[Arc<Pool>]) {
        let _changing = self.changing();
        self.snapshot.store(Arc::new(self.registry.build(pools)));
    }

    /// Replaces the whole configuration with a pools file's (already validated). A pool
    /// equal to the one of its name in force keeps that one's compiled state.
    pub fn apply_file(&self, file: PoolsFile) {
        let _changing = self.changing();
        let pools = self.registry.share(file);
        self.snapshot.store(Arc::new(self.registry.build(&pools)));
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
    pub fn pools(&self) -> Vec<Arc<Pool>> {
        let snapshot = self.snapshot.load();
        snapshot.pools.iter().map(|p| p.config.clone()).collect()
    }

    /// The pool named `name` in force, admin changes included.
    pub fn pool(&self, name: &str) -> Option<Arc<Pool>> {
        let snapshot = self.snapshot.load();
        let pool = snapshot.pools.iter().find(|p| p.config.name == name)?;
        Some(pool.config.clone())
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
        let _changing = self.changing();
        let mut pools = self.pools();
        let (index, current) = pools
            .iter()
            .enumerate()
            .find(|(_, p)| p.name == name)
            .ok_or_else(|| ChangeError::NoSuchPool(name.to_owned()))?;
        // Only the pool changed is copied; the others stay the Arcs in force, so they keep
        // their compiled state.
        let mut changed = Pool::clone(current);
        change(&mut changed)?;
        edit::validate(&changed, index)?;
        pools[index] = Arc::new(changed);
        self.snapshot.store(Arc::new(self.registry.build(&pools)));
        Ok(())
    }

    fn changing(&self) -> MutexGuard<'_, ()> {
        self.changing.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The first pool of `yaml`, a pools file that must be valid, compiled as the proxy serves it:
/// for unit tests of what reads a compiled pool.
#[cfg(test)]
pub fn compiled_pool(yaml: &str) -> Arc<PoolState> {
    let file: PoolsFile = serde_yaml::from_str(yaml).expect("a pools file");
    file.validate().expect("a valid pools file");
    State::new(ProxySettings::default(), file)
        .snapshot
        .load()
        .pools[0]
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> State {
        let file: PoolsFile = serde_yaml::from_str(
            "pools:\n  - name: a\n    routes: [{ host: a.example }]\n    targets: [{ address: 127.0.0.1:9001 }]\n  \
             - name: b\n    routes: [{ host: b.example }]\n    targets: [{ address: 127.0.0.1:9002 }]\n",
        )
        .unwrap();
        State::new(ProxySettings::default(), file)
    }

    #[tokio::test(start_paused = true)]
    async fn an_admin_edit_recompiles_the_edited_pool_alone_and_the_pools_in_force_show_it() {
        let state = state();
        let before = state.snapshot.load_full();
        let address = "127.0.0.1:9002".parse().unwrap();
        state.set_weight("b", address, 4).unwrap();
        let after = state.snapshot.load_full();
        assert!(
            Arc::ptr_eq(&before.pools[0], &after.pools[0]),
            "pool a kept"
        );
        assert!(
            !Arc::ptr_eq(&before.pools[1], &after.pools[1]),
            "pool b recompiled"
        );
        assert_eq!(state.pool("b").unwrap().targets[0].weight, 4);
        assert!(
            Arc::ptr_eq(&state.pools()[1], &after.pools[1].config),
            "the pools in force are the compiled ones, held once"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_edit_that_makes_a_pool_invalid_is_refused_by_its_path_and_changes_nothing() {
        let state = state();
        let before = state.snapshot.load_full();
        let address = "127.0.0.1:9002".parse().unwrap();
        let e = state.set_weight("b", address, 1_000_001).unwrap_err();
        assert!(
            e.to_string().starts_with("pools[1].targets[0].weight: "),
            "{e}"
        );
        assert!(Arc::ptr_eq(&before, &state.snapshot.load_full()));
        state.set_managed();
        let e = state.remove_target("a", address).unwrap_err();
        assert!(matches!(e, ChangeError::Managed), "{e}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_reloaded_file_keeps_the_pools_it_did_not_change() {
        let state = state();
        let before = state.snapshot.load_full();
        let file: PoolsFile = serde_yaml::from_str(
            "pools:\n  - name: a\n    routes: [{ host: a.example }]\n    targets: [{ address: 127.0.0.1:9001 }]\n  \
             - name: b\n    routes: [{ host: b.example }]\n    targets: [{ address: 127.0.0.1:9003 }]\n",
        )
        .unwrap();
        state.apply_file(file);
        let after = state.snapshot.load_full();
        assert!(
            Arc::ptr_eq(&before.pools[0], &after.pools[0]),
            "pool a kept"
        );
        assert!(
            !Arc::ptr_eq(&before.pools[1], &after.pools[1]),
            "pool b changed"
        );
        assert_eq!(after.generation, before.generation + 1);
    }
}
