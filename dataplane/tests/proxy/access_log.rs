//! The access log: one JSON line per request with what a platform engineer looks for, written
//! to the file `--access-log` names; pools sample their successes, failures are always there.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;

use crate::support::{Backend, Proxy, TempDir, pool, pools_file, raw, seen_header};

/// The log's lines once it holds at least `want` of them (bounded wait: the writer task is
/// asynchronous by design).
async fn lines(path: &Path, want: usize) -> Vec<Value> {
    let started = Instant::now();
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
            .collect();
        if lines.len() >= want || started.elapsed() > Duration::from_secs(5) {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_gets_one_line_that_says_who_what_where_and_how_long() {
    let backend = Backend::start("b1");
    let dir = TempDir::new();
    let file = dir.path().join("access.log");
    let yaml = pools_file(&[pool(
        "web",
        &["routes: [{ host: shop.example, pathPrefix: / }]"],
        &[(&backend, 1)],
    )]);
    let proxy = Proxy::start(&yaml, &["--access-log", file.to_str().unwrap()]).await;

    let ok = proxy.get("/headers?x=1", &[("host", "shop.example")]).await;
    assert_eq!(ok.status, 200);
    let seen_trace = seen_header(&ok.json(), "traceparent").expect("a traceparent forwarded");
    let unrouted = proxy.get("/", &[("host", "nowhere.example")]).await;
    assert_eq!(unrouted.status, 404);
    let broken = raw(
        proxy.addr,
        b"POST /collect HTTP/1.1\r\nHost: shop.example\r\nTransfer-Encoding: chunked\r\n\r\n\
          5\r\nhello\r\nZZ\r\n\r\n",
    )
    .await;
    assert_eq!(broken.status, Some(400));

    let log = lines(&file, 3).await;
    println!("{}", serde_json::to_string_pretty(&log).unwrap());
    assert_eq!(log.len(), 3, "one line per request: {log:?}");
    let by_status = |s: u64| {
        log.iter()
            .find(|l| l["status"] == s)
            .unwrap_or_else(|| panic!("no line with status {s}: {log:?}"))
    };

    let line = by_status(200);
    assert_eq!(line["request_id"], ok.header("x-request-id").unwrap());
    assert_eq!(
        line["trace_id"],
        seen_trace[3..35],
        "the trace the backend joined"
    );
    assert_eq!(line["method"], "GET");
    assert_eq!(line["host"], "shop.example");
    assert_eq!(line["path"], "/headers?x=1");
    assert_eq!(line["pool"], "web");
    assert_eq!(line["target"], backend.addr.to_string());
    assert_eq!(line["attempts"], 1);
    assert_eq!(line["bytes_out"], ok.body.len() as u64);
    assert!(line["client"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(line["duration_ms"].as_f64().unwrap() >= line["upstream_ms"].as_f64().unwrap());
    assert_eq!(line["error"], Value::Null);
    assert!(line["time"].as_str().unwrap().ends_with('Z'), "{line}");

    let line = by_status(404);
    assert_eq!(line["error"], "no-route");
    assert_eq!(line["pool"], Value::Null);
    assert_eq!(line["request_id"], unrouted.header("x-request-id").unwrap());

    let line = by_status(400);
    assert_eq!(line["error"], "bad-request-body");
    assert_eq!(line["pool"], "web");
    assert_eq!(line["bytes_in"], 5, "the body bytes read before it broke");

    // The counter moves once the write has returned, a moment after the lines are readable.
    let written = "weir_access_log_lines_total{result=\"written\"}";
    let started = Instant::now();
    while proxy.metric(written).await != Some(3.0) && started.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(proxy.metric(written).await, Some(3.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_sampling_nothing_still_logs_its_failures() {
    let backend = Backend::start("b1");
    let dir = TempDir::new();
    let file = dir.path().join("access.log");
    let yaml = pools_file(&[pool(
        "web",
        &["accessLog: { samplePercent: 0 }"],
        &[(&backend, 1)],
    )]);
    let proxy = Proxy::start(&yaml, &["--access-log", file.to_str().unwrap()]).await;
    for _ in 0..20 {
        assert_eq!(proxy.get("/", &[]).await.status, 200);
    }
    assert_eq!(proxy.get("/status/503", &[]).await.status, 503);
    let log = lines(&file, 1).await;
    // Nothing more is coming: the 20 successes were not sampled.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log_after = lines(&file, 1).await;
    println!(
        "samplePercent 0: 20 × 200 and 1 × 503 gave {} line(s): {log:?}",
        log.len()
    );
    assert_eq!(log_after.len(), 1, "{log_after:?}");
    assert_eq!(log[0]["status"], 503);
    assert_eq!(log[0]["path"], "/status/503");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_while_the_target_thinks_is_logged_as_499() {
    let backend = Backend::start("b1");
    let dir = TempDir::new();
    let file = dir.path().join("access.log");
    let yaml = pools_file(&[pool("web", &[], &[(&backend, 1)])]);
    let proxy = Proxy::start(&yaml, &["--access-log", file.to_str().unwrap()]).await;
    let mut stream = TcpStream::connect(proxy.addr).await.expect("connecting");
    stream
        .write_all(b"GET /delay/1500 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("writing");
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(stream);
    let log = lines(&file, 1).await;
    println!("a client gone after 300 ms of a 1.5 s answer: {log:?}");
    assert_eq!(log.len(), 1);
    assert_eq!(log[0]["status"], 499);
    assert_eq!(log[0]["error"], "client-gone");
    assert_eq!(log[0]["path"], "/delay/1500");
    assert_eq!(log[0]["pool"], "web");
}
