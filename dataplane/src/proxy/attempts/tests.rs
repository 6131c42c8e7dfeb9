//! The attempt loop's decisions, one try at a time, on tokio's paused clock: the results of
//! tries are made up, the pool, its counters, budget and breakers are the real ones.

use std::sync::Arc;

use http::StatusCode;
use http_body_util::{BodyExt, Full};
use weir_api::UpstreamProtocol;

use super::*;
use crate::body::ClientBodyError;
use crate::proxy::head::Peer;
use crate::settings::ProxySettings;
use crate::state::compiled_pool;
use crate::upstream::Limit;

/// A pool `web` of three targets, with `extra` YAML lines (four-space indented) in its entry.
fn pool(extra: &[&str]) -> Arc<PoolState> {
    let extra: String = extra.iter().map(|l| format!("    {l}\n")).collect();
    let yaml = format!(
        "pools:\n  - name: web\n{extra}    targets:\n      - {{ address: 127.0.0.1:9001 }}\n      \
         - {{ address: 127.0.0.1:9002 }}\n      - {{ address: 127.0.0.1:9003 }}\n"
    );
    compiled_pool(&yaml)
}

fn head(method: Method) -> Head {
    let (parts, ()) = Request::builder()
        .method(method)
        .uri("/orders")
        .header("host", "shop.example")
        .body(())
        .unwrap()
        .into_parts();
    let peer = Peer::new("192.0.2.7:40000".parse().unwrap());
    let settings = ProxySettings::default();
    Head::new(parts, &peer, &settings, UpstreamProtocol::Http1, false)
}

/// The tries of a `method` request with `body`, as `forward` starts them.
fn attempts(pool: &PoolState, method: Method, body: Pending) -> Attempts<'_> {
    let replay = replays_after_send(&pool.config.retries, &method, false);
    Attempts::new(pool, head(method), body, replay, Instant::now())
}

fn buffered(text: &'static str) -> Pending {
    Pending::Buffered(Bytes::from_static(text.as_bytes()))
}

fn streamed(text: &'static str) -> Pending {
    let body = Full::new(Bytes::from_static(text.as_bytes()));
    Pending::Stream(ClientBody::new(body, 1 << 20, Duration::from_secs(10)))
}

fn refused(unsent: Option<Request<RequestBody>>) -> Sent<()> {
    let error = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
    Sent::Failed(SendError {
        error: UpstreamError::Connect(error),
        unsent: unsent.map(Box::new),
    })
}

/// A real exchange failure: hyper's client reading a response that is not HTTP.
async fn broken_exchange() -> Sent<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (client, mut server) = tokio::io::duplex(4096);
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(client))
            .await
            .unwrap();
    tokio::spawn(connection);
    tokio::spawn(async move {
        let mut buf = [0; 1024];
        let _ = server.read(&mut buf).await;
        let _ = server.write_all(b"not http at all\r\n\r\n").await;
    });
    let request = Request::new(Full::new(Bytes::new()));
    let error = sender.send_request(request).await.unwrap_err();
    Sent::Failed(SendError {
        error: UpstreamError::Exchange(error),
        unsent: None,
    })
}

fn failures(pool: &PoolState, i: usize) -> u64 {
    pool.targets[i].stats.failures.load(Ordering::Relaxed)
}

fn status_of<R: std::fmt::Debug>(next: Next<R>) -> StatusCode {
    match next {
        Next::Fail(e) => e.status(),
        other => panic!("a failure, not {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_try_gets_the_per_try_timeout_cut_short_by_the_request_deadline() {
    let pool = pool(&["timeouts: { request: 10s, perTry: 4s }"]);
    let mut tries = attempts(&pool, Method::GET, buffered(""));
    let (_, first) = tries.start(0, Instant::now());
    assert_eq!(first, Duration::from_secs(4), "the per-try timeout");
    tokio::time::advance(Duration::from_secs(8)).await;
    let (_, late) = tries.start(1, Instant::now());
    assert_eq!(
        late,
        Duration::from_secs(2),
        "what the request timeout leaves"
    );

    let whole = self::pool(&["timeouts: { request: 10s }"]);
    let mut tries = attempts(&whole, Method::GET, buffered(""));
    let (_, only) = tries.start(0, Instant::now());
    assert_eq!(
        only,
        Duration::from_secs(10),
        "no per-try timeout: the request's"
    );
}

#[tokio::test(start_paused = true)]
async fn a_connect_failure_sends_the_unsent_request_again_whatever_its_method() {
    let pool = pool(&["retries: { attempts: 3 }"]);
    let mut tries = attempts(&pool, Method::POST, streamed("order=7"));
    let (request, _) = tries.start(0, Instant::now());
    let next = tries.settle(0, Instant::now(), refused(Some(request)));
    let Next::RetryAfter(wait) = next else {
        panic!("a retry, not {next:?}")
    };
    assert!(wait <= Duration::from_millis(25), "the first backoff step");
    assert_eq!(failures(&pool, 0), 1, "the target that refused is counted");

    let (again, _) = tries.start(1, Instant::now());
    assert_eq!(again.method(), Method::POST);
    assert_eq!(
        again.headers()["host"],
        "shop.example",
        "the head went back too"
    );
    let body = again.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(
        body, "order=7",
        "the streamed body, never sent, is sent now"
    );
    let sent = |i: usize| pool.targets[i].stats.bytes_sent.load(Ordering::Relaxed);
    assert_eq!(
        (sent(0), sent(1)),
        (0, 7),
        "counted for the target that got it"
    );
    assert_eq!(tries.tried(), &[0, 1]);
    assert_eq!(pool.stats.retries.load(Ordering::Relaxed), 1);
}

#[tokio::test(start_paused = true)]
async fn a_streamed_body_is_not_sent_again_once_a_target_had_it() {
    let pool = pool(&["retries: { attempts: 3, retryOn: [reset, per-try-timeout] }"]);
    let mut tries = attempts(&pool, Method::PUT, streamed("big upload"));
    let _ = tries.start(0, Instant::now());
    let reset = broken_exchange().await;
    assert_eq!(status_of(tries.settle(0, Instant::now(), reset)), 502);

    let mut tries = attempts(&pool, Method::PUT, streamed("big upload"));
    let _ = tries.start(1, Instant::now());
    let timed_out = tries.settle(1, Instant::now(), Sent::<()>::TimedOut);
    assert_eq!(status_of(timed_out), 504);
    assert_eq!(pool.stats.retries.load(Ordering::Relaxed), 0);
    assert_eq!((failures(&pool, 0), failures(&pool, 1)), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn a_buffered_body_is_sent_again_after_a_reset_of_an_idempotent_request() {
    let pool = pool(&["retries: { attempts: 2, retryOn: [reset] }"]);
    let mut tries = attempts(&pool, Method::PUT, buffered("v=2"));
    let _ = tries.start(0, Instant::now());
    let reset = broken_exchange().await;
    assert!(matches!(
        tries.settle(0, Instant::now(), reset),
        Next::RetryAfter(_)
    ));
    let (again, _) = tries.start(1, Instant::now());
    assert_eq!(again.into_body().collect().await.unwrap().to_bytes(), "v=2");
}

#[tokio::test(start_paused = true)]
async fn a_non_idempotent_request_that_may_have_reached_its_target_is_not_retried() {
    let pool = pool(&["retries: { attempts: 3, retryOn: [reset, per-try-timeout] }"]);
    assert!(!replays_after_send(
        &pool.config.retries,
        &Method::POST,
        false
    ));
    let mut tries = attempts(&pool, Method::POST, buffered(""));
    let _ = tries.start(0, Instant::now());
    let reset = broken_exchange().await;
    assert_eq!(status_of(tries.settle(0, Instant::now(), reset)), 502);
    let mut tries = attempts(&pool, Method::POST, buffered(""));
    let _ = tries.start(0, Instant::now());
    let timed_out = tries.settle(0, Instant::now(), Sent::<()>::TimedOut);
    assert_eq!(status_of(timed_out), 504);
    assert_eq!(pool.stats.retries.load(Ordering::Relaxed), 0);

    let allowed =
        self::pool(&["retries: { attempts: 3, retryOn: [per-try-timeout], nonIdempotent: true }"]);
    assert!(replays_after_send(
        &allowed.config.retries,
        &Method::POST,
        false
    ));
    let mut tries = attempts(&allowed, Method::POST, buffered(""));
    let _ = tries.start(0, Instant::now());
    let timed_out = tries.settle(0, Instant::now(), Sent::<()>::TimedOut);
    assert!(matches!(timed_out, Next::RetryAfter(_)), "{timed_out:?}");
    assert!(
        !replays_after_send(&allowed.config.retries, &Method::GET, true),
        "nor is an upgrade"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_try_whose_retry_the_budget_refuses_fails_with_its_own_error() {
    let pool = pool(&["retries: { attempts: 3, budgetPercent: 0, minRetriesPerSecond: 0 }"]);
    let mut tries = attempts(&pool, Method::GET, buffered(""));
    let _ = tries.start(0, Instant::now());
    let next = tries.settle(0, Instant::now(), refused(None));
    let Next::Fail(e) = next else {
        panic!("a failure, not {next:?}")
    };
    assert!(matches!(e, ProxyError::Connect { .. }), "{e}");
    assert_eq!(pool.stats.retries_refused.load(Ordering::Relaxed), 1);
    assert_eq!(pool.stats.retries.load(Ordering::Relaxed), 0);
}

#[tokio::test(start_paused = true)]
async fn a_try_that_ends_past_the_request_deadline_fails_as_a_timeout() {
    let pool = pool(&["timeouts: { request: 1s }", "retries: { attempts: 3 }"]);
    let mut tries = attempts(&pool, Method::GET, buffered(""));
    let (request, _) = tries.start(2, Instant::now());
    tokio::time::advance(Duration::from_secs(1)).await;
    let next = tries.settle(2, Instant::now(), refused(Some(request)));
    let Next::Fail(ProxyError::Timeout(target)) = next else {
        panic!("a timeout, not {next:?}")
    };
    assert_eq!(target, pool.targets[2].stats.address);
    assert_eq!(pool.stats.retries.load(Ordering::Relaxed), 0);
}

#[tokio::test(start_paused = true)]
async fn the_backoff_never_runs_past_the_request_deadline() {
    let pool = pool(&[
        "timeouts: { request: 2s }",
        "retries: { attempts: 3, backoffBase: 10s, backoffMax: 10s }",
    ]);
    // The backoff is a random share of 10 s: twenty draws all under the half second left
    // only if it is cut short.
    for _ in 0..20 {
        let mut tries = attempts(&pool, Method::GET, buffered(""));
        let (request, _) = tries.start(0, Instant::now());
        tokio::time::advance(Duration::from_millis(1500)).await;
        let next = tries.settle(0, Instant::now(), refused(Some(request)));
        let Next::RetryAfter(wait) = next else {
            panic!("a retry, not {next:?}")
        };
        assert!(wait <= Duration::from_millis(500), "{wait:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_failure_the_client_caused_costs_the_target_nothing() {
    let pool = pool(&["circuitBreaker: { failureThreshold: 1 }"]);
    /// What carries the body's error to the connection's (an `io::Error` hides its own
    /// payload from `source`).
    #[derive(Debug, thiserror::Error)]
    #[error("writing the body")]
    struct BodyWrite(#[source] ClientBodyError);
    let stalled = BodyWrite(ClientBodyError::Timeout(Duration::from_secs(3)));
    let mut tries = attempts(&pool, Method::PUT, streamed("slow"));
    let _ = tries.start(0, Instant::now());
    let client = Sent::<()>::Failed(SendError {
        // As the connection reports a request body that failed while it was being sent.
        error: UpstreamError::Connect(std::io::Error::other(stalled)),
        unsent: None,
    });
    assert_eq!(status_of(tries.settle(0, Instant::now(), client)), 408);
    assert_eq!(failures(&pool, 0), 0);
    assert!(
        pool.targets[0].health.is_usable(Instant::now()),
        "breaker closed"
    );

    let mut tries = attempts(&pool, Method::PUT, streamed("slow"));
    let _ = tries.start(0, Instant::now());
    let _ = tries.settle(0, Instant::now(), refused(None));
    assert_eq!(
        failures(&pool, 0),
        1,
        "while a refused connection is counted"
    );
    assert!(
        !pool.targets[0].health.is_usable(Instant::now()),
        "breaker open"
    );
}

#[tokio::test(start_paused = true)]
async fn an_answer_with_a_listed_status_is_retried_while_tries_remain() {
    let pool = pool(&["retries: { attempts: 2, retryOn: [503] }"]);
    let mut tries = attempts(&pool, Method::GET, buffered(""));
    let _ = tries.start(0, Instant::now());
    let unavailable = |response| Sent::Answered {
        status: 503,
        response,
    };
    let first = tries.settle(0, Instant::now(), unavailable("first"));
    assert!(matches!(first, Next::RetryAfter(_)), "{first:?}");
    let _ = tries.start(1, Instant::now());
    let last = tries.settle(1, Instant::now(), unavailable("last"));
    assert!(matches!(last, Next::Respond("last")), "{last:?}");
    let fives = |i: usize| pool.targets[i].stats.responses[4].load(Ordering::Relaxed);
    assert_eq!((fives(0), fives(1)), (1, 1));
    let ok = tries.settle(
        1,
        Instant::now(),
        Sent::Answered {
            status: 200,
            response: "ok",
        },
    );
    assert!(matches!(ok, Next::Respond("ok")));
}

#[tokio::test(start_paused = true)]
async fn a_pool_limit_met_on_the_way_to_a_target_fails_the_request_uncounted() {
    let pool = pool(&["retries: { attempts: 3 }"]);
    let mut tries = attempts(&pool, Method::GET, buffered(""));
    let (request, _) = tries.start(0, Instant::now());
    let overflow = Sent::<()>::Failed(SendError {
        error: UpstreamError::Overflow(Limit::MaxPendingRequests),
        unsent: Some(Box::new(request)),
    });
    let next = tries.settle(0, Instant::now(), overflow);
    assert!(
        matches!(
            next,
            Next::Fail(ProxyError::Overflow(Limit::MaxPendingRequests))
        ),
        "{next:?}"
    );
    assert_eq!(pool.stats.overflows[1].load(Ordering::Relaxed), 1);
    assert_eq!(failures(&pool, 0), 0);
}

#[tokio::test(start_paused = true)]
async fn a_listed_status_that_no_retry_may_follow_reaches_the_client_as_the_target_sent_it() {
    let answered = |response| Sent::Answered {
        status: 503,
        response,
    };
    // The budget refuses the retry.
    let spent = pool(&[
        "retries: { attempts: 3, retryOn: [503], budgetPercent: 0, minRetriesPerSecond: 0 }",
    ]);
    let mut tries = attempts(&spent, Method::GET, buffered(""));
    let _ = tries.start(0, Instant::now());
    let next = tries.settle(0, Instant::now(), answered("budget spent"));
    assert!(matches!(next, Next::Respond("budget spent")), "{next:?}");
    assert_eq!(spent.stats.retries_refused.load(Ordering::Relaxed), 1);

    // The request timeout ran out while the target answered.
    let late = pool(&[
        "timeouts: { request: 1s }",
        "retries: { attempts: 3, retryOn: [503] }",
    ]);
    let mut tries = attempts(&late, Method::GET, buffered(""));
    let _ = tries.start(0, Instant::now());
    tokio::time::advance(Duration::from_secs(1)).await;
    let next = tries.settle(0, Instant::now(), answered("past the deadline"));
    assert!(
        matches!(next, Next::Respond("past the deadline")),
        "{next:?}"
    );

    // A POST without a body is buffered, but its method is not retried once sent.
    let post = pool(&["retries: { attempts: 3, retryOn: [503] }"]);
    let mut tries = attempts(&post, Method::POST, buffered(""));
    let _ = tries.start(0, Instant::now());
    let next = tries.settle(0, Instant::now(), answered("not idempotent"));
    assert!(matches!(next, Next::Respond("not idempotent")), "{next:?}");
    for pool in [&spent, &late, &post] {
        assert_eq!(pool.stats.retries.load(Ordering::Relaxed), 0);
    }
}

#[tokio::test(start_paused = true)]
async fn the_target_after_a_connect_failure_is_chosen_by_the_request_headers() {
    // A streamed POST is not replayed after it was sent, so its first try takes the head's
    // header block; the connection hands the request back unsent, headers included.
    let pool = pool(&["retries: { attempts: 3 }"]);
    let mut tries = attempts(&pool, Method::POST, streamed("order=7"));
    assert_eq!(tries.headers()["host"], "shop.example");
    let (request, _) = tries.start(0, Instant::now());
    let next = tries.settle(0, Instant::now(), refused(Some(request)));
    assert!(matches!(next, Next::RetryAfter(_)), "{next:?}");
    assert_eq!(
        tries.headers()["host"],
        "shop.example",
        "header and cookie affinity see the request's own fields on the retry"
    );
}
