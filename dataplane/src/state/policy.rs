//! Balancing policy at run time: which targets a pick may choose (health, panic mode), the
//! balancer's effective weights (rebalancing, slow start), and how many targets outlier
//! detection may eject.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::time::Instant;
use weir_api::Algorithm;

use super::compile::{PoolState, TargetState};
use crate::balance::{Balancer, Load, Weighted};
use crate::health::{self, Condition};

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
    use weir_api::PoolsFile;

    use super::*;
    use crate::balance::Pick;
    use crate::health::Outcome;
    use crate::state::{Registry, Snapshot};

    fn snapshot(yaml: &str) -> Snapshot {
        let file: PoolsFile = serde_yaml::from_str(yaml).unwrap();
        file.validate().unwrap();
        let registry = Registry::default();
        registry.build(&registry.share(file))
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
        registry.build(&registry.share(file("[{ address: 127.0.0.1:9001 }]")));
        tokio::time::advance(std::time::Duration::from_secs(60)).await;
        let s = registry.build(&registry.share(file(
            "[{ address: 127.0.0.1:9001 }, { address: 127.0.0.1:9002 }]",
        )));
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
