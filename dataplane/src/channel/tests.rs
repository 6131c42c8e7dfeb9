use super::*;

fn pool(name: &str, generation: i64, host: &str, weight: u32) -> ChannelPool {
    let pool: Pool = serde_json::from_value(serde_json::json!({
        "name": name,
        "routes": [{"host": host, "pathPrefix": "/"}],
        "targets": [{"address": "127.0.0.1:9001", "weight": weight}],
    }))
    .unwrap();
    ChannelPool { generation, pool }
}

#[test]
fn a_snapshot_then_changes_build_the_pools_in_force() {
    let mut r = Received::default();
    let changed = r
        .apply(Update::Snapshot {
            revision: 5,
            pools: vec![pool("shop/a", 1, "a.example", 1)],
        })
        .unwrap();
    assert!(changed);
    assert_eq!(r.revision, 5);
    r.apply(Update::Pool {
        revision: 6,
        pool: Box::new(pool("shop/b", 1, "b.example", 1)),
    })
    .unwrap();
    r.apply(Update::Removed {
        revision: 7,
        name: "shop/a".into(),
    })
    .unwrap();
    let names: Vec<_> = r.pools_file().pools.into_iter().map(|p| p.name).collect();
    assert_eq!(names, ["shop/b"]);
    assert!(!r.apply(Update::Heartbeat { revision: 7 }).unwrap());
}

#[test]
fn a_pool_sent_again_unchanged_stays_the_arc_in_force_and_a_changed_one_is_new() {
    let mut r = Received::default();
    r.apply(Update::Snapshot {
        revision: 1,
        pools: vec![
            pool("shop/a", 1, "a.example", 1),
            pool("shop/b", 1, "b.example", 1),
        ],
    })
    .unwrap();
    let (a, b) = (
        r.pools["shop/a"].pool.clone(),
        r.pools["shop/b"].pool.clone(),
    );
    r.apply(Update::Pool {
        revision: 2,
        pool: Box::new(pool("shop/a", 2, "a.example", 1)),
    })
    .unwrap();
    assert!(
        Arc::ptr_eq(&r.pools["shop/a"].pool, &a),
        "generation 2 compiles the same pool: kept"
    );
    assert_eq!(r.pools["shop/a"].generation, 2);
    r.apply(Update::Pool {
        revision: 3,
        pool: Box::new(pool("shop/b", 2, "b.example", 5)),
    })
    .unwrap();
    assert!(!Arc::ptr_eq(&r.pools["shop/b"].pool, &b), "changed: new");
    assert_eq!(r.pools["shop/b"].pool.targets[0].weight, 5);
    r.apply(Update::Snapshot {
        revision: 9,
        pools: vec![pool("shop/a", 2, "a.example", 1)],
    })
    .unwrap();
    assert!(
        Arc::ptr_eq(&r.pools["shop/a"].pool, &a),
        "a snapshot after a reconnect keeps what it repeats"
    );
    let shared = r.pools();
    assert!(Arc::ptr_eq(&shared[0], &a), "handed on as it is held");
}

#[test]
fn a_skipped_revision_asks_for_a_reconnect() {
    let mut r = Received::default();
    r.apply(Update::Snapshot {
        revision: 5,
        pools: vec![],
    })
    .unwrap();
    let e = r
        .apply(Update::Pool {
            revision: 7,
            pool: Box::new(pool("shop/a", 1, "a.example", 1)),
        })
        .unwrap_err();
    assert!(matches!(e, ChannelError::Gap { had: 5, got: 7 }), "{e}");
    assert!(r.pools.is_empty(), "nothing applied out of order");
}

#[test]
fn an_invalid_pool_is_refused_and_its_last_good_version_keeps_serving() {
    let mut r = Received::default();
    r.apply(Update::Snapshot {
        revision: 1,
        pools: vec![pool("shop/a", 1, "a.example", 5)],
    })
    .unwrap();
    let changed = r
        .apply(Update::Pool {
            revision: 2,
            pool: Box::new(pool("shop/a", 2, "a.example", 5_000_000)),
        })
        .unwrap();
    assert!(!changed);
    assert_eq!(
        r.pools["shop/a"].generation, 1,
        "generation 1 keeps serving"
    );
    let rejected = &r.rejected["shop/a"];
    assert_eq!(rejected.generation, 2);
    assert!(
        rejected.reason.contains("targets[0].weight"),
        "{}",
        rejected.reason
    );
    r.apply(Update::Pool {
        revision: 3,
        pool: Box::new(pool("shop/a", 3, "a.example", 6)),
    })
    .unwrap();
    assert!(
        r.rejected.is_empty(),
        "a good generation clears the refusal"
    );
    assert_eq!(r.pools["shop/a"].generation, 3);
}

#[test]
fn a_pool_claiming_anothers_route_is_refused() {
    let mut r = Received::default();
    r.apply(Update::Snapshot {
        revision: 1,
        pools: vec![pool("shop/a", 1, "a.example", 1)],
    })
    .unwrap();
    r.apply(Update::Pool {
        revision: 2,
        pool: Box::new(pool("shop/b", 1, "a.example", 1)),
    })
    .unwrap();
    assert!(!r.pools.contains_key("shop/b"));
    assert!(
        r.rejected["shop/b"]
            .reason
            .contains("already routed to pool shop/a")
    );
}
