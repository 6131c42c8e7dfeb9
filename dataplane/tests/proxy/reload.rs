//! Reloading the pools file: on change (polled) and on SIGHUP; invalid files are refused.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::support::{Backend, Proxy, Stop, eventually, load, pool, pools_file};

const RELOADS_OK: &str = "weir_config_reloads_total{result=\"success\"}";
const RELOADS_FAILED: &str = "weir_config_reloads_total{result=\"failure\"}";

#[tokio::test]
async fn a_target_added_to_the_pools_file_gets_traffic_within_2s_under_load_without_failures() {
    let (a, b, c) = (
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("c"),
    );
    let proxy = Proxy::start(&pools_file(&[pool("web", &[], &[(&a, 1), (&b, 1)])]), &[]).await;

    let started = Instant::now();
    let traffic = tokio::spawn(load(
        proxy.url("/"),
        4,
        Stop::At(started + Duration::from_millis(3500)),
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let written = Instant::now();
    proxy.write_pools(&pools_file(&[pool(
        "web",
        &[],
        &[(&a, 1), (&b, 1), (&c, 1)],
    )]));
    let tally = traffic.await.expect("the load task");

    let to_first = tally
        .first_seen
        .get("c")
        .map(|at| at.saturating_duration_since(written));
    println!(
        "3.5 s of load, c added at 0.5 s: {tally}; c's first request {:?} after the write",
        to_first
    );
    assert_eq!(
        tally.failures, 0,
        "requests failed across the reload: {tally}"
    );
    let to_first = to_first.expect("the added target got no traffic");
    assert!(
        to_first <= Duration::from_secs(2),
        "c got traffic only {to_first:?} after the write"
    );
    assert_eq!(proxy.metric(RELOADS_OK).await, Some(1.0));
    assert_eq!(proxy.metric(RELOADS_FAILED).await, Some(0.0));
}

#[tokio::test]
async fn an_invalid_pools_file_is_refused_with_its_line_and_field_and_the_old_config_keeps_serving()
{
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let proxy = Proxy::start(&pools_file(&[pool("web", &[], &[(&a, 1), (&b, 1)])]), &[]).await;

    let started = Instant::now();
    let traffic = tokio::spawn(load(
        proxy.url("/"),
        3,
        Stop::At(started + Duration::from_millis(2500)),
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let invalid =
        pools_file(&[pool("web", &[], &[(&a, 1), (&b, 7)])]).replace("weight: 7", "weight: heavy");
    let line = 1 + invalid
        .lines()
        .position(|l| l.contains("heavy"))
        .expect("the bad line");
    proxy.write_pools(&invalid);

    let mut refused = None;
    let waiting = Instant::now();
    while waiting.elapsed() < Duration::from_secs(3) {
        if proxy.metric(RELOADS_FAILED).await == Some(1.0) {
            refused = Some(waiting.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let tally = traffic.await.expect("the load task");
    let log = proxy.log();
    let expected = format!(
        "{}:{line}: field pools[0].targets[1].weight: ",
        proxy.pools_file().display()
    );
    let logged = log.lines().find(|l| l.contains(&expected));
    println!(
        "invalid file (weight: heavy on line {line}) refused after {refused:?}; traffic: {tally}"
    );
    println!("logged: {logged:?}");

    assert!(
        refused.is_some(),
        "weir_config_reloads_total{{result=\"failure\"}} did not reach 1 within 3 s"
    );
    assert_eq!(
        proxy.metric(RELOADS_FAILED).await,
        Some(1.0),
        "the same bad file was counted twice"
    );
    assert_eq!(proxy.metric(RELOADS_OK).await, Some(0.0));
    assert!(
        logged.is_some(),
        "the log does not name `{expected}`:\n{log}"
    );
    assert_eq!(
        tally.failures, 0,
        "requests failed while the bad file was there: {tally}"
    );
    assert!(
        tally.count("a") > 0 && tally.count("b") > 0,
        "the old pool stopped serving: {tally}"
    );
    let after = proxy.get("/", &[]).await;
    assert_eq!(after.status, 200, "the old configuration no longer serves");
}

#[tokio::test]
async fn sighup_reloads_the_pools_file() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    // Polling every hour: only the signal can make this reload happen during the test.
    let proxy = Proxy::start(
        &pools_file(&[pool("web", &[], &[(&a, 1)])]),
        &["--watch-interval", "1h"],
    )
    .await;
    proxy.write_pools(&pools_file(&[pool("web", &[], &[(&a, 1), (&b, 1)])]));
    for _ in 0..10 {
        let reply = proxy.get("/", &[]).await;
        assert_eq!(
            reply.backend(),
            Some("a"),
            "the file was reloaded without a signal"
        );
    }

    let signalled = Instant::now();
    proxy.signal(Signal::SIGHUP);
    let mut reached_b = None;
    for _ in 0..200 {
        if proxy.get("/", &[]).await.backend() == Some("b") {
            reached_b = Some(signalled.elapsed());
            break;
        }
        if signalled.elapsed() > Duration::from_secs(2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!("SIGHUP: the added target answered {reached_b:?} after the signal");
    assert!(
        reached_b.is_some(),
        "the target added before SIGHUP got no traffic within 2 s"
    );
    // The new snapshot serves before the reload is counted and logged: wait for both.
    eventually("the reload counted", Duration::from_secs(5), || async {
        match proxy.metric(RELOADS_OK).await {
            Some(1.0) => Ok(()),
            other => Err(format!("{RELOADS_OK} = {other:?}")),
        }
    })
    .await;
    eventually(
        "the reload's reason (SIGHUP) logged",
        Duration::from_secs(5),
        || async {
            let log = proxy.log();
            if log.contains("SIGHUP") {
                Ok(())
            } else {
                Err(log)
            }
        },
    )
    .await;
}
