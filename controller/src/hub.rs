//! The revisioned state the data planes follow: every compiled pool by name, a revision that
//! grows by one per change, and a bounded log of which pool each revision changed, so that a
//! data plane reconnecting with `since` gets only what it missed.
//!
//! The reconciler [`stage`](Hub::stage)s what it compiled; [`coalesce`](Hub::coalesce) commits
//! a change at once when the hub is idle, and batches the changes that follow it while they
//! keep arriving (committed once they pause for [`QUIET`], at the latest [`MAX_DELAY`] after
//! the batch's first), so a lone change reaches the data planes without waiting and a burst
//! of EndpointSlice updates becomes two commits (the first change, then the rest as one
//! revision per pool), each one push per stream.
//! Staging a pool exactly as it is changes nothing and bumps no revision.
//!
//! Each pool is serialized once, when it is committed (`Committed`); every stream writes the
//! same bytes ([`Line::write_to`]), so a change costs one serialization however many data
//! planes follow.
//!
//! Revisions start at a random base ([`Hub::random_base`]: random high bits, a counter in the
//! low 39): a data plane that followed another controller process (a previous run, another
//! replica) names a `since` this hub never issued, and gets the full state instead of a
//! wrong delta.

use std::collections::{BTreeMap, VecDeque};
use std::ops::RangeInclusive;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use weir_api::channel::{ChannelPool, Update};

use crate::selector::Selector;

/// Changes remembered for reconnecting data planes; one that missed more gets the full state.
pub const LOG_CAPACITY: usize = 4096;
/// Longest a change that follows another within [`QUIET`] waits, batched, before it is
/// committed.
pub const MAX_DELAY: Duration = Duration::from_millis(100);
/// A pause in staging this long commits the batch being held; a change after this long with
/// nothing staged finds the hub idle and is committed at once.
pub const QUIET: Duration = Duration::from_millis(20);
/// Bits of a revision left to the counter; the bits above hold the random base.
const COUNTER_BITS: u32 = 39;

/// A pool as the hub holds it: what the data planes get, and the labels selectors match.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// The pool and the generation it was compiled from.
    pub pool: ChannelPool,
    /// The `LoadBalancerPool`'s labels.
    pub labels: BTreeMap<String, String>,
}

/// The pools the data planes serve, revisioned. Shared by the reconciler and the channel.
#[derive(Debug)]
pub struct Hub {
    inner: Mutex<Inner>,
    staged_signal: Notify,
    revision_tx: watch::Sender<u64>,
}

/// A committed pool and its JSON (a [`ChannelPool`]), made once for every stream.
#[derive(Debug)]
struct Committed {
    entry: Arc<Entry>,
    json: Bytes,
}

/// One line of a stream, holding the pools' JSON as committed.
#[derive(Clone, Debug, PartialEq)]
pub enum Line {
    /// [`Update::Snapshot`]: every pool the stream's selector selects.
    Snapshot {
        /// Revision this state is at.
        revision: u64,
        /// Each pool's JSON.
        pools: Vec<Bytes>,
    },
    /// [`Update::Pool`]: a pool added or changed.
    Pool {
        /// Revision after this change.
        revision: u64,
        /// The pool's JSON.
        pool: Bytes,
    },
    /// [`Update::Removed`]: a pool removed or not selected.
    Removed {
        /// Revision after this change.
        revision: u64,
        /// The pool's name.
        name: String,
    },
}

impl Line {
    /// The revision the line brings its stream to.
    pub fn revision(&self) -> u64 {
        match self {
            Self::Snapshot { revision, .. }
            | Self::Pool { revision, .. }
            | Self::Removed { revision, .. } => *revision,
        }
    }

    /// Appends the line, newline included, exactly as serde writes the [`Update`] it stands
    /// for (a test holds the two together).
    pub fn write_to(&self, out: &mut Vec<u8>) {
        match self {
            Self::Snapshot { revision, pools } => {
                out.extend_from_slice(
                    format!(r#"{{"type":"snapshot","revision":{revision},"pools":["#).as_bytes(),
                );
                for (i, pool) in pools.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    out.extend_from_slice(pool);
                }
                out.extend_from_slice(b"]}");
            }
            Self::Pool { revision, pool } => {
                out.extend_from_slice(
                    format!(r#"{{"type":"pool","revision":{revision},"pool":"#).as_bytes(),
                );
                out.extend_from_slice(pool);
                out.push(b'}');
            }
            Self::Removed { revision, name } => {
                let removed = Update::Removed {
                    revision: *revision,
                    name: name.clone(),
                };
                serde_json::to_writer(&mut *out, &removed).expect("an update serializes");
            }
        }
        out.push(b'\n');
    }
}

#[derive(Debug)]
struct Inner {
    revision: u64,
    pools: BTreeMap<String, Committed>,
    /// `(revision, pool name)`, oldest first, contiguous revisions.
    log: VecDeque<(u64, String)>,
    capacity: usize,
    /// Changes not yet committed, by pool name (`None`: removal).
    staged: BTreeMap<String, Option<Arc<Entry>>>,
}

impl Hub {
    /// An empty hub at revision `base`, remembering [`LOG_CAPACITY`] changes.
    pub fn new(base: u64) -> Self {
        Self::with_capacity(base, LOG_CAPACITY)
    }

    /// An empty hub at revision `base`, remembering `capacity` changes.
    pub fn with_capacity(base: u64, capacity: usize) -> Self {
        let (revision_tx, _) = watch::channel(base);
        Self {
            inner: Mutex::new(Inner {
                revision: base,
                pools: BTreeMap::new(),
                log: VecDeque::new(),
                capacity: capacity.max(1),
                staged: BTreeMap::new(),
            }),
            staged_signal: Notify::new(),
            revision_tx,
        }
    }

    /// A random starting revision, different from any other process's in all likelihood:
    /// 24 random bits above a 39-bit counter (enough for a change a millisecond for 17 years).
    pub fn random_base() -> u64 {
        fastrand::u64(1..1 << 24) << COUNTER_BITS
    }

    /// Whether `revision` was issued by this hub's process (reports from data planes that
    /// followed another controller are not).
    pub fn issued(&self, revision: u64) -> bool {
        let inner = self.lock();
        let base = inner.revision >> COUNTER_BITS << COUNTER_BITS;
        (base..=inner.revision).contains(&revision)
    }

    /// Stages `entry` as pool `name` (`None`: removes it), for the next commit. Staging what
    /// is already in force is a no-op.
    pub fn stage(&self, name: &str, entry: Option<Entry>) {
        let mut inner = self.lock();
        let current = inner.pools.get(name).map(|c| &*c.entry);
        if current == entry.as_ref() && !inner.staged.contains_key(name) {
            return;
        }
        inner.staged.insert(name.to_owned(), entry.map(Arc::new));
        drop(inner);
        self.staged_signal.notify_one();
    }

    /// Stages the removal of every pool for which `keep` is false (after a re-list, pools
    /// deleted while the watch was down).
    pub fn sweep(&self, keep: impl Fn(&str) -> bool) {
        for name in self.names() {
            if !keep(&name) {
                self.stage(&name, None);
            }
        }
    }

    /// Commits what is staged: one revision per pool that really changed. Returns the new
    /// revisions, if any, and wakes the streams.
    pub fn commit(&self) -> Option<RangeInclusive<u64>> {
        let mut inner = self.lock();
        let staged = std::mem::take(&mut inner.staged);
        let first = inner.revision + 1;
        for (name, entry) in staged {
            let unchanged = match (&entry, inner.pools.get(&name)) {
                (Some(new), Some(old)) => *new == old.entry,
                (None, None) => true,
                _ => false,
            };
            if unchanged {
                continue;
            }
            inner.revision += 1;
            let revision = inner.revision;
            match entry {
                Some(entry) => {
                    let json = serde_json::to_vec(&entry.pool).expect("a pool serializes");
                    let json = Bytes::from(json);
                    inner.pools.insert(name.clone(), Committed { entry, json });
                }
                None => {
                    inner.pools.remove(&name);
                }
            }
            inner.log.push_back((revision, name));
            if inner.log.len() > inner.capacity {
                inner.log.pop_front();
            }
        }
        let last = inner.revision;
        drop(inner);
        (last >= first).then(|| {
            self.revision_tx.send_replace(last);
            first..=last
        })
    }

    /// Commits staged changes as they come: at once while the hub is idle, batched while
    /// changes keep arriving. A change staged after `quiet` with nothing staged is committed at
    /// once (the leading edge). Changes that follow it within `quiet` form a batch, committed
    /// once changes pause for `quiet`, or `max_delay` after the batch's first change if they
    /// never do, so a steady stream is still committed regularly. Each commit calls
    /// `committed` with the new revisions and when the first of them was staged. Runs for ever.
    pub async fn coalesce(
        &self,
        quiet: Duration,
        max_delay: Duration,
        mut committed: impl FnMut(RangeInclusive<u64>, Instant),
    ) {
        let mut commit = |first| {
            if let Some(revisions) = self.commit() {
                committed(revisions, first);
            }
        };
        loop {
            self.staged_signal.notified().await;
            commit(Instant::now());
            // Busy until `quiet` passes without a change: what comes now is batched.
            while tokio::time::timeout(quiet, self.staged_signal.notified())
                .await
                .is_ok()
            {
                let first = Instant::now();
                let deadline = first + max_delay;
                loop {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    let more = tokio::time::timeout(quiet.min(left), self.staged_signal.notified());
                    if more.await.is_err() {
                        break;
                    }
                }
                commit(first);
            }
        }
    }

    /// A receiver of the current revision, changed at every commit.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.revision_tx.subscribe()
    }

    /// The current revision.
    pub fn revision(&self) -> u64 {
        self.lock().revision
    }

    /// The pool `name`, as committed.
    pub fn get(&self, name: &str) -> Option<Arc<Entry>> {
        self.lock().pools.get(name).map(|c| c.entry.clone())
    }

    /// Names of the committed pools.
    pub fn names(&self) -> Vec<String> {
        self.lock().pools.keys().cloned().collect()
    }

    /// Names of the committed pools `selector` selects.
    pub fn selected(&self, selector: &Selector) -> Vec<String> {
        let inner = self.lock();
        inner
            .pools
            .iter()
            .filter(|(_, c)| selector.matches(&c.entry.labels))
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// What a stream at revision `since` (`None`: nothing yet) needs to reach the current
    /// revision, limited to the pools `selector` selects: nothing when it is current, the
    /// changes it missed when the log still holds them, else a snapshot.
    ///
    /// Every revision gets a message, so the data plane sees no gap: a change to a pool the
    /// selector does not select is sent as its removal (it is not this data plane's). A pool
    /// changed twice since `since` is sent as it now is, twice: the last message wins.
    pub fn updates(&self, since: Option<u64>, selector: &Selector) -> Vec<Line> {
        let inner = self.lock();
        let oldest = inner.log.front().map_or(inner.revision, |(r, _)| r - 1);
        match since {
            Some(since) if since == inner.revision => Vec::new(),
            Some(since) if (oldest..inner.revision).contains(&since) => inner
                .log
                .iter()
                .filter(|(revision, _)| *revision > since)
                .map(|(revision, name)| match inner.pools.get(name) {
                    Some(c) if selector.matches(&c.entry.labels) => Line::Pool {
                        revision: *revision,
                        pool: c.json.clone(),
                    },
                    _ => Line::Removed {
                        revision: *revision,
                        name: name.clone(),
                    },
                })
                .collect(),
            _ => vec![Line::Snapshot {
                revision: inner.revision,
                pools: inner
                    .pools
                    .values()
                    .filter(|c| selector.matches(&c.entry.labels))
                    .map(|c| c.json.clone())
                    .collect(),
            }],
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests;
