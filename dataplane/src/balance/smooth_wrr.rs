//! NGINX's smooth weighted round robin, precomputed into one cycle.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::{Load, Pick, Weighted, gcd};

/// Longest cycle kept; larger weight sums are scaled down, which costs under 0.01% of accuracy.
const MAX_CYCLE: u64 = 1 << 16;

/// Smooth weighted round robin: weights 5,1,1 give `a a b a c a a`, spreading each target's
/// turns evenly instead of in bursts.
///
/// NGINX updates every target's current weight under a lock on each pick. The sequence is a
/// pure function of the weights, so it is computed once and walked with one atomic counter:
/// lock-free, and identical to NGINX's order.
#[derive(Debug)]
pub struct SmoothWrr {
    cycle: Box<[u32]>,
    next: AtomicUsize,
}

impl SmoothWrr {
    /// Precomputes the cycle for `targets`' weights.
    pub fn new(targets: &[Weighted<'_>]) -> Self {
        let mut weights: Vec<u64> = targets.iter().map(|t| u64::from(t.weight)).collect();
        let g = weights
            .iter()
            .copied()
            .filter(|w| *w > 0)
            .fold(0, gcd)
            .max(1);
        weights.iter_mut().for_each(|w| *w /= g);
        let total: u64 = weights.iter().sum();
        if total > MAX_CYCLE {
            for w in weights.iter_mut().filter(|w| **w > 0) {
                *w = (*w * MAX_CYCLE / total).max(1);
            }
        }
        let total: i64 = weights.iter().sum::<u64>() as i64;
        let mut current = vec![0i64; weights.len()];
        let mut cycle = Vec::with_capacity(total as usize);
        for _ in 0..total {
            let mut best = 0;
            for (i, w) in weights.iter().enumerate() {
                current[i] += *w as i64;
                if current[i] > current[best] {
                    best = i;
                }
            }
            current[best] -= total;
            cycle.push(best as u32);
        }
        Self {
            cycle: cycle.into_boxed_slice(),
            next: AtomicUsize::new(0),
        }
    }
}

impl Pick for SmoothWrr {
    fn pick<L: Load>(&self, load: &L, _key: impl FnOnce() -> u64) -> Option<usize> {
        let len = self.cycle.len();
        if len == 0 {
            return None;
        }
        // Relaxed is enough: only the spread matters, not an order between threads.
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        // An unusable target's turns go to the next usable ones in the cycle, which keeps the
        // others' relative shares.
        for step in 0..len {
            let i = self.cycle[(start + step) % len] as usize;
            if load.usable(i) {
                return Some(i);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    #[test]
    fn weights_5_1_1_give_nginx_sequence() {
        let t = weighted(&[5, 1, 1]);
        let wrr = SmoothWrr::new(&views(&t));
        let load = Idle::new(3);
        let seq: String = (0..7)
            .map(|_| ["a", "b", "c"][wrr.pick(&load, || 0).unwrap()])
            .collect::<Vec<_>>()
            .join(" ");
        assert_eq!(seq, "a a b a c a a");
    }

    #[test]
    fn shares_follow_weights() {
        for weights in [[5, 1, 1], [3, 2, 1], [1, 1, 1], [100, 1, 7]] {
            let t = weighted(&weights);
            let wrr = SmoothWrr::new(&views(&t));
            assert_shares_follow(&weights, &shares(&wrr, &Idle::new(3), 3, 60_000));
        }
    }

    #[test]
    fn zero_weight_takes_nothing_and_huge_weights_still_fit() {
        let t = weighted(&[0, 1_000_000, 999_999]);
        let wrr = SmoothWrr::new(&views(&t));
        assert!(wrr.cycle.len() as u64 <= MAX_CYCLE);
        let s = shares(&wrr, &Idle::new(3), 3, 60_000);
        assert_eq!(s[0], 0.0);
        assert!((s[1] - 0.5).abs() < 0.01);
    }

    #[test]
    fn unusable_targets_are_skipped_and_others_keep_their_ratio() {
        let t = weighted(&[3, 2, 1]);
        let wrr = SmoothWrr::new(&views(&t));
        let mut load = Idle::new(3);
        load.down = vec![0];
        let s = shares(&wrr, &load, 3, 60_000);
        assert_eq!(s[0], 0.0);
        assert!((s[1] - 2.0 / 3.0).abs() < 0.01, "{s:?}");
        load.down = vec![0, 1, 2];
        assert_eq!(wrr.pick(&load, || 0), None);
    }
}
