//! Weighted random selection.

use super::{Load, Pick, Weighted};

/// Tries before scanning for a usable target, so a mostly-down pool stays cheap.
const TRIES: usize = 8;

/// Picks each target with probability proportional to its weight, by binary search over the
/// running sum of weights.
#[derive(Debug)]
pub struct WeightedRandom {
    cumulative: Box<[u64]>,
}

impl WeightedRandom {
    /// Builds the running sums of `targets`' weights.
    pub fn new(targets: &[Weighted<'_>]) -> Self {
        let mut sum = 0;
        let cumulative = targets
            .iter()
            .map(|t| {
                sum += u64::from(t.weight);
                sum
            })
            .collect();
        Self { cumulative }
    }

    fn total(&self) -> u64 {
        self.cumulative.last().copied().unwrap_or(0)
    }
}

impl Pick for WeightedRandom {
    fn pick<L: Load>(&self, load: &L, _key: impl FnOnce() -> u64) -> Option<usize> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        for _ in 0..TRIES {
            let r = fastrand::u64(0..total);
            let i = self.cumulative.partition_point(|c| *c <= r);
            if load.usable(i) {
                return Some(i);
            }
        }
        // Many targets are down: draw among the usable ones only.
        let mut usable_total = 0;
        let weights: Vec<u64> = (0..self.cumulative.len())
            .map(|i| {
                let prev = if i == 0 { 0 } else { self.cumulative[i - 1] };
                let w = if load.usable(i) {
                    self.cumulative[i] - prev
                } else {
                    0
                };
                usable_total += w;
                w
            })
            .collect();
        if usable_total == 0 {
            return None;
        }
        let mut r = fastrand::u64(0..usable_total);
        weights.iter().position(|w| {
            if r < *w {
                true
            } else {
                r -= w;
                false
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    #[test]
    fn shares_follow_weights() {
        fastrand::seed(42);
        for weights in [[5, 1, 1], [3, 2, 1], [1, 1, 1]] {
            let t = weighted(&weights);
            let r = WeightedRandom::new(&views(&t));
            assert_shares_follow(&weights, &shares(&r, &Idle::new(3), 3, 60_000));
        }
    }

    #[test]
    fn only_usable_targets_are_drawn() {
        let t = weighted(&[100, 100, 1]);
        let r = WeightedRandom::new(&views(&t));
        let mut load = Idle::new(3);
        load.down = vec![0, 1];
        for _ in 0..1000 {
            assert_eq!(r.pick(&load, || 0), Some(2));
        }
        load.down = vec![0, 1, 2];
        assert_eq!(r.pick(&load, || 0), None);
    }
}
