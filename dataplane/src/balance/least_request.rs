//! Least request: favour targets with fewer requests in flight.

use super::{Load, Pick, Weighted};

/// With equal weights, the power of two choices: draw two targets at random and take the one
/// with fewer requests in flight, which avoids both herding and a full scan. With unequal
/// weights, Envoy's rule: draw in proportion to `weight / (active + 1)`, so an idle pool
/// follows the weights and a loaded target loses share as its queue grows.
#[derive(Debug)]
pub struct LeastRequest {
    weights: Box<[u32]>,
    equal: bool,
}

impl LeastRequest {
    /// Builds the selector for `targets`' weights.
    pub fn new(targets: &[Weighted<'_>]) -> Self {
        let weights: Box<[u32]> = targets.iter().map(|t| t.weight).collect();
        let mut positive = weights.iter().filter(|w| **w > 0);
        let first = positive.next().copied();
        let equal = positive.all(|w| Some(*w) == first) && weights.iter().all(|w| *w > 0);
        Self { weights, equal }
    }

    fn power_of_two<L: Load>(&self, load: &L) -> Option<usize> {
        let n = self.weights.len();
        for _ in 0..4 {
            let a = fastrand::usize(0..n);
            let b = if n > 1 {
                (a + 1 + fastrand::usize(0..n - 1)) % n
            } else {
                a
            };
            match (load.usable(a), load.usable(b)) {
                (true, true) => {
                    return Some(if load.active(b) < load.active(a) {
                        b
                    } else {
                        a
                    });
                }
                (true, false) => return Some(a),
                (false, true) => return Some(b),
                (false, false) => {}
            }
        }
        self.scaled(load)
    }

    fn scaled<L: Load>(&self, load: &L) -> Option<usize> {
        // Two passes instead of a scratch vector: no allocation on the request path, and the
        // in-flight counts may move between passes without harm (the draw is random anyway).
        let score = |i: usize| {
            if load.usable(i) {
                f64::from(self.weights[i]) / (load.active(i) as f64 + 1.0)
            } else {
                0.0
            }
        };
        let total: f64 = (0..self.weights.len()).map(score).sum();
        if total <= 0.0 {
            return None;
        }
        let mut r = fastrand::f64() * total;
        let mut last = None;
        for i in 0..self.weights.len() {
            let s = score(i);
            if s > 0.0 {
                if r < s {
                    return Some(i);
                }
                r -= s;
                last = Some(i);
            }
        }
        last
    }
}

impl Pick for LeastRequest {
    fn pick<L: Load>(&self, load: &L, _key: impl FnOnce() -> u64) -> Option<usize> {
        if self.weights.is_empty() {
            return None;
        }
        if self.equal {
            self.power_of_two(load)
        } else {
            self.scaled(load)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    #[test]
    fn idle_shares_follow_weights() {
        fastrand::seed(7);
        for weights in [[5, 1, 1], [3, 2, 1], [1, 1, 1]] {
            let t = weighted(&weights);
            let lr = LeastRequest::new(&views(&t));
            assert_shares_follow(&weights, &shares(&lr, &Idle::new(3), 3, 60_000));
        }
    }

    #[test]
    fn prefers_the_less_loaded_of_two() {
        let t = weighted(&[1, 1]);
        let lr = LeastRequest::new(&views(&t));
        let load = Idle::new(2);
        *load.active.borrow_mut() = vec![10, 2];
        for _ in 0..100 {
            assert_eq!(lr.pick(&load, || 0), Some(1));
        }
    }

    #[test]
    fn weighted_targets_lose_share_as_their_queue_grows() {
        fastrand::seed(9);
        let t = weighted(&[2, 1]);
        let lr = LeastRequest::new(&views(&t));
        let load = Idle::new(2);
        // Target 0 has twice the weight but nine requests in flight: 2/10 against 1/1.
        *load.active.borrow_mut() = vec![9, 0];
        let s = shares(&lr, &load, 2, 60_000);
        assert!((s[0] - 0.2 / 1.2).abs() < 0.01, "{s:?}");
    }
}
