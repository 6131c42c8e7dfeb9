//! Target selection: one small type per algorithm behind the [`Pick`] trait.
//!
//! Selectors are built once per configuration from the targets' weights and never locked on
//! the request path: what changes per request (in-flight counts, usability) is read through
//! [`Load`]. Indexes refer to the pool's target list.

mod least_request;
mod maglev;
mod random;
mod smooth_wrr;

pub use least_request::LeastRequest;
pub use maglev::Maglev;
pub use random::WeightedRandom;
pub use smooth_wrr::SmoothWrr;

use weir_api::Algorithm;

/// What a selector may ask about targets at pick time.
pub trait Load {
    /// Requests in flight to target `i`.
    fn active(&self, i: usize) -> u64;
    /// Whether target `i` may take a request now.
    fn usable(&self, i: usize) -> bool;
}

/// A target-selection algorithm.
pub trait Pick {
    /// Picks the index of a usable target, or `None` when none is usable. `key` is the
    /// request's affinity hash; only hashing selectors call it.
    fn pick<L: Load>(&self, load: &L, key: impl FnOnce() -> u64) -> Option<usize>;
}

/// The selector of one pool: static dispatch over the algorithms.
#[derive(Debug)]
pub enum Balancer {
    /// See [`SmoothWrr`].
    WeightedRoundRobin(SmoothWrr),
    /// See [`LeastRequest`].
    LeastRequest(LeastRequest),
    /// See [`WeightedRandom`].
    Random(WeightedRandom),
    /// See [`Maglev`].
    ConsistentHash(Maglev),
}

/// Targets as selectors see them when building: a stable identity for hashing and a weight.
#[derive(Clone, Debug)]
pub struct Weighted<'a> {
    /// Stable identity, such as the address as text.
    pub id: &'a str,
    /// Relative share; 0 takes no traffic.
    pub weight: u32,
}

impl Balancer {
    /// Builds the selector for `algorithm` over `targets`.
    pub fn new(algorithm: Algorithm, targets: &[Weighted<'_>]) -> Self {
        match algorithm {
            Algorithm::WeightedRoundRobin => Self::WeightedRoundRobin(SmoothWrr::new(targets)),
            Algorithm::LeastRequest => Self::LeastRequest(LeastRequest::new(targets)),
            Algorithm::Random => Self::Random(WeightedRandom::new(targets)),
            Algorithm::ConsistentHash => Self::ConsistentHash(Maglev::new(targets)),
        }
    }
}

impl Pick for Balancer {
    fn pick<L: Load>(&self, load: &L, key: impl FnOnce() -> u64) -> Option<usize> {
        match self {
            Self::WeightedRoundRobin(s) => s.pick(load, key),
            Self::LeastRequest(s) => s.pick(load, key),
            Self::Random(s) => s.pick(load, key),
            Self::ConsistentHash(s) => s.pick(load, key),
        }
    }
}

/// Greatest common divisor, to keep weight tables small.
fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Test helpers shared by the selector tests.
#[cfg(test)]
pub(crate) mod testing {
    use std::cell::RefCell;

    use super::*;

    /// Idle targets, all usable unless listed in `down`.
    pub struct Idle {
        pub down: Vec<usize>,
        pub active: RefCell<Vec<u64>>,
    }

    impl Idle {
        pub fn new(n: usize) -> Self {
            Self {
                down: vec![],
                active: RefCell::new(vec![0; n]),
            }
        }
    }

    impl Load for Idle {
        fn active(&self, i: usize) -> u64 {
            self.active.borrow()[i]
        }
        fn usable(&self, i: usize) -> bool {
            !self.down.contains(&i)
        }
    }

    pub fn weighted(weights: &[u32]) -> Vec<(String, u32)> {
        weights
            .iter()
            .enumerate()
            .map(|(i, w)| (format!("10.0.0.{i}:80"), *w))
            .collect()
    }

    pub fn views(t: &[(String, u32)]) -> Vec<Weighted<'_>> {
        t.iter()
            .map(|(id, weight)| Weighted {
                id,
                weight: *weight,
            })
            .collect()
    }

    /// Picks `n` times and returns each target's share.
    pub fn shares<P: Pick>(p: &P, load: &Idle, targets: usize, n: usize) -> Vec<f64> {
        let mut counts = vec![0usize; targets];
        for k in 0..n {
            let i = p
                .pick(load, || {
                    super::super::hash::stable_hash(&k.to_le_bytes(), 7)
                })
                .unwrap();
            counts[i] += 1;
        }
        counts.iter().map(|c| *c as f64 / n as f64).collect()
    }

    /// Asserts shares within one percentage point of the weights.
    pub fn assert_shares_follow(weights: &[u32], shares: &[f64]) {
        let total: u32 = weights.iter().sum();
        for (w, s) in weights.iter().zip(shares) {
            let want = f64::from(*w) / f64::from(total);
            assert!(
                (s - want).abs() < 0.01,
                "share {s:.4} for weight {w}, want {want:.4} ({shares:?})"
            );
        }
    }
}
