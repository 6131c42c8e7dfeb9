//! The data planes this controller knows: their open streams, their selectors and their last
//! report, turned into what a pool's status says about them ([`Observation`]), and the
//! convergence time of each change (until every streaming data plane reports its revision).
//!
//! A data plane is connected while it has a stream open, and for [`LINGER`] after its last
//! report once its streams have ended: a data plane that reconnects at once never drops out
//! of the counts, one that went away does after 30 s.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;
use weir_api::channel::Report;

use crate::selector::Selector;

/// How long a data plane without a stream counts as connected after its last report.
pub const LINGER: Duration = Duration::from_secs(30);
/// Changes awaiting convergence at most; older ones are dropped unmeasured.
const MAX_PENDING: usize = 4096;

/// Every data plane that connected or reported, by identity.
#[derive(Debug)]
pub struct DataPlanes {
    inner: Mutex<Inner>,
    linger: Duration,
}

#[derive(Debug, Default)]
struct Inner {
    planes: BTreeMap<String, Plane>,
    /// Committed revisions not yet reported by every streaming data plane, with when they
    /// were staged.
    pending: VecDeque<(u64, Instant)>,
}

#[derive(Debug)]
struct Plane {
    streams: u32,
    selector: Selector,
    /// The revision of its last report.
    revision: Option<u64>,
    /// Its last report, by pool: indexed once per report, since every reconcile of every
    /// pool reads it (1,000 pools of 100 targets made scanning the report per reconcile cost
    /// about 200,000 comparisons each).
    pools: HashMap<String, PoolView>,
    reported_at: Option<Instant>,
}

/// What a data plane's last report says of one pool.
#[derive(Debug, Default, PartialEq, Eq)]
struct PoolView {
    applied: Option<i64>,
    rejected: Option<(i64, String)>,
    /// Healthy and unhealthy targets, each sorted, if the report had the pool's health.
    health: Option<(Vec<SocketAddr>, Vec<SocketAddr>)>,
}

impl PoolView {
    fn healthy(&self, target: &SocketAddr) -> bool {
        self.health
            .as_ref()
            .is_some_and(|(healthy, _)| healthy.binary_search(target).is_ok())
    }
}

/// A report indexed by pool.
fn index(report: Report) -> HashMap<String, PoolView> {
    let mut pools: HashMap<String, PoolView> = HashMap::new();
    for a in report.applied {
        pools.entry(a.name).or_default().applied = Some(a.generation);
    }
    for r in report.rejected {
        pools.entry(r.name).or_default().rejected = Some((r.generation, r.reason));
    }
    for h in report.health {
        let (mut healthy, mut unhealthy) = (h.healthy, h.unhealthy);
        healthy.sort_unstable();
        unhealthy.sort_unstable();
        pools.entry(h.name).or_default().health = Some((healthy, unhealthy));
    }
    pools
}

/// What the connected data planes that serve a pool say about it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observation {
    /// Connected data planes whose selector selects the pool.
    pub connected: u32,
    /// Of those, the ones that applied the pool's current generation.
    pub synced: u32,
    /// Targets every one of them reports healthy (0 when none is connected).
    pub healthy: u32,
    /// A data plane that refused the current generation, and why.
    pub rejected: Option<Rejection>,
}

/// A refusal of a pool's current generation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// The data plane.
    pub data_plane: String,
    /// Its reason.
    pub reason: String,
}

/// What changed with a report.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reported {
    /// Pools whose applied generation, refusal or health changed on this data plane.
    pub pools: Vec<String>,
    /// Selectors whose pools all changed: the data plane's, when it was not connected before;
    /// the old and the new one, when its selector changed.
    pub selectors: Vec<Selector>,
}

/// An open stream; dropping it closes it.
#[derive(Debug)]
pub struct StreamGuard {
    planes: Arc<DataPlanes>,
    id: String,
}

impl DataPlanes {
    /// No data plane yet; ones without a stream count as connected for `linger` after their
    /// last report.
    pub fn new(linger: Duration) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            linger,
        }
    }

    /// Records a stream opened by `id` with `selector`. Returns its guard and whether the data
    /// plane was not connected before.
    pub fn stream_opened(
        self: &Arc<Self>,
        id: &str,
        selector: Selector,
        now: Instant,
    ) -> (StreamGuard, bool) {
        let linger = self.linger;
        let mut inner = self.lock();
        let plane = inner.planes.entry(id.to_owned()).or_insert_with(|| Plane {
            streams: 0,
            selector: selector.clone(),
            revision: None,
            pools: HashMap::new(),
            reported_at: None,
        });
        let was = plane.connected(now, linger);
        plane.streams += 1;
        plane.selector = selector;
        drop(inner);
        let guard = StreamGuard {
            planes: self.clone(),
            id: id.to_owned(),
        };
        (guard, !was)
    }

    /// Records `report`, from a data plane serving the pools `selector` selects. A report
    /// from a data plane without a stream (its stream just broke, or it streams from another
    /// replica) keeps it connected for [`LINGER`].
    pub fn report(&self, report: Report, selector: Selector, now: Instant) -> Reported {
        let linger = self.linger;
        let mut inner = self.lock();
        let plane = inner
            .planes
            .entry(report.data_plane.clone())
            .or_insert_with(|| Plane {
                streams: 0,
                selector: selector.clone(),
                revision: None,
                pools: HashMap::new(),
                reported_at: None,
            });
        let was = plane.connected(now, linger);
        plane.revision = Some(report.revision);
        let seen = index(report);
        let pools = changed_pools(&plane.pools, &seen);
        plane.pools = seen;
        plane.reported_at = Some(now);
        let mut selectors = Vec::new();
        if plane.selector != selector {
            selectors.push(std::mem::replace(&mut plane.selector, selector));
            selectors.push(plane.selector.clone());
        } else if !was {
            selectors.push(plane.selector.clone());
        }
        Reported { pools, selectors }
    }

    /// Forgets the data planes no longer connected; returns their selectors (the pools they
    /// selected lost a data plane).
    pub fn expire(&self, now: Instant) -> Vec<(String, Selector)> {
        let linger = self.linger;
        let mut inner = self.lock();
        let gone: Vec<String> = inner
            .planes
            .iter()
            .filter(|(_, p)| !p.connected(now, linger))
            .map(|(id, _)| id.clone())
            .collect();
        gone.into_iter()
            .filter_map(|id| inner.planes.remove(&id).map(|p| (id, p.selector)))
            .collect()
    }

    /// Connected data planes.
    pub fn connected(&self, now: Instant) -> usize {
        let inner = self.lock();
        inner
            .planes
            .values()
            .filter(|p| p.connected(now, self.linger))
            .count()
    }

    /// What the connected data planes selecting a pool (`name`, with `labels`) say of its
    /// `generation`, whose ready targets are `targets`.
    pub fn observe(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
        generation: i64,
        targets: &[SocketAddr],
        now: Instant,
    ) -> Observation {
        let inner = self.lock();
        let serving: Vec<(&String, &Plane)> = inner
            .planes
            .iter()
            .filter(|(_, p)| p.connected(now, self.linger) && p.selector.matches(labels))
            .collect();
        let mut seen = Observation {
            connected: count(serving.len()),
            ..Observation::default()
        };
        for (id, plane) in &serving {
            let Some(view) = plane.pools.get(name) else {
                continue;
            };
            if view.applied == Some(generation) {
                seen.synced += 1;
            }
            if seen.rejected.is_none()
                && let Some((_, reason)) = view.rejected.as_ref().filter(|(g, _)| *g == generation)
            {
                seen.rejected = Some(Rejection {
                    data_plane: (*id).clone(),
                    reason: reason.clone(),
                });
            }
        }
        if !serving.is_empty() {
            let healthy_everywhere = |target: &SocketAddr| {
                serving
                    .iter()
                    .all(|(_, plane)| plane.pools.get(name).is_some_and(|v| v.healthy(target)))
            };
            seen.healthy = count(targets.iter().filter(|t| healthy_everywhere(t)).count());
        }
        seen
    }

    /// Notes committed `revisions`, first staged at `staged`, to time their convergence.
    pub fn committed(&self, revisions: RangeInclusive<u64>, staged: Instant) {
        let mut inner = self.lock();
        for revision in revisions {
            inner.pending.push_back((revision, staged));
        }
        while inner.pending.len() > MAX_PENDING {
            inner.pending.pop_front();
        }
    }

    /// The convergence times of the changes every data plane with an open stream has now
    /// reported (a revision `issued` by this process, at or after the change's), which are
    /// then forgotten. With no stream open, pending changes are dropped unmeasured.
    pub fn converged(&self, now: Instant, issued: impl Fn(u64) -> bool) -> Vec<Duration> {
        let mut inner = self.lock();
        let streaming: Vec<&Plane> = inner.planes.values().filter(|p| p.streams > 0).collect();
        if streaming.is_empty() {
            inner.pending.clear();
            return Vec::new();
        }
        let Some(reached) = streaming
            .iter()
            .map(|p| p.revision.filter(|r| issued(*r)).unwrap_or(0))
            .min()
        else {
            return Vec::new();
        };
        let mut times = Vec::new();
        while let Some(&(revision, staged)) = inner.pending.front() {
            if revision > reached {
                break;
            }
            times.push(now.saturating_duration_since(staged));
            inner.pending.pop_front();
        }
        times
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Plane {
    fn connected(&self, now: Instant, linger: Duration) -> bool {
        self.streams > 0
            || self
                .reported_at
                .is_some_and(|at| now.saturating_duration_since(at) < linger)
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let mut inner = self.planes.lock();
        if let Some(plane) = inner.planes.get_mut(&self.id) {
            plane.streams = plane.streams.saturating_sub(1);
        }
    }
}

/// Pools whose applied generation, refusal or health differ between two reports.
fn changed_pools(
    before: &HashMap<String, PoolView>,
    after: &HashMap<String, PoolView>,
) -> Vec<String> {
    let mut names: Vec<&String> = before
        .keys()
        .chain(after.keys())
        .filter(|name| before.get(*name) != after.get(*name))
        .collect();
    names.sort_unstable();
    names.dedup();
    names.into_iter().cloned().collect()
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use weir_api::channel::{AppliedPool, PoolHealth, RejectedPool};

    use super::*;

    fn addr(last: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, last], 80))
    }

    fn report(id: &str, revision: u64, generation: i64, healthy: &[u8]) -> Report {
        Report {
            data_plane: id.to_owned(),
            revision,
            applied: vec![AppliedPool {
                name: "ns/web".into(),
                generation,
            }],
            rejected: vec![],
            health: vec![PoolHealth {
                name: "ns/web".into(),
                healthy: healthy.iter().map(|l| addr(*l)).collect(),
                unhealthy: vec![],
            }],
            selector: String::new(),
        }
    }

    fn labels(team: &str) -> BTreeMap<String, String> {
        [("team".to_owned(), team.to_owned())].into()
    }

    #[test]
    fn counts_come_from_the_connected_data_planes_that_select_the_pool() {
        let planes = Arc::new(DataPlanes::new(LINGER));
        let now = Instant::now();
        let (_a, new) = planes.stream_opened("a", Selector::default(), now);
        assert!(new);
        let (_b, _) = planes.stream_opened("b", Selector::default(), now);
        let (_c, _) = planes.stream_opened("c", Selector::parse("team=other").unwrap(), now);
        let targets = [addr(1), addr(2)];
        let seen =
            |planes: &DataPlanes| planes.observe("ns/web", &labels("shop"), 2, &targets, now);
        assert_eq!(
            seen(&planes),
            Observation {
                connected: 2,
                ..Observation::default()
            },
            "c does not select it; no report yet"
        );
        planes.report(report("a", 10, 2, &[1, 2]), Selector::default(), now);
        planes.report(report("b", 10, 1, &[1]), Selector::default(), now);
        assert_eq!(
            seen(&planes),
            Observation {
                connected: 2,
                synced: 1,
                healthy: 1,
                rejected: None
            },
            "b runs generation 1 and sees only 10.0.0.1 healthy"
        );
        let mut refusal = report("b", 11, 1, &[1, 2]);
        refusal.rejected.push(RejectedPool {
            name: "ns/web".into(),
            generation: 2,
            reason: "route taken".into(),
        });
        let reported = planes.report(refusal, Selector::default(), now);
        assert_eq!(reported.pools, ["ns/web"]);
        assert!(reported.selectors.is_empty(), "b was connected already");
        assert_eq!(
            seen(&planes).rejected,
            Some(Rejection {
                data_plane: "b".into(),
                reason: "route taken".into()
            })
        );
        assert_eq!(seen(&planes).healthy, 2);
    }

    #[test]
    fn a_report_with_another_selector_changes_the_pools_of_both() {
        let planes = DataPlanes::new(LINGER);
        let now = Instant::now();
        let edge = Selector::parse("tier=edge").unwrap();
        planes.report(report("a", 1, 1, &[1]), Selector::default(), now);
        let moved = planes.report(report("a", 2, 1, &[1]), edge.clone(), now);
        assert_eq!(moved.selectors, [Selector::default(), edge]);
        let internal = BTreeMap::from([("tier".to_owned(), "internal".to_owned())]);
        let seen = planes.observe("ns/web", &internal, 1, &[addr(1)], now);
        assert_eq!(
            seen.connected, 0,
            "a no longer serves pools outside tier=edge"
        );
    }

    #[test]
    fn an_unchanged_report_changes_no_pool() {
        let planes = DataPlanes::new(LINGER);
        let now = Instant::now();
        let first = planes.report(report("a", 1, 1, &[1]), Selector::default(), now);
        assert_eq!(first.pools, ["ns/web"]);
        assert_eq!(first.selectors, [Selector::default()]);
        assert_eq!(
            planes
                .report(report("a", 2, 1, &[1]), Selector::default(), now)
                .pools
                .len(),
            0
        );
        assert_eq!(
            planes
                .report(report("a", 3, 1, &[2]), Selector::default(), now)
                .pools,
            ["ns/web"]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_data_plane_whose_stream_ended_lingers_until_its_reports_stop() {
        let planes = Arc::new(DataPlanes::new(LINGER));
        let (stream, _) = planes.stream_opened("a", Selector::default(), Instant::now());
        planes.report(report("a", 1, 1, &[1]), Selector::default(), Instant::now());
        drop(stream);
        tokio::time::advance(Duration::from_secs(20)).await;
        assert_eq!(planes.connected(Instant::now()), 1);
        assert!(planes.expire(Instant::now()).is_empty());
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(planes.connected(Instant::now()), 0);
        let gone = planes.expire(Instant::now());
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].0, "a");
    }

    #[tokio::test(start_paused = true)]
    async fn convergence_is_timed_until_every_streaming_data_plane_reports_the_revision() {
        let planes = Arc::new(DataPlanes::new(LINGER));
        let issued = |r: u64| (100..200).contains(&r);
        let (_a, _) = planes.stream_opened("a", Selector::default(), Instant::now());
        let (_b, _) = planes.stream_opened("b", Selector::default(), Instant::now());
        planes.committed(101..=102, Instant::now());
        tokio::time::advance(Duration::from_millis(30)).await;
        planes.report(
            report("a", 102, 1, &[]),
            Selector::default(),
            Instant::now(),
        );
        assert!(
            planes.converged(Instant::now(), issued).is_empty(),
            "b has not reported"
        );
        planes.report(report("b", 7, 1, &[]), Selector::default(), Instant::now());
        assert!(
            planes.converged(Instant::now(), issued).is_empty(),
            "b's revision came from another controller"
        );
        tokio::time::advance(Duration::from_millis(20)).await;
        planes.report(
            report("b", 101, 1, &[]),
            Selector::default(),
            Instant::now(),
        );
        assert_eq!(
            planes.converged(Instant::now(), issued),
            [Duration::from_millis(50)]
        );
        planes.report(
            report("b", 102, 1, &[]),
            Selector::default(),
            Instant::now(),
        );
        assert_eq!(
            planes.converged(Instant::now(), issued),
            [Duration::from_millis(50)]
        );
    }
}
