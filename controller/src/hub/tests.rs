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

#[tokio::test(start_paused = true)]
async fn a_burst_is_committed_as_one_push_within_the_delay() {
    let hub = Arc::new(Hub::new(BASE));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let committer = {
        let hub = hub.clone();
        tokio::spawn(async move {
            hub.coalesce(QUIET, MAX_DELAY, |r, first| {
                let _ = tx.send((r, first, Instant::now()));
            })
            .await;
        })
    };
    let start = Instant::now();
    // A change every 7 ms from 3 ms to 276 ms: never quiet for 20 ms until the end, so
    // commits come MAX_DELAY after the first change each time, then after the quiet.
    tokio::time::sleep(Duration::from_millis(3)).await;
    for i in 0..40 {
        hub.stage("ns/a", Some(entry("ns/a", 1, i + 1, "x")));
        tokio::time::sleep(Duration::from_millis(7)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut commits = Vec::new();
    while let Ok((revisions, first, at)) = rx.try_recv() {
        let ms = |t: Instant| (t - start).as_millis();
        commits.push((revisions.count(), ms(first), ms(at)));
    }
    assert_eq!(
        commits,
        [(1, 3, 103), (1, 108, 208), (1, 213, 296)],
        "one revision per commit, at most every 100 ms, the last after 20 ms of quiet"
    );
    // A lone change goes out after the quiet period.
    let lone = Instant::now();
    hub.stage("ns/b", Some(entry("ns/b", 1, 1, "x")));
    let (_, first, at) = rx.recv().await.unwrap();
    assert_eq!((first - lone, at - lone), (Duration::ZERO, QUIET));
    committer.abort();
}
