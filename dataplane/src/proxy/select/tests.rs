//! The candidates of a try, over real pools.

use std::sync::Arc;

use super::*;
use crate::affinity::cookie_id;
use crate::state::compiled_pool;

const CLIENT: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 7));

/// A round-robin pool `web` of `n` targets with `extra` YAML lines in its entry.
fn pool(n: u16, extra: &str) -> Arc<PoolState> {
    let targets: String = (1..=n)
        .map(|i| format!("      - {{ address: 127.0.0.1:{} }}\n", 9000 + i))
        .collect();
    compiled_pool(&format!(
        "pools:\n  - name: web\n{extra}    targets:\n{targets}"
    ))
}

fn offered(offers: Offers<'_, '_>) -> Vec<usize> {
    offers.map(|o| o.index).collect()
}

#[tokio::test(start_paused = true)]
async fn every_target_is_offered_once_and_then_no_more() {
    let pool = pool(5, "");
    let headers = HeaderMap::new();
    let mut all = offered(Offers::new(&pool, &headers, CLIENT, Instant::now(), &[]));
    assert_eq!(all.len(), 5, "{all:?}");
    all.sort_unstable();
    assert_eq!(all, [0, 1, 2, 3, 4]);
    let err = select_with(&pool, &headers, CLIENT, Instant::now(), &[], |_| false).unwrap_err();
    assert_eq!(err.status(), 503, "none taken: {err}");
    assert!(matches!(err, ProxyError::NoTarget(ref name) if name == "web"));
}

#[tokio::test(start_paused = true)]
async fn the_candidates_stop_at_their_bound() {
    let pool = pool(5, "");
    let headers = HeaderMap::new();
    let offers = Offers::new(&pool, &headers, CLIENT, Instant::now(), &[]).bounded(2);
    assert_eq!(offered(offers).len(), 2);
    let offers = Offers::new(&pool, &headers, CLIENT, Instant::now(), &[0, 1]).bounded(0);
    assert_eq!(offered(offers), Vec::<usize>::new());
}

#[tokio::test(start_paused = true)]
async fn tried_targets_come_last_and_only_once_every_other_was_offered() {
    let pool = pool(3, "");
    let headers = HeaderMap::new();
    let offers = offered(Offers::new(
        &pool,
        &headers,
        CLIENT,
        Instant::now(),
        &[0, 2],
    ));
    assert_eq!(offers[0], 1, "the untried target first: {offers:?}");
    let mut again = offers[1..].to_vec();
    again.sort_unstable();
    assert_eq!(again, [0, 2], "then the tried ones, once each: {offers:?}");

    let chosen = select(&pool, &headers, CLIENT, Instant::now(), &[0, 1, 2]).unwrap();
    assert!(chosen.index < 3, "all tried: any may take a second try");
}

#[tokio::test(start_paused = true)]
async fn a_target_its_breaker_refuses_is_skipped() {
    let pool = pool(3, "");
    let headers = HeaderMap::new();
    let mut asked = Vec::new();
    let chosen = select_with(&pool, &headers, CLIENT, Instant::now(), &[], |i| {
        asked.push(i);
        i != asked[0]
    })
    .unwrap();
    assert_eq!(asked.len(), 2, "{asked:?}");
    assert_ne!(chosen.index, asked[0], "the refused one is not chosen");
    assert_eq!(chosen.index, asked[1]);
}

#[tokio::test(start_paused = true)]
async fn an_unusable_target_is_never_offered() {
    let pool = pool(3, "    circuitBreaker: { failureThreshold: 1 }\n");
    let now = Instant::now();
    pool.targets[1]
        .health
        .record(crate::health::Outcome::GatewayFailure, now, || true);
    let headers = HeaderMap::new();
    let mut offers = offered(Offers::new(&pool, &headers, CLIENT, now, &[]));
    offers.sort_unstable();
    assert_eq!(offers, [0, 2], "the open breaker's target is left out");
}

#[tokio::test(start_paused = true)]
async fn a_client_pinned_by_its_cookie_is_offered_its_target_first() {
    let pool = pool(3, "    sessionAffinity: { type: Cookie }\n");
    let pinned = &pool.targets[2];
    let mut headers = HeaderMap::new();
    let cookie = format!("weir-session={:016x}", cookie_id(pinned.stats.address));
    headers.insert(http::header::COOKIE, cookie.parse().unwrap());
    for _ in 0..5 {
        let first = select(&pool, &headers, CLIENT, Instant::now(), &[]).unwrap();
        assert_eq!(first.index, 2);
        assert_eq!(first.set_cookie, None, "already pinned: no new cookie");
    }
    let mut offers = Offers::new(&pool, &headers, CLIENT, Instant::now(), &[]);
    assert_eq!(offers.next().map(|o| o.index), Some(2));
    let next = offers
        .next()
        .expect("the balancer's pick when the pinned one is passed");
    assert_ne!(next.index, 2);
    assert_eq!(
        next.set_cookie,
        pool.targets[next.index].set_cookie.as_ref(),
        "the new target's cookie is set"
    );
    assert!(next.set_cookie.is_some());

    let elsewhere = select(&pool, &HeaderMap::new(), CLIENT, Instant::now(), &[]).unwrap();
    assert!(
        elsewhere.set_cookie.is_some(),
        "an unpinned client gets a cookie"
    );
}
