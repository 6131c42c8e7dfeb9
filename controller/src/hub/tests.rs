use super::*;
use weir_api::Pool;

const BASE: u64 = 7 << COUNTER_BITS;

fn entry(name: &str, generation: i64, weight: u32, team: &str) -> Entry {
    let pool: Pool = serde_json::from_value(serde_json::json!({
        "name": name,
        "routes": [{"host": format!("{}.example", name.replace('/', "-")), "pathPrefix": "/"}],
        "targets": [{"address": "10.0.0.1:80", "weight": weight}],
    }))
    .unwrap();
    Entry {
        pool: ChannelPool { generation, pool },
        labels: [("team".to_owned(), team.to_owned())].into(),
    }
}

/// Each line as the data plane reads it.
fn parsed(lines: &[Line]) -> Vec<Update> {
    lines
        .iter()
        .map(|line| {
            let mut out = Vec::new();
            line.write_to(&mut out);
            assert_eq!(out.pop(), Some(b'\n'));
            serde_json::from_slice(&out).expect("a line is an Update")
        })
        .collect()
}

fn describe(lines: &[Line]) -> Vec<String> {
    parsed(lines)
        .iter()
        .map(|u| match u {
            Update::Snapshot { revision, pools } => format!(
                "snapshot@{} [{}]",
                revision - BASE,
                pools
                    .iter()
                    .map(|p| p.pool.name.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            Update::Pool { revision, pool } => {
                format!("pool@{} {}", revision - BASE, pool.pool.name)
            }
            Update::Removed { revision, name } => format!("removed@{} {name}", revision - BASE),
            Update::Heartbeat { revision } => format!("heartbeat@{}", revision - BASE),
        })
        .collect()
}

#[test]
fn lines_from_committed_json_are_what_serde_writes_for_the_update() {
    let hub = Hub::new(BASE);
    hub.stage("shop/a", Some(entry("shop/a", 3, 2, "x")));
    hub.stage("shop/b", Some(entry("shop/b", 1, 1, "x")));
    hub.commit();
    hub.stage("shop/b", None);
    hub.commit();
    let all = Selector::default();
    let a = entry("shop/a", 3, 2, "x").pool;
    let expected = [
        (
            hub.updates(None, &all),
            vec![Update::Snapshot {
                revision: BASE + 3,
                pools: vec![a.clone()],
            }],
        ),
        (
            hub.updates(Some(BASE), &all),
            vec![
                Update::Pool {
                    revision: BASE + 1,
                    pool: Box::new(a),
                },
                Update::Removed {
                    revision: BASE + 2,
                    name: "shop/b".into(),
                },
                Update::Removed {
                    revision: BASE + 3,
                    name: "shop/b".into(),
                },
            ],
        ),
    ];
    for (lines, updates) in expected {
        let mut written = Vec::new();
        lines.iter().for_each(|l| l.write_to(&mut written));
        let mut serde = Vec::new();
        for u in &updates {
            serde_json::to_writer(&mut serde, u).unwrap();
            serde.push(b'\n');
        }
        assert_eq!(
            String::from_utf8(written).unwrap(),
            String::from_utf8(serde).unwrap()
        );
    }
}

#[test]
fn a_change_bumps_the_revision_once_and_an_unchanged_stage_not_at_all() {
    let hub = Hub::new(BASE);
    hub.stage("shop/a", Some(entry("shop/a", 1, 1, "x")));
    hub.stage("shop/a", Some(entry("shop/a", 1, 2, "x")));
    assert_eq!(
        hub.commit(),
        Some(BASE + 1..=BASE + 1),
        "coalesced into one"
    );
    hub.stage("shop/a", Some(entry("shop/a", 1, 2, "x")));
    assert_eq!(hub.commit(), None, "nothing changed");
    hub.stage("shop/b", None);
    assert_eq!(
        hub.commit(),
        None,
        "removing what is not there changes nothing"
    );
    hub.stage("shop/a", None);
    hub.stage("shop/b", Some(entry("shop/b", 1, 1, "x")));
    assert_eq!(hub.commit(), Some(BASE + 2..=BASE + 3));
    assert_eq!(hub.names(), ["shop/b"]);
    assert!(hub.issued(BASE + 3));
    assert!(!hub.issued(BASE + 4));
    assert!(!hub.issued(3));
}

#[test]
fn a_reconnect_gets_what_it_missed_or_a_snapshot() {
    let hub = Hub::with_capacity(BASE, 3);
    let all = Selector::default();
    assert_eq!(describe(&hub.updates(None, &all)), ["snapshot@0 []"]);
    for (i, name) in ["shop/a", "shop/b", "shop/c"].iter().enumerate() {
        hub.stage(name, Some(entry(name, 1, 1, "x")));
        assert_eq!(
            hub.commit(),
            Some(BASE + i as u64 + 1..=BASE + i as u64 + 1)
        );
    }
    assert!(hub.updates(Some(BASE + 3), &all).is_empty(), "up to date");
    assert_eq!(
        describe(&hub.updates(Some(BASE + 1), &all)),
        ["pool@2 shop/b", "pool@3 shop/c"]
    );
    assert_eq!(
        describe(&hub.updates(Some(BASE), &all)),
        ["pool@1 shop/a", "pool@2 shop/b", "pool@3 shop/c"]
    );
    hub.stage("shop/a", None);
    hub.commit();
    assert_eq!(
        describe(&hub.updates(Some(BASE), &all)),
        ["snapshot@4 [shop/b,shop/c]"],
        "revision 1 fell out of the log"
    );
    assert_eq!(
        describe(&hub.updates(Some(BASE + 1), &all)),
        ["pool@2 shop/b", "pool@3 shop/c", "removed@4 shop/a"]
    );
    for foreign in [5, BASE + 99, BASE + (1 << COUNTER_BITS) + 2] {
        assert_eq!(
            describe(&hub.updates(Some(foreign), &all)),
            ["snapshot@4 [shop/b,shop/c]"],
            "a revision this hub never issued: {foreign}"
        );
    }
}

#[test]
fn a_selector_limits_the_snapshot_and_turns_other_changes_into_removals() {
    let hub = Hub::new(BASE);
    let shop = Selector::parse("team=shop").unwrap();
    hub.stage("ns/a", Some(entry("ns/a", 1, 1, "shop")));
    hub.stage("ns/b", Some(entry("ns/b", 1, 1, "web")));
    hub.commit();
    assert_eq!(describe(&hub.updates(None, &shop)), ["snapshot@2 [ns/a]"]);
    assert_eq!(hub.selected(&shop), ["ns/a"]);
    // b changes, then a is relabelled out of the selection.
    hub.stage("ns/b", Some(entry("ns/b", 2, 1, "web")));
    hub.commit();
    hub.stage("ns/a", Some(entry("ns/a", 1, 1, "web")));
    hub.commit();
    assert_eq!(
        describe(&hub.updates(Some(BASE + 2), &shop)),
        ["removed@3 ns/b", "removed@4 ns/a"],
        "every revision is accounted for"
    );
}

#[test]
fn a_pool_changed_twice_is_sent_as_it_now_is() {
    let hub = Hub::new(BASE);
    let all = Selector::default();
    hub.stage("ns/a", Some(entry("ns/a", 1, 1, "x")));
    hub.commit();
    hub.stage("ns/a", Some(entry("ns/a", 2, 5, "x")));
    hub.commit();
    let updates = hub.updates(Some(BASE), &all);
    assert_eq!(describe(&updates), ["pool@1 ns/a", "pool@2 ns/a"]);
    for u in &parsed(&updates) {
        let Update::Pool { pool, .. } = u else {
            unreachable!()
        };
        assert_eq!(pool.generation, 2);
    }
}

/// What [`Hub::coalesce`] reported of each commit: `(revisions, first staged, committed at)`.
type Commits = tokio::sync::mpsc::UnboundedReceiver<(RangeInclusive<u64>, Instant, Instant)>;

/// Commits of a hub running [`Hub::coalesce`] with [`QUIET`] and [`MAX_DELAY`], on tokio's
/// paused clock.
fn coalescing(hub: &Arc<Hub>) -> (tokio::task::JoinHandle<()>, Commits) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let hub = hub.clone();
    let committer = tokio::spawn(async move {
        hub.coalesce(QUIET, MAX_DELAY, |r, first| {
            let _ = tx.send((r, first, Instant::now()));
        })
        .await;
    });
    (committer, rx)
}

/// Commits received so far as `(revisions, first staged, committed at)`, in ms since `start`.
fn received(rx: &mut Commits, start: Instant) -> Vec<(usize, u128, u128)> {
    let ms = |t: Instant| (t - start).as_millis();
    std::iter::from_fn(|| rx.try_recv().ok())
        .map(|(revisions, first, at)| (revisions.count(), ms(first), ms(at)))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_change_to_an_idle_hub_is_committed_at_once() {
    let hub = Arc::new(Hub::new(BASE));
    let (committer, mut rx) = coalescing(&hub);
    let mut revision = hub.subscribe();
    for (i, name) in ["ns/a", "ns/b", "ns/a"].iter().enumerate() {
        let staged = Instant::now();
        hub.stage(name, Some(entry(name, 1, i as u32 + 1, "x")));
        let (revisions, first, at) = rx.recv().await.unwrap();
        assert_eq!((first, at), (staged, staged), "change {i}: no wait");
        assert_eq!(revisions, BASE + i as u64 + 1..=BASE + i as u64 + 1);
        assert_eq!(*revision.borrow_and_update(), BASE + i as u64 + 1);
        // Quiet long enough for the hub to be idle again.
        tokio::time::sleep(QUIET * 2).await;
    }
    // Staging what is in force changes nothing: no commit, no new revision.
    hub.stage("ns/a", Some(entry("ns/a", 1, 3, "x")));
    tokio::time::sleep(MAX_DELAY * 2).await;
    assert!(rx.try_recv().is_err(), "nothing to commit");
    assert!(!revision.has_changed().unwrap());
    committer.abort();
}

#[tokio::test(start_paused = true)]
async fn a_burst_is_committed_as_its_first_change_then_one_batch() {
    let hub = Arc::new(Hub::new(BASE));
    let (committer, mut rx) = coalescing(&hub);
    let start = Instant::now();
    // 50 changes 1 ms apart, to 25 pools twice over: well within MAX_DELAY.
    for i in 0..50u32 {
        let name = format!("ns/p{}", i % 25);
        hub.stage(&name, Some(entry(&name, 1, i + 1, "x")));
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    tokio::time::sleep(MAX_DELAY * 2).await;
    assert_eq!(
        received(&mut rx, start),
        [(1, 0, 0), (25, 1, 69)],
        "the first at once; the other 49, one revision per pool, 20 ms after the last"
    );
    for i in 0..25u32 {
        let pool = hub.get(&format!("ns/p{i}")).unwrap();
        assert_eq!(
            pool.pool.pool.targets[0].weight,
            i + 26,
            "p{i} as last staged"
        );
    }
    committer.abort();
}

#[tokio::test(start_paused = true)]
async fn a_steady_stream_is_still_committed_at_least_every_max_delay() {
    let hub = Arc::new(Hub::new(BASE));
    let (committer, mut rx) = coalescing(&hub);
    let start = Instant::now();
    // A change every 7 ms from 3 ms to 276 ms: never quiet for 20 ms until the end, so the
    // first goes out at once, then batches MAX_DELAY after their first change, the last
    // after 20 ms of quiet.
    tokio::time::sleep(Duration::from_millis(3)).await;
    for i in 0..40 {
        hub.stage("ns/a", Some(entry("ns/a", 1, i + 1, "x")));
        tokio::time::sleep(Duration::from_millis(7)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let commits = received(&mut rx, start);
    assert_eq!(
        commits,
        [(1, 3, 3), (1, 10, 110), (1, 115, 215), (1, 220, 296)],
        "one revision per commit, at most every 100 ms"
    );
    for (_, first, at) in &commits {
        assert!(at - first <= MAX_DELAY.as_millis(), "held {first}..{at} ms");
    }
    assert_eq!(hub.get("ns/a").unwrap().pool.pool.targets[0].weight, 40);
    // After the stream, the hub is idle again: a lone change goes out at once.
    let lone = Instant::now();
    hub.stage("ns/b", Some(entry("ns/b", 1, 1, "x")));
    let (_, first, at) = rx.recv().await.unwrap();
    assert_eq!((first - lone, at - lone), (Duration::ZERO, Duration::ZERO));
    committer.abort();
}

#[tokio::test(start_paused = true)]
async fn whatever_the_timing_the_last_staged_state_reaches_subscribers() {
    let hub = Arc::new(Hub::new(BASE));
    let (committer, mut rx) = coalescing(&hub);
    let mut revision = hub.subscribe();
    let mut rng = fastrand::Rng::with_seed(14);
    let mut last = BTreeMap::new();
    // Changes and removals of 8 pools, 0 to 40 ms apart: idle spells, bursts and streams.
    for i in 0..400u32 {
        let name = format!("ns/p{}", rng.u32(0..8));
        let change = rng.u8(0..10) > 0;
        let staged = change.then(|| entry(&name, 1, i + 1, "x"));
        last.insert(name.clone(), staged.clone());
        hub.stage(&name, staged);
        tokio::time::sleep(Duration::from_millis(rng.u64(0..=40))).await;
    }
    tokio::time::sleep(MAX_DELAY + QUIET).await;
    assert!(
        hub.lock().staged.is_empty(),
        "everything staged is committed"
    );
    assert_eq!(*revision.borrow_and_update(), hub.revision());
    for (name, staged) in &last {
        assert_eq!(hub.get(name).as_deref(), staged.as_ref(), "{name}");
    }
    let commits: Vec<_> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
    assert!(
        commits.len() > 1 && commits.len() < 400,
        "{} commits",
        commits.len()
    );
    assert!(
        commits
            .windows(2)
            .all(|w| *w[0].0.end() + 1 == *w[1].0.start()),
        "every revision was told, in order"
    );
    committer.abort();
}
