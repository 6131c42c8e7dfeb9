//! Blame belongs to whoever caused a failure. A client that sends a broken, oversized,
//! truncated or stalled request body gets a client error (or, gone, nothing) and the target
//! it was streamed to keeps a clean record: no failure counted, no ejection, no open breaker,
//! no 5xx in the pool's success rate. Otherwise any client on the internet could take healthy
//! targets out of service. The backend's `/collect` answers once it has the whole body, as
//! most application servers do, so the client's failure is always seen before an answer.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::support::{Backend, Proxy, pool, pools_file, raw};

/// A pool as touchy as a pool gets: three failures of any kind eject a target or open its
/// breaker, so a single misplaced blame shows.
const TOUCHY: [&str; 2] = [
    "outlierDetection: { consecutive5xx: 3, consecutiveGatewayFailures: 3, baseEjectionTime: 60s }",
    "circuitBreaker: { failureThreshold: 3, resetTimeout: 60s }",
];

async fn start(extra_args: &[&str]) -> (Backend, Proxy) {
    let backend = Backend::start("b1");
    let yaml = pools_file(&[pool("web", &TOUCHY, &[(&backend, 1)])]);
    let proxy = Proxy::start(&yaml, extra_args).await;
    (backend, proxy)
}

/// The target's record as `/status` shows it.
async fn record(proxy: &Proxy) -> Value {
    let status = proxy.status().await;
    let pool = &status["pools"][0];
    let target = &pool["targets"][0];
    serde_json::json!({
        "state": target["state"],
        "failures": target["failures"],
        "ejections": target["ejections"],
        "breaker_opens": target["breaker_opens"],
        "5xx": target["responses"]["5xx"],
        "pool_success_rate": pool["success_rate"],
        "proxy_502": pool["proxy_errors"]["502"],
        "proxy_504": pool["proxy_errors"]["504"],
    })
}

/// What a target that no one has blamed looks like.
fn clean() -> Value {
    serde_json::json!({
        "state": "healthy",
        "failures": 0,
        "ejections": 0,
        "breaker_opens": 0,
        "5xx": 0,
        "pool_success_rate": 1.0,
        "proxy_502": 0,
        "proxy_504": 0,
    })
}

/// Writes `partial`, half-closes the connection as a client that goes away does, and reads
/// whatever comes back before the proxy closes (bounded).
async fn send_and_leave(addr: SocketAddr, partial: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connecting");
    stream.write_all(partial).await.expect("writing");
    stream.shutdown().await.expect("half-closing");
    let mut received = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut received)).await;
    String::from_utf8_lossy(&received).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_broken_request_bodies_get_4xx_and_the_target_stays_in_service() {
    let (backend, proxy) = start(&["--max-body-bytes", "1024"]).await;
    // A good chunk, then a chunk size that is not hex: the proxy has begun streaming to the
    // target when the client's framing breaks.
    let malformed = b"POST /collect HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
        5\r\nhello\r\nZZ\r\nnot a chunk\r\n0\r\n\r\n";
    // Chunks adding up past --max-body-bytes while streaming.
    let mut oversized =
        b"POST /collect HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..4 {
        oversized.extend_from_slice(b"200\r\n");
        oversized.extend(std::iter::repeat_n(b'a', 512));
        oversized.extend_from_slice(b"\r\n");
    }
    oversized.extend_from_slice(b"0\r\n\r\n");
    // Content-Length 100, 10 bytes sent, then the client is gone.
    let truncated = b"POST /collect HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789";

    let started = Instant::now();
    let (mut bad_body, mut too_large, mut gone) = (0, 0, 0);
    for _ in 0..100 {
        let reply = raw(proxy.addr, malformed).await;
        assert_eq!(reply.status, Some(400), "malformed chunk: {:?}", reply.text);
        assert_eq!(reply.header("x-weir-error"), Some("bad-request-body"));
        bad_body += 1;

        let reply = raw(proxy.addr, &oversized).await;
        assert_eq!(reply.status, Some(413), "oversized: {:?}", reply.text);
        too_large += 1;

        let answer = send_and_leave(proxy.addr, truncated).await;
        // No one is left to read an answer; a 5xx would mean the target was blamed.
        assert!(
            !answer.starts_with("HTTP/1.1 5"),
            "a client that went away was answered {answer:?}"
        );
        gone += 1;
    }
    let after = record(&proxy).await;
    let reached = backend.requests().await;
    println!(
        "{bad_body} malformed chunked bodies (400), {too_large} over the body limit (413), \
         {gone} truncated by a departing client, in {:.1} s: the backend saw {reached} of them \
         begin; the target's record: {after}",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(
        after,
        clean(),
        "a client's broken bodies were blamed on the target"
    );
    let good = proxy.get("/", &[]).await;
    assert_eq!(good.status, 200, "the target was taken out of service");
    assert_eq!(good.backend(), Some("b1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_sending_its_body_gets_408_after_the_body_read_timeout() {
    let (_backend, proxy) = start(&["--body-read-timeout", "1s"]).await;
    let started = Instant::now();
    let mut stream = TcpStream::connect(proxy.addr).await.expect("connecting");
    stream
        .write_all(b"POST /collect HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
        .await
        .expect("writing");
    let mut received = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut received)).await;
    let text = String::from_utf8_lossy(&received);
    let elapsed = started.elapsed();
    println!(
        "10 of 100 body bytes, then silence, --body-read-timeout 1s: {:?} after {:.2} s",
        text.lines().next(),
        elapsed.as_secs_f64()
    );
    assert!(text.starts_with("HTTP/1.1 408"), "{text:?}");
    assert!(text.contains("x-weir-error: client-timeout"), "{text:?}");
    assert!(
        elapsed >= Duration::from_millis(900),
        "answered after {elapsed:?}, before the timeout"
    );
    assert_eq!(record(&proxy).await, clean());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_upload_is_not_a_slow_target_the_request_timeout_starts_when_the_body_ends() {
    let backend = Backend::start("b1");
    let settings = [TOUCHY[0], TOUCHY[1], "timeouts: { request: 1s }"];
    let yaml = pools_file(&[pool("web", &settings, &[(&backend, 1)])]);
    let proxy = Proxy::start(&yaml, &["--body-read-timeout", "2s"]).await;
    let mut stream = TcpStream::connect(proxy.addr).await.expect("connecting");
    stream
        .write_all(b"POST /collect HTTP/1.1\r\nHost: x\r\nContent-Length: 8\r\n\r\n")
        .await
        .expect("writing the head");
    // Eight bytes over 2.4 s: each pause within the body read timeout, the whole upload
    // longer than the pool's 1 s request timeout.
    let started = Instant::now();
    for byte in b"abcdefgh" {
        tokio::time::sleep(Duration::from_millis(300)).await;
        stream.write_all(&[*byte]).await.expect("writing a byte");
    }
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&received).contains("abcdefgh") {
        match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => received.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&received);
    println!(
        "an 8-byte body uploaded over {:.1} s to a pool with a 1 s request timeout: {:?}",
        started.elapsed().as_secs_f64(),
        text.lines().next()
    );
    assert!(text.starts_with("HTTP/1.1 200"), "{text:?}");
    assert!(
        text.ends_with("abcdefgh"),
        "the body did not arrive whole: {text:?}"
    );
    assert_eq!(record(&proxy).await, clean());
}
