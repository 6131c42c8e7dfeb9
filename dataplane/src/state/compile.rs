//! Compiling pools into the structures the request path reads: a [`Snapshot`] of
//! [`PoolState`]s, built by the [`Registry`], which keeps what must outlive one configuration
//! (counters, connections, health, checkers) by pool name and target address.
//!
//! Each pool's configuration is held once, as an `Arc<Pool>` shared by whoever put it in
//! force (the channel client, the store) and the [`PoolState`] compiled from it. A pool that
//! comes back as the same `Arc` is known unchanged by pointer and keeps its compiled state.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwap;
use http::HeaderValue;
use http::header::HeaderName;
use http::uri::Authority;
use weir_api::{AffinityKind, Pool, PoolsFile};

use crate::affinity::{cookie_id, set_cookie};
use crate::balance::{Balancer, Maglev, Weighted};
use crate::body::RequestBody;
use crate::checker::Checker;
use crate::health::{Policy, TargetHealth};
use crate::router::Router;
use crate::stats::{PoolStats, TargetStats};
use crate::upstream::{ClientSettings, TargetClient};

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
    /// The pool as configured, shared with whoever put it in force.
    pub config: Arc<Pool>,
    /// Its targets, in configuration order.
    pub targets: Vec<TargetState>,
    /// The selector, rebuilt by [`PoolState::rebalance`] when targets leave or rejoin the
    /// usable set or ramp up under slow start, so shares stay exact among usable targets.
    pub balancer: ArcSwap<Balancer>,
    /// The effective weights the balancer was last built with.
    pub(super) effective: Mutex<Vec<u32>>,
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
    pub client: Arc<TargetClient<RequestBody>>,
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
    client: Arc<TargetClient<RequestBody>>,
    health: Arc<TargetHealth>,
    /// Boxed: most targets have none, and the map holds one entry per target.
    checker: Option<Box<Checker>>,
}

impl Registry {
    /// Compiles `pools` (validated together) into a snapshot, reusing the counters and
    /// clients of pools and targets that stay, and forgetting those that went.
    pub fn build(&self, pools: &[Arc<Pool>]) -> Snapshot {
        let mut parts = self.parts();
        let names: HashSet<&str> = pools.iter().map(|p| p.name.as_str()).collect();
        parts.retain(|name, _| names.contains(name.as_str()));
        // A change to one pool (a channel update, an admin call) recompiles that pool alone:
        // the others come back as the same Arc and keep their compiled state, balancer
        // position and hash tables, without a comparison of their configuration.
        let compiled: Vec<Arc<PoolState>> = pools
            .iter()
            .map(|pool| {
                let reusable = parts
                    .get(&pool.name)
                    .and_then(|p| p.compiled.clone())
                    .filter(|c| Arc::ptr_eq(&c.config, pool));
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

    /// `file`'s pools, shared: each equal to the pool of its name compiled last is that
    /// pool's `Arc`, so [`Registry::build`] keeps its compiled state; the others are new.
    /// For configurations that arrive whole (a reloaded file), where only a comparison can
    /// tell what stayed.
    pub fn share(&self, file: PoolsFile) -> Vec<Arc<Pool>> {
        let parts = self.parts();
        file.pools
            .into_iter()
            .map(|pool| {
                let same = parts
                    .get(&pool.name)
                    .and_then(|p| p.compiled.as_ref())
                    .filter(|c| *c.config == pool);
                same.map_or_else(|| Arc::new(pool), |c| c.config.clone())
            })
            .collect()
    }

    fn parts(&self) -> MutexGuard<'_, HashMap<String, PoolParts>> {
        self.pools.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn compile(pool: &Arc<Pool>, parts: &mut HashMap<String, PoolParts>) -> PoolState {
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
                let new_client = |stats: &TargetStats| {
                    Arc::new(TargetClient::new(
                        t.address,
                        settings.clone(),
                        stats.active_connections.clone(),
                        shared.clone(),
                    ))
                };
                let parts = part.targets.entry(t.address).or_insert_with(|| {
                    let stats = Arc::new(TargetStats::new(t.address));
                    TargetParts {
                        client: new_client(&stats),
                        stats,
                        health: Arc::new(TargetHealth::new(
                            pool_name.clone(),
                            t.address,
                            policy.clone(),
                        )),
                        checker: None,
                    }
                });
                if *parts.client.settings() != settings {
                    // New connection settings take a new client; the old one's connections
                    // close as their in-flight requests finish.
                    parts.client = new_client(&parts.stats);
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
                    client: parts.client.clone(),
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

#[cfg(test)]
mod tests {
    use super::*;

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
        let before = registry.build(&registry.share(file(1)));
        let after = registry.build(&registry.share(file(2)));
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
    async fn a_pool_is_known_unchanged_by_its_arc_and_another_arc_is_compiled_afresh() {
        let registry = Registry::default();
        let file: PoolsFile = serde_yaml::from_str(
            "pools:\n  - name: a\n    routes: [{ host: a.example }]\n    targets: [{ address: 127.0.0.1:9001 }]\n  \
             - name: b\n    routes: [{ host: b.example }]\n    targets: [{ address: 127.0.0.1:9002 }]\n",
        )
        .unwrap();
        let pools: Vec<Arc<Pool>> = file.pools.into_iter().map(Arc::new).collect();
        let before = registry.build(&pools);
        assert!(
            Arc::ptr_eq(&before.pools[0].config, &pools[0]),
            "the compiled pool holds the configuration it was given, not a copy"
        );

        let mut b = Pool::clone(&pools[1]);
        b.targets[0].weight = 2;
        let after = registry.build(&[pools[0].clone(), Arc::new(b)]);
        assert!(
            Arc::ptr_eq(&before.pools[0], &after.pools[0]),
            "the same Arc: pool a kept"
        );
        assert!(
            !Arc::ptr_eq(&before.pools[1], &after.pools[1]),
            "another Arc: pool b recompiled"
        );
        assert_eq!(after.pools[1].targets[0].weight, 2);
        assert!(
            Arc::ptr_eq(&before.pools[1].stats, &after.pools[1].stats)
                && Arc::ptr_eq(
                    &before.pools[1].targets[0].stats,
                    &after.pools[1].targets[0].stats
                )
                && Arc::ptr_eq(
                    &before.pools[1].targets[0].health,
                    &after.pools[1].targets[0].health
                ),
            "a recompiled pool keeps its counters and its targets' health"
        );

        let equal = Arc::new(Pool::clone(&pools[0]));
        let again = registry.build(&[equal, after.pools[1].config.clone()]);
        assert!(
            !Arc::ptr_eq(&after.pools[0], &again.pools[0]),
            "an equal pool in another Arc is compiled afresh: build compares no configuration"
        );
        assert!(Arc::ptr_eq(&after.pools[1], &again.pools[1]));
    }
}
