//! Maglev consistent hashing (Eisenbud et al., NSDI 2016), weighted as Envoy does.

use super::{Load, Pick, Weighted};
use crate::hash::stable_hash;

/// Table size: a prime well above the target count keeps shares within about 1% of weights.
const TABLE_SIZE: usize = 65_537;

/// Rehashes of a key whose target is unusable, before falling back to a scan.
const REHASHES: u64 = 8;

/// Maps a key hash to a target through a lookup table in which each target holds slots in
/// proportion to its weight. When one of N targets goes, about 1/N of keys move: the ones it
/// held, and few others.
#[derive(Debug)]
pub struct Maglev {
    table: Box<[u32]>,
    /// The targets in the table (weight above 0), in index order: the fallback scan's choice.
    weighted: Box<[u32]>,
}

impl Maglev {
    /// Populates the lookup table for `targets`.
    pub fn new(targets: &[Weighted<'_>]) -> Self {
        struct Entry {
            index: u32,
            offset: u64,
            skip: u64,
            weight: u64,
            next: u64,
            due: u64,
        }
        let m = TABLE_SIZE as u64;
        let mut entries: Vec<Entry> = targets
            .iter()
            .enumerate()
            .filter(|(_, t)| t.weight > 0)
            .map(|(i, t)| Entry {
                index: i as u32,
                offset: stable_hash(t.id.as_bytes(), 0x6d61_676c) % m,
                skip: stable_hash(t.id.as_bytes(), 0x736b_6970) % (m - 1) + 1,
                weight: u64::from(t.weight),
                next: 0,
                due: 0,
            })
            .collect();
        let weighted = entries.iter().map(|e| e.index).collect();
        if entries.is_empty() {
            return Self {
                table: Box::new([]),
                weighted,
            };
        }
        let max_weight = entries.iter().map(|e| e.weight).max().unwrap_or(1);
        let mut table = vec![u32::MAX; TABLE_SIZE];
        let mut filled = 0;
        let mut iteration = 1u64;
        while filled < TABLE_SIZE {
            for e in entries.iter_mut() {
                if filled == TABLE_SIZE {
                    break;
                }
                // A target of weight max/k takes a slot every k-th round.
                if iteration * e.weight < e.due {
                    continue;
                }
                e.due += max_weight;
                let mut slot = ((e.offset + e.skip * e.next) % m) as usize;
                while table[slot] != u32::MAX {
                    e.next += 1;
                    slot = ((e.offset + e.skip * e.next) % m) as usize;
                }
                table[slot] = e.index;
                e.next += 1;
                filled += 1;
            }
            iteration += 1;
        }
        Self {
            table: table.into_boxed_slice(),
            weighted,
        }
    }

    /// The target for `hash` if all targets were usable.
    pub fn lookup(&self, hash: u64) -> Option<usize> {
        if self.table.is_empty() {
            return None;
        }
        Some(self.table[(hash % TABLE_SIZE as u64) as usize] as usize)
    }
}

impl Pick for Maglev {
    fn pick<L: Load>(&self, load: &L, key: impl FnOnce() -> u64) -> Option<usize> {
        let hash = key();
        for attempt in 0..REHASHES {
            let h = if attempt == 0 {
                hash
            } else {
                stable_hash(&hash.to_le_bytes(), attempt)
            };
            let i = self.lookup(h)?;
            if load.usable(i) {
                return Some(i);
            }
        }
        // The next usable target after the key's own, among those with a weight: a drained
        // target (weight 0) takes no keys, even when every other is down.
        let start = self.lookup(hash)?;
        let n = self.weighted.len();
        let at = self.weighted.partition_point(|i| (*i as usize) <= start);
        (0..n)
            .map(|d| self.weighted[(at + d) % n] as usize)
            .find(|i| load.usable(*i))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    #[test]
    fn shares_follow_weights() {
        for weights in [[5, 1, 1], [3, 2, 1], [1, 1, 1]] {
            let t = weighted(&weights);
            let m = Maglev::new(&views(&t));
            assert_shares_follow(&weights, &shares(&m, &Idle::new(3), 3, 60_000));
        }
    }

    #[test]
    fn a_key_always_reaches_the_same_target() {
        let t = weighted(&[1, 1, 1, 1]);
        let m = Maglev::new(&views(&t));
        let load = Idle::new(4);
        for key in 0..1000u64 {
            let first = m.pick(&load, || key);
            assert!((0..10).all(|_| m.pick(&load, || key) == first));
        }
    }

    #[test]
    fn removing_one_of_n_moves_about_one_nth_of_keys() {
        let n = 5;
        let t = weighted(&vec![1; n]);
        let before = Maglev::new(&views(&t));
        let after = Maglev::new(&views(&t[..n - 1]));
        let keys = 20_000u64;
        let moved = (0..keys)
            .map(|k| stable_hash(&k.to_le_bytes(), 1))
            .filter(|h| before.lookup(*h) != after.lookup(*h))
            .count();
        let fraction = moved as f64 / keys as f64;
        // Exactly 1/N must move (the removed target's keys); Maglev moves a few more.
        assert!(fraction > 0.19 && fraction < 0.25, "moved {fraction:.3}");
    }

    #[test]
    fn an_unusable_target_sends_its_keys_elsewhere_and_others_stay() {
        let t = weighted(&[1, 1, 1]);
        let m = Maglev::new(&views(&t));
        let mut load = Idle::new(3);
        let keys: Vec<u64> = (0..300).map(|k| stable_hash(&[k as u8, 1], 3)).collect();
        let before: Vec<_> = keys.iter().map(|k| m.pick(&load, || *k)).collect();
        load.down = vec![1];
        for (k, b) in keys.iter().zip(&before) {
            let now = m.pick(&load, || *k);
            assert_ne!(now, Some(1));
            if *b != Some(1) {
                assert_eq!(now, *b);
            }
        }
    }

    /// Found by the `pools_file` fuzz target: with every weighted target down, the fallback
    /// scan handed keys to a target of weight 0, which is drained.
    #[test]
    fn a_drained_target_takes_no_keys_even_when_the_others_are_down() {
        let t = weighted(&[3, 0, 1]);
        let m = Maglev::new(&views(&t));
        let mut load = Idle::new(3);
        load.down = vec![0];
        for key in 0..1000u64 {
            assert_eq!(m.pick(&load, || key), Some(2), "key {key}");
        }
        load.down = vec![0, 2];
        assert!((0..1000u64).all(|key| m.pick(&load, || key).is_none()));
    }
}
