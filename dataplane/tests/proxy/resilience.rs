//! Failures users must not notice: killed, hung and returning backends, a pool with nothing
//! left, and pool limits. Each test prints what it saw so the figures can be quoted.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;

use crate::support::{Backend, Proxy, Stop, load, load_at_rate, pool, pool_at, pools_file};

/// Settings of a pool that is meant to ride out a dead backend.
const RESILIENT: [&str; 4] = [
    "healthCheck: { path: /health, interval: 500ms, timeout: 200ms, healthyThreshold: 1, unhealthyThreshold: 2 }",
    "outlierDetection: { consecutiveGatewayFailures: 3, baseEjectionTime: 30s }",
    "retries: { attempts: 3, retryOn: [connect-failure, reset, per-try-timeout, 502, 503, 504] }",
    "timeouts: { connect: 200ms, perTry: 300ms, request: 5s }",
];

/// A listener that accepts connections and never answers on them.
struct Silent {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Silent {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let addr = listener.local_addr().expect("its address");
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        Self { addr, task }
    }
}

impl Drop for Silent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_one_of_three_backends_under_load_fails_no_get() {
    let (a, mut b, c) = (
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("c"),
    );
    let yaml = pools_file(&[pool("web", &RESILIENT, &[(&a, 1), (&b, 1), (&c, 1)])]);
    let proxy = Proxy::start(&yaml, &[]).await;
    let run = tokio::spawn(load_at_rate(
        proxy.url("/"),
        250,
        Duration::from_secs(8),
        64,
    ));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let killed_at = Instant::now();
    b.kill();
    let tally = run.await.expect("the load run");
    let status = proxy.status().await;
    println!(
        "kill 1 of 3 under 250 req/s for 8 s: {tally}; retries {}, b is {}",
        status["pools"][0]["retries"], status["pools"][0]["targets"][1]["state"]
    );
    let success = 1.0 - tally.failures as f64 / tally.requests as f64;
    assert!(
        success >= 0.9999,
        "success {:.4}%: {tally}",
        success * 100.0
    );
    if let Some(last) = tally.last_failure {
        assert!(
            last < killed_at + Duration::from_millis(500),
            "a request failed {:?} after the kill, past the first health interval: {tally}",
            last - killed_at
        );
    }
    assert!(tally.count("a") > 0 && tally.count("c") > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_never_answers_costs_at_most_one_per_try_timeout() {
    let (a, c) = (Backend::start("a"), Backend::start("c"));
    let silent = Silent::start().await;
    let yaml = pools_file(&[pool_at(
        "web",
        &RESILIENT,
        &[(a.addr, 1), (silent.addr, 1), (c.addr, 1)],
    )]);
    let proxy = Proxy::start(&yaml, &[]).await;
    let tally = load_at_rate(proxy.url("/"), 100, Duration::from_secs(5), 64).await;
    let status = proxy.status().await;
    println!(
        "a hung target among 3 at 100 req/s for 5 s (perTry 300ms): {tally}; hung target {} after {} ejections",
        status["pools"][0]["targets"][1]["state"], status["pools"][0]["targets"][1]["ejections"]
    );
    let success = 1.0 - tally.failures as f64 / tally.requests as f64;
    assert!(success >= 0.999, "success {:.3}%: {tally}", success * 100.0);
    assert!(
        tally.worst < Duration::from_millis(300 * 2 + 250),
        "the per-try timeout did not bound the latency: worst {:?}",
        tally.worst
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_backend_that_comes_back_gets_traffic_within_two_health_intervals() {
    let (a, mut b) = (Backend::start("a"), Backend::start("b"));
    let b_addr = b.addr;
    let yaml = pools_file(&[pool("web", &RESILIENT, &[(&a, 1), (&b, 1)])]);
    let proxy = Proxy::start(&yaml, &[]).await;
    b.kill();
    // Wait until the proxy has noticed (bounded), so the test measures the return alone.
    let noticed = Instant::now();
    loop {
        let state = proxy.status().await["pools"][0]["targets"][1]["state"].clone();
        if state != "healthy" {
            println!("b noticed down after {:?}: {state}", noticed.elapsed());
            break;
        }
        assert!(
            noticed.elapsed() < Duration::from_secs(5),
            "b never left the healthy state"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _b = Backend::start_at("b", b_addr);
    let back = Instant::now();
    let returned = loop {
        let reply = proxy.get("/", &[]).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        if reply.backend() == Some("b") {
            break back.elapsed();
        }
        assert!(
            back.elapsed() < Duration::from_secs(5),
            "b got no traffic within 5 s of coming back"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    println!(
        "b back after being killed: traffic again {returned:?} after it listened (interval 500ms)"
    );
    assert!(
        returned <= Duration::from_millis(1000 + 100),
        "took {returned:?}, over two health intervals"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_backend_down_requests_get_503_at_once_and_the_proxy_stays_healthy() {
    let (mut a, mut b) = (Backend::start("a"), Backend::start("b"));
    let yaml = pools_file(&[pool("web", &RESILIENT, &[(&a, 1), (&b, 1)])]);
    let proxy = Proxy::start(&yaml, &[]).await;
    a.kill();
    b.kill();
    let noticed = Instant::now();
    loop {
        let status = proxy.status().await;
        let targets = status["pools"][0]["targets"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if targets.iter().all(|t| t["state"] != "healthy") {
            break;
        }
        assert!(
            noticed.elapsed() < Duration::from_secs(5),
            "the targets never left the healthy state"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut worst = Duration::ZERO;
    for _ in 0..20 {
        let reply = proxy.get("/", &[]).await;
        worst = worst.max(reply.elapsed);
        assert_eq!(reply.status, 503, "{}", reply.body);
        assert_eq!(reply.header("x-weir-error"), Some("no-usable-target"));
        assert!(
            reply.body.contains("no usable target in pool web"),
            "{}",
            reply.body
        );
    }
    let live = crate::support::get(&proxy.admin_url("/live"), &[]).await;
    println!(
        "all targets down: 20 × 503 no-usable-target, worst {:.1} ms; /live {}",
        worst.as_secs_f64() * 1e3,
        live.status
    );
    assert!(worst < Duration::from_millis(100), "503 took {worst:?}");
    assert_eq!(live.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_over_the_pool_limit_gets_503_and_the_others_succeed() {
    let a = Backend::start("a");
    let yaml = pools_file(&[pool(
        "web",
        &["circuitBreaker: { maxRequests: 4 }"],
        &[(&a, 1)],
    )]);
    let proxy = Proxy::start(&yaml, &[]).await;
    let slow: Vec<_> = (0..4)
        .map(|_| {
            let url = proxy.url("/delay/800");
            tokio::spawn(async move { crate::support::get(&url, &[]).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let over = proxy.get("/", &[]).await;
    let mut statuses = Vec::new();
    for s in slow {
        statuses.push(s.await.expect("a slow request").status.as_u16());
    }
    let overflows = proxy
        .metric("weir_pool_overflows_total{pool=\"web\",limit=\"max-requests\"}")
        .await;
    println!(
        "maxRequests 4 with 4 slow requests in flight: the fifth got {} in {:.1} ms ({:?}); the four got {statuses:?}; overflow metric {overflows:?}",
        over.status,
        over.elapsed.as_secs_f64() * 1e3,
        over.header("x-weir-overflow")
    );
    assert_eq!(over.status, 503);
    assert_eq!(over.header("x-weir-overflow"), Some("max-requests"));
    assert!(
        over.elapsed < Duration::from_millis(100),
        "the overflow was not answered at once"
    );
    assert_eq!(statuses, [200, 200, 200, 200]);
    assert_eq!(overflows, Some(1.0));
    let after = load(proxy.url("/"), 2, Stop::After(20)).await;
    assert_eq!(after.failures, 0, "the pool did not recover: {after}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_is_retried_only_when_its_target_saw_nothing() {
    let a = Backend::start("a");
    let refused = crate::support::Refusing::bind();
    let yaml = pools_file(&[pool_at(
        "web",
        &["retries: { attempts: 3, on: [connect-failure, reset, 503] }"],
        &[(refused.addr, 1), (a.addr, 1)],
    )]);
    let proxy = Proxy::start(&yaml, &[]).await;
    for i in 0..10 {
        let body = format!("payload {i}");
        let reply = crate::support::send(
            &crate::support::http1(),
            http::Method::POST,
            &proxy.url("/echo"),
            &[],
            &body,
        )
        .await
        .expect("a POST through the proxy");
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(reply.body, body, "the body was not replayed whole");
    }
    // 503 from the target: the target saw the POST, so it is not retried.
    let reply = crate::support::send(
        &crate::support::http1(),
        http::Method::POST,
        &proxy.url("/status/503"),
        &[],
        "x",
    )
    .await
    .expect("a POST through the proxy");
    let retries = proxy.status().await["pools"][0]["retries"].clone();
    println!(
        "POSTs to a pool with a refusing target: 10 × 200 with the body intact; a POST answered 503 stays 503; retries {retries}"
    );
    assert_eq!(reply.status, 503);
    assert!(
        reply.header("x-weir-error").is_none(),
        "the target's own 503 passes through"
    );
}
