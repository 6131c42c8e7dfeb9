//! Answers the proxy makes when a target cannot: 502, 503 and 504, each with its reason and
//! the request id.

use std::time::Duration;

use crate::support::{Backend, Proxy, Refusing, Reply, pool, pool_at, pools_file};

/// Checks the parts every proxy-made error shares and prints them.
fn assert_proxy_error(what: &str, reply: &Reply, status: u16, reason: &str) {
    let id = reply.header("x-request-id").unwrap_or_default();
    println!(
        "{what}: {} in {:.0} ms, x-weir-error {:?}, body {:?}",
        reply.status,
        reply.elapsed.as_secs_f64() * 1e3,
        reply.header("x-weir-error"),
        reply.body.trim()
    );
    assert_eq!(reply.status, status, "{what}: {}", reply.body);
    assert_eq!(reply.header("x-weir-error"), Some(reason), "{what}");
    assert!(!id.is_empty(), "{what}: no x-request-id");
    assert!(
        reply.body.contains(id),
        "{what}: the body lacks the request id {id}: {}",
        reply.body
    );
}

#[tokio::test]
async fn a_target_refusing_connections_gets_502_connect_failure() {
    let refused = Refusing::bind();
    let proxy = Proxy::start(
        &pools_file(&[pool_at("web", &[], &[(refused.addr, 1)])]),
        &[],
    )
    .await;
    let reply = proxy.get("/", &[]).await;
    assert_proxy_error(
        "target refusing connections",
        &reply,
        502,
        "connect-failure",
    );
    let status = proxy.status().await;
    println!(
        "/status failures of the target: {}",
        status["pools"][0]["targets"][0]["failures"]
    );
    assert_eq!(status["pools"][0]["proxy_errors"]["502"], 1);
}

#[tokio::test]
async fn a_pool_without_targets_gets_503_no_usable_target() {
    let proxy = Proxy::start(&pools_file(&[pool_at("web", &[], &[])]), &[]).await;
    let reply = proxy.get("/", &[]).await;
    assert_proxy_error("pool without targets", &reply, 503, "no-usable-target");
}

#[tokio::test]
async fn a_target_slower_than_the_request_timeout_gets_504_within_a_second() {
    let backend = Backend::start("slow");
    let yaml = pools_file(&[pool(
        "web",
        &["timeouts: { request: 500ms }"],
        &[(&backend, 1)],
    )]);
    let proxy = Proxy::start(&yaml, &[]).await;
    let reply = proxy.get("/delay/2000", &[]).await;
    assert_proxy_error(
        "/delay/2000 with a 500ms request timeout",
        &reply,
        504,
        "timeout",
    );
    assert!(
        reply.elapsed >= Duration::from_millis(450) && reply.elapsed <= Duration::from_millis(1000),
        "504 after {:?}, want about 500 ms",
        reply.elapsed
    );
}
