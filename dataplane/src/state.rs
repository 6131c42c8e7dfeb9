//! The running configuration: compiled from pools, swapped atomically, read lock-free.
//!
//! A [`Snapshot`] is immutable; every change (a reload, an admin call, later a push from the
//! controller) builds a new one and swaps it in, so a request sees one consistent
//! configuration from routing to response. Counters and upstream clients live in the
//! [`Registry`] and carry over from one snapshot to the next.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant as StdInstant;

use tokio::time::Instant;

use arc_swap::ArcSwap;
use http::HeaderValue;
use http::header::HeaderName;
use http::uri::Authority;
use weir_api::{AffinityKind, Algorithm, Pool, PoolsFile, Target};

use crate::access_log::AccessLog;
use crate::affinity::{cookie_id, set_cookie};
use crate::balance::{Balancer, Load, Maglev, Weighted};
use crate::checker::Checker;
use crate::health::{self, Condition, Policy, TargetHealth};
use crate::router::Router;
use crate::settings::ProxySettings;
use crate::stats::{ListenerStats, PoolStats, TargetStats};
use crate::upstream::{ClientSettings, TargetPool};

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
    ready: std::sync::atomic::AtomicBool,
    /// Set on SIGTERM, so `/ready` fails and load balancers in front stop sending.
    draining: std::sync::atomic::AtomicBool,
    /// Set when pools come from the controller, which then owns them: the admin API's target
    /// changes are refused.
    managed: std::sync::atomic::AtomicBool,
}

/// One immutable, compiled configuration.
#[derive(Debug)]
pub struct Snapshot {
    /// Routes to indexes into `pools`.
    pub router: Router<usize>,
    /// The pools.
    pub pools: Vec<Arc<PoolState>>,
    /// Counts configurations applied since start.
    pub generation: u64,
}

/// A pool, compiled.
#[derive(Debug)]
pub struct PoolState {
    /// The pool as configured.
    pub config: Pool,
    /// Its targets, in configuration order.
    pub targets: Vec<TargetState>,
    /// The selector, rebuilt by [`PoolState::rebalance`] when targets leave or rejoin the
    /// usable set or ramp up under slow start, so shares stay exact among usable targets.
    pub balancer: ArcSwap<Balancer>,
    /// The effective weights the balancer was last built with.
    effective: Mutex<Vec<u32>>,
    /// Session affinity, compiled.
    pub affinity: Affinity,
    /// Counters of the pool.
    pub stats: Arc<PoolStats>,
}

/// A target, compiled.
#[derive(Debug)]
pub struct TargetState {
    /// Share of traffic; 0 drains.
    pub weight: u32,
    /// The address as a URI authority, ready for the upstream request.
    pub authority: Authority,
    /// `Set-Cookie` value that pins a client to this target, for cookie affinity.
    pub set_cookie: Option<HeaderValue>,
    /// Counters of the target.
    pub stats: Arc<TargetStats>,
    /// Connections to the target.
    pub pool: Arc<TargetPool>,
    /// Health of the target.
    pub health: Arc<TargetHealth>,
}

/// Session affinity, compiled for the request path.
#[derive(Debug)]
pub enum Affinity {
    /// None: the balancer decides every request.
    None,
    /// The named cookie's value is a target id.
    Cookie {
        /// Cookie name.
        name: String,
        /// Target index by cookie value.
        by_id: HashMap<u64, usize>,
    },
    /// The named header's value is hashed to a target.
    Header {
        /// Header name.
        name: HeaderName,
        /// Hash table over the targets.
        table: Maglev,
    },
    /// The client's IP is hashed to a target.
    ClientIp {
        /// Hash table over the targets.
        table: Maglev,
    },
}

/// Counters and clients by name, carried across snapshots.
#[derive(Debug, Default)]
pub struct Registry {
    pools: Mutex<HashMap<String, PoolParts>>,
    generation: AtomicU64,
}

#[derive(Debug)]
struct PoolParts {
    stats: Arc<PoolStats>,
    targets: HashMap<SocketAddr, TargetParts>,
    /// The pool as last compiled, reused while its configuration stays the same.
    compiled: Option<Arc<PoolState>>,
}

/// What a target keeps across configurations.
#[derive(Debug)]
struct TargetParts {
    stats: Arc<TargetStats>,
    pool: Arc<TargetPool>,
    health: Arc<TargetHealth>,
    /// Boxed: most targets have none, and the map holds one entry per target.
    checker: Option<Box<Checker>>,
}

/// Why an admin change was refused.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    /// No pool has that name.
    #[error("no pool named {0:?}")]
    NoSuchPool(String),
    /// The pool has no target at that address.
    #[error("pool {pool:?} has no target {address}")]
    NoSuchTarget {
        /// The pool.
        pool: String,
        /// The address.
        address: SocketAddr,
    },
    /// The pool already has a target at that address.
    #[error("pool {pool:?} already has target {address}")]
    TargetExists {
        /// The pool.
        pool: String,
        /// The address.
        address: SocketAddr,
    },
    /// The change would make the pool invalid.
    #[error("{0}")]
    Invalid(#[from] weir_api::FieldError),
    /// The pools come from the controller: change the `LoadBalancerPool` instead.
    #[error("pools come from the controller here: change the LoadBalancerPool instead")]
    Managed,
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
            pool.targets.iter().for_each(|t| t.pool.sweep());
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
        self.change_pool(pool, |p| {
            if p.targets.iter().any(|t| t.address == target.address) {
                return Err(ChangeError::TargetExists {
                    pool: p.name.clone(),
                    address: target.address,
                });
            }
            p.targets.push(target);
            Ok(())
        })
    }

    /// Removes the target at `address` from `pool`.
    pub fn remove_target(&self, pool: &str, address: SocketAddr) -> Result<(), ChangeError> {
        self.change_pool(pool, |p| {
            let before = p.targets.len();
            p.targets.retain(|t| t.address != address);
            if p.targets.len() == before {
                return Err(ChangeError::NoSuchTarget {
                    pool: p.name.clone(),
                    address,
                });
            }
            Ok(())
        })
    }

    /// Sets the weight of the target at `address` in `pool`.
    pub fn set_weight(
        &self,
        pool: &str,
        address: SocketAddr,
        weight: u32,
    ) -> Result<(), ChangeError> {
        self.change_pool(pool, |p| {
            let name = p.name.clone();
            let t = p.targets.iter_mut().find(|t| t.address == address).ok_or(
                ChangeError::NoSuchTarget {
                    pool: name,
                    address,
                },
            )?;
            t.weight = weight;
            Ok(())
        })
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

impl Registry {
    /// Compiles `pools` into a snapshot, reusing the counters and clients of pools and
    /// targets that stay, and forgetting those that went.
    pub fn build(&self, pools: &PoolsFile) -> Snapshot {
        let mut parts = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        let names: std::collections::HashSet<&str> =
            pools.pools.iter().map(|p| p.name.as_str()).collect();
        parts.retain(|name, _| names.contains(name.as_str()));
        // A change to one pool (a channel update, an admin call) recompiles that pool alone:
        // the others keep their compiled state, balancer position and hash tables.
        let compiled: Vec<Arc<PoolState>> = pools
            .pools
            .iter()
            .map(|pool| {
                let reusable = parts
                    .get(&pool.name)
                    .and_then(|p| p.compiled.clone())
                    .filter(|c| c.config == *pool);
                reusable.unwrap_or_else(|| {
                    let fresh = Arc::new(compile(pool, &mut parts));
                    if let Some(p) = parts.get_mut(&pool.name) {
                        p.compiled = Some(fresh.clone());
                    }
                    fresh
                })
            })
            .collect();
        let router = Router::new(compiled.iter().enumerate().flat_map(|(i, p)| {
            p.config
                .routes
                .iter()
                .map(move |r| (r.host.as_str(), r.path_prefix.as_str(), i))
        }));
        Snapshot {
            router,
            pools: compiled,
            generation: self.generation.fetch_add(1, Ordering::Relaxed) + 1,
        }
    }
}

fn compile(pool: &Pool, parts: &mut HashMap<String, PoolParts>) -> PoolState {
    let settings = ClientSettings::of(pool);
    let policy = Arc::new(Policy {
        check: pool.health_check.clone(),
        outlier: pool.outlier_detection.clone(),
        breaker: pool.circuit_breaker.clone(),
        slow_start: pool.slow_start.clone(),
    });
    let pool_name: Arc<str> = pool.name.as_str().into();
    let part = parts.entry(pool.name.clone()).or_insert_with(|| PoolParts {
        stats: Arc::default(),
        targets: HashMap::new(),
        compiled: None,
    });
    part.targets
        .retain(|addr, _| pool.targets.iter().any(|t| t.address == *addr));
    let cookie = pool
        .session_affinity
        .as_ref()
        .filter(|a| a.kind == AffinityKind::Cookie);
    let shared = part.stats.connections.clone();
    let targets: Vec<TargetState> =
        pool.targets
            .iter()
            .map(|t| {
                let new_pool = |stats: &TargetStats| {
                    Arc::new(TargetPool::new(
                        t.address,
                        settings.clone(),
                        stats.active_connections.clone(),
                        shared.clone(),
                    ))
                };
                let parts = part.targets.entry(t.address).or_insert_with(|| {
                    let stats = Arc::new(TargetStats::new(t.address));
                    TargetParts {
                        pool: new_pool(&stats),
                        stats,
                        health: Arc::new(TargetHealth::new(
                            pool_name.clone(),
                            t.address,
                            policy.clone(),
                        )),
                        checker: None,
                    }
                });
                if *parts.pool.settings() != settings {
                    // New connection settings take a new pool; the old one's connections close
                    // as their in-flight requests finish.
                    parts.pool = new_pool(&parts.stats);
                }
                parts.health.configure(&policy);
                if parts.checker.as_ref().map(|c| &c.config) != policy.check.as_ref() {
                    // Dropping the old checker stops it.
                    parts.checker = policy.check.clone().map(|check| {
                        Box::new(Checker::spawn(t.address, check, parts.health.clone()))
                    });
                }
                TargetState {
                    weight: t.weight,
                    authority: Authority::try_from(t.address.to_string())
                        .expect("a socket address is an authority"),
                    set_cookie: cookie
                        .map(|a| set_cookie(a.cookie_name(), cookie_id(t.address), a.ttl)),
                    stats: parts.stats.clone(),
                    pool: parts.pool.clone(),
                    health: parts.health.clone(),
                }
            })
            .collect();
    let ids: Vec<String> = pool.targets.iter().map(|t| t.address.to_string()).collect();
    let weighted: Vec<Weighted<'_>> = ids
        .iter()
        .zip(&pool.targets)
        .map(|(id, t)| Weighted {
            id,
            weight: t.weight,
        })
        .collect();
    let affinity = match &pool.session_affinity {
        None => Affinity::None,
        Some(a) => match a.kind {
            AffinityKind::Cookie => Affinity::Cookie {
                name: a.cookie_name().to_owned(),
                by_id: pool
                    .targets
                    .iter()
                    .enumerate()
                    .map(|(i, t)| (cookie_id(t.address), i))
                    .collect(),
            },
            AffinityKind::Header => Affinity::Header {
                name: HeaderName::try_from(a.header_name.as_deref().unwrap_or_default())
                    .expect("validated header name"),
                table: Maglev::new(&weighted),
            },
            AffinityKind::ClientIp => Affinity::ClientIp {
                table: Maglev::new(&weighted),
            },
        },
    };
    PoolState {
        config: pool.clone(),
        balancer: ArcSwap::from_pointee(Balancer::new(pool.algorithm, &weighted)),
        // In the scale `rebalance` uses: hundredths of a weight.
        effective: Mutex::new(
            pool.targets
                .iter()
                .map(|t| t.weight.saturating_mul(100))
                .collect(),
        ),
        affinity,
        targets,
        stats: part.stats.clone(),
    }
}

/// A pool's targets as one pick sees them: at one instant, without the targets already tried.
#[derive(Debug)]
pub struct Candidates<'a> {
    /// The pool.
    pub pool: &'a PoolState,
    /// The instant of the pick.
    pub now: Instant,
    /// Targets left out (already tried, or refused admission).
    pub exclude: &'a [usize],
}

impl PoolState {
    /// Whether target `i` may take a request at `now`: weighted, and healthy unless the pool
    /// is in panic mode, where health is ignored.
    pub fn usable(&self, i: usize, now: Instant) -> bool {
        let t = &self.targets[i];
        t.weight > 0 && (self.stats.panic.load(Ordering::Relaxed) || t.health.is_usable(now))
    }

    /// Re-evaluates panic mode: fewer than `panicThreshold` percent of the weighted targets
    /// usable. Logs and counts each entry into panic mode.
    pub fn evaluate_panic(&self, now: Instant) {
        let (mut weighted, mut usable) = (0, 0);
        for t in self.targets.iter().filter(|t| t.weight > 0) {
            weighted += 1;
            usable += usize::from(t.health.is_usable(now));
        }
        let panic = health::in_panic(usable, weighted, self.config.panic_threshold);
        let was = self.stats.panic.swap(panic, Ordering::Relaxed);
        if panic && !was {
            self.stats.panics.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                pool = %self.config.name, usable, targets = weighted, threshold = self.config.panic_threshold,
                "panic mode: too few usable targets, balancing across all of them"
            );
        } else if was && !panic {
            tracing::info!(pool = %self.config.name, usable, targets = weighted, "panic mode over");
        }
    }

    /// Rebuilds the balancer when the effective weights moved: 0 for a target that is not
    /// usable, the weight scaled by its slow-start ramp for one that is coming back. Hashing
    /// pools keep their table, where a rebuild would move keys: their picks step over
    /// unusable targets instead, which moves only the keys those targets held.
    pub fn rebalance(&self, now: Instant) {
        if self.config.algorithm == Algorithm::ConsistentHash {
            return;
        }
        let panic = self.stats.panic.load(Ordering::Relaxed);
        let weights: Vec<u32> = self
            .targets
            .iter()
            .map(|t| {
                if !panic && !t.health.is_usable(now) {
                    0
                } else {
                    // Slow start scales in hundredths, so a ramp moves the shares in small steps.
                    let ramp = t.health.weight_factor(now);
                    if ramp < 1.0 {
                        ((f64::from(t.weight) * ramp * 100.0) as u32).max(1)
                    } else {
                        t.weight.saturating_mul(100)
                    }
                }
            })
            .collect();
        let mut effective = self.effective.lock().unwrap_or_else(|p| p.into_inner());
        if weights == *effective {
            return;
        }
        let ids: Vec<String> = self
            .targets
            .iter()
            .map(|t| t.stats.address.to_string())
            .collect();
        let weighted: Vec<Weighted<'_>> = ids
            .iter()
            .zip(&weights)
            .map(|(id, w)| Weighted { id, weight: *w })
            .collect();
        self.balancer
            .store(Arc::new(Balancer::new(self.config.algorithm, &weighted)));
        *effective = weights;
    }

    /// Whether one more target of this pool may be ejected under `maxEjectionPercent`.
    pub fn may_eject(&self, now: Instant) -> bool {
        let Some(od) = &self.config.outlier_detection else {
            return false;
        };
        let ejected = self
            .targets
            .iter()
            .filter(|t| matches!(t.health.condition(now), Condition::Ejected(_)))
            .count();
        ejected < health::max_ejected(self.targets.len(), od.max_ejection_percent)
    }
}

impl TargetState {
    /// The target's state name at `now`: `drained` at weight 0, else its health condition.
    pub fn state(&self, now: Instant) -> &'static str {
        if self.weight == 0 {
            "drained"
        } else {
            self.health.condition(now).name()
        }
    }
}

impl Load for Candidates<'_> {
    fn active(&self, i: usize) -> u64 {
        self.pool.targets[i]
            .stats
            .active_requests
            .load(Ordering::Relaxed)
    }

    fn usable(&self, i: usize) -> bool {
        !self.exclude.contains(&i) && self.pool.usable(i, self.now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::Pick;
    use crate::health::Outcome;

    fn snapshot(yaml: &str) -> Snapshot {
        let file: PoolsFile = serde_yaml::from_str(yaml).unwrap();
        file.validate().unwrap();
        Registry::default().build(&file)
    }

    fn shares(pool: &PoolState, picks: usize) -> Vec<f64> {
        let now = Instant::now();
        let mut counts = vec![0usize; pool.targets.len()];
        let balancer = pool.balancer.load();
        for _ in 0..picks {
            let i = balancer
                .pick(
                    &Candidates {
                        pool,
                        now,
                        exclude: &[],
                    },
                    || 0,
                )
                .unwrap();
            counts[i] += 1;
        }
        counts.iter().map(|c| *c as f64 / picks as f64).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_change_to_one_pool_recompiles_that_pool_alone() {
        let registry = Registry::default();
        let file = |weight: u32| -> PoolsFile {
            serde_yaml::from_str(&format!(
                "pools:\n  - name: a\n    routes: [{{ host: a.example }}]\n    targets: [{{ address: 127.0.0.1:9001 }}]\n  \
                 - name: b\n    routes: [{{ host: b.example }}]\n    targets: [{{ address: 127.0.0.1:9002, weight: {weight} }}]\n"
            ))
            .unwrap()
        };
        let before = registry.build(&file(1));
        let after = registry.build(&file(2));
        assert!(
            Arc::ptr_eq(&before.pools[0], &after.pools[0]),
            "pool a is unchanged"
        );
        assert!(
            !Arc::ptr_eq(&before.pools[1], &after.pools[1]),
            "pool b changed"
        );
        assert_eq!(after.pools[1].targets[0].weight, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn an_unusable_target_leaves_the_others_their_exact_ratio() {
        let s = snapshot(
            "pools:\n  - name: web\n    circuitBreaker: { failureThreshold: 1 }\n    targets:\n      \
             - { address: 127.0.0.1:9001 }\n      - { address: 127.0.0.1:9002 }\n      - { address: 127.0.0.1:9003 }\n",
        );
        let pool = &s.pools[0];
        pool.targets[1]
            .health
            .record(Outcome::GatewayFailure, Instant::now(), || true);
        pool.rebalance(Instant::now());
        let s = shares(pool, 3000);
        assert_eq!(s[1], 0.0);
        assert!(
            (s[0] - 0.5).abs() < 0.001 && (s[2] - 0.5).abs() < 0.001,
            "{s:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_target_that_joins_ramps_up_over_the_slow_start_window() {
        let registry = Registry::default();
        let file = |targets: &str| -> PoolsFile {
            serde_yaml::from_str(&format!(
                "pools:\n  - name: web\n    slowStart: {{ window: 10s }}\n    targets: {targets}\n"
            ))
            .unwrap()
        };
        registry.build(&file("[{ address: 127.0.0.1:9001 }]"));
        tokio::time::advance(std::time::Duration::from_secs(60)).await;
        let s = registry.build(&file(
            "[{ address: 127.0.0.1:9001 }, { address: 127.0.0.1:9002 }]",
        ));
        let pool = &s.pools[0];
        let mut seen = Vec::new();
        for _ in 0..3 {
            pool.rebalance(Instant::now());
            seen.push(shares(pool, 2000)[1]);
            tokio::time::advance(std::time::Duration::from_secs(5)).await;
        }
        // A tenth of its weight at first (0.1 / 1.1), half at 5 s (0.5 / 1.5), all at 10 s.
        let want = [0.1 / 1.1, 0.5 / 1.5, 0.5];
        for (got, want) in seen.iter().zip(want) {
            assert!(
                (got - want).abs() < 0.01,
                "shares of the new target {seen:?}, want {want}"
            );
        }
    }
}
