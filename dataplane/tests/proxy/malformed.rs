//! Malformed and oversized requests, written byte for byte: the proxy answers them itself and
//! nothing reaches a backend.

use std::time::Duration;

use crate::support::{Backend, Hangup, Proxy, RawReply, pool, pools_file, raw, wait_for_hangup};

/// Limits the tests run with; the others are the defaults (64 KiB of headers, 100 header
/// fields, 8 KiB of URI).
const LIMITS: [&str; 4] = ["--max-body-bytes", "1024", "--header-read-timeout", "1s"];

async fn start() -> (Backend, Proxy) {
    let backend = Backend::start("b1");
    let proxy = Proxy::start(&pools_file(&[pool("web", &[], &[(&backend, 1)])]), &LIMITS).await;
    (backend, proxy)
}

/// Sends `request` raw and asserts the proxy answers `want` without the backend seeing a
/// request, and that the proxy still serves afterwards.
async fn assert_refused(what: &str, request: &[u8], want: u16) -> RawReply {
    let (backend, proxy) = start().await;
    let reply = raw(proxy.addr, request).await;
    let reached = backend.requests().await;
    println!(
        "{what}: {:?} in {:.0} ms, x-weir-error {:?}, x-request-id {:?}; backend requests {reached}",
        reply.text.lines().next().unwrap_or("(nothing)"),
        reply.elapsed.as_secs_f64() * 1e3,
        reply.header("x-weir-error"),
        reply.header("x-request-id"),
    );
    assert_eq!(reply.status, Some(want), "{what}: got {:?}", reply.text);
    assert_eq!(reached, 0, "{what} reached the backend");
    let after = proxy.get("/", &[]).await;
    assert_eq!(after.status, 200, "the proxy stopped serving after {what}");
    reply
}

#[tokio::test]
async fn a_garbage_request_line_gets_400() {
    assert_refused("garbage request line", b"GARBAGE\r\n\r\n", 400).await;
}

#[tokio::test]
async fn a_100_kib_header_gets_431() {
    let mut request = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
    request.extend(std::iter::repeat_n(b'a', 100 * 1024));
    request.extend_from_slice(b"\r\n\r\n");
    assert_refused("100 KiB header", &request, 431).await;
}

#[tokio::test]
async fn two_hundred_header_fields_get_431() {
    let mut request = b"GET / HTTP/1.1\r\nHost: x\r\n".to_vec();
    for i in 0..200 {
        request.extend_from_slice(format!("X-Field-{i}: v\r\n").as_bytes());
    }
    request.extend_from_slice(b"\r\n");
    assert_refused("200 header fields", &request, 431).await;
}

#[tokio::test]
async fn a_10_kib_uri_gets_414() {
    let request = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(10 * 1024));
    let reply = assert_refused("10 KiB URI", request.as_bytes(), 414).await;
    assert_eq!(reply.header("x-weir-error"), Some("uri-too-long"));
    assert!(
        reply.header("x-request-id").is_some(),
        "answered without a request id"
    );
}

#[tokio::test]
async fn a_content_length_above_max_body_bytes_gets_413() {
    let request = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n\r\n";
    let reply = assert_refused("Content-Length 2000 over a 1024 limit", request, 413).await;
    assert_eq!(reply.header("x-weir-error"), Some("payload-too-large"));
    assert!(
        reply.header("x-request-id").is_some(),
        "answered without a request id"
    );
}

#[tokio::test]
async fn a_non_numeric_content_length_gets_400() {
    let request = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n";
    assert_refused("Content-Length: abc", request, 400).await;
}

#[tokio::test]
async fn two_different_content_lengths_get_400() {
    let request =
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!";
    assert_refused("Content-Length 5 and 6", request, 400).await;
}

#[tokio::test]
async fn http_1_1_without_host_gets_400() {
    let reply = assert_refused("HTTP/1.1 without Host", b"GET / HTTP/1.1\r\n\r\n", 400).await;
    assert_eq!(reply.header("x-weir-error"), Some("bad-request"));
    assert!(
        reply.header("x-request-id").is_some(),
        "answered without a request id"
    );
}

#[tokio::test]
async fn connect_gets_405() {
    let request = b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n";
    let reply = assert_refused("CONNECT", request, 405).await;
    assert_eq!(reply.header("x-weir-error"), Some("method-not-allowed"));
    assert!(
        reply.header("x-request-id").is_some(),
        "answered without a request id"
    );
}

#[tokio::test]
async fn a_header_name_with_a_space_gets_400() {
    let request = b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\n\r\n";
    assert_refused("header name with a space", request, 400).await;
}

#[tokio::test]
async fn an_obs_folded_header_gets_400() {
    let request = b"GET / HTTP/1.1\r\nHost: x\r\nX-Folded: first\r\n  second\r\n\r\n";
    assert_refused("obs-folded header", request, 400).await;
}

#[tokio::test]
async fn a_chunked_body_growing_past_max_body_bytes_gets_413() {
    let (_backend, proxy) = start().await;
    // The target delays its answer, so the proxy's own answer cannot lose a race with it.
    let mut request =
        b"POST /delay/2000 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..4 {
        request.extend_from_slice(b"200\r\n");
        request.extend(std::iter::repeat_n(b'a', 512));
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    let reply = raw(proxy.addr, &request).await;
    println!(
        "chunked body of 2048 bytes over a 1024 limit: {:?} in {:.0} ms, x-weir-error {:?}",
        reply.text.lines().next().unwrap_or("(nothing)"),
        reply.elapsed.as_secs_f64() * 1e3,
        reply.header("x-weir-error"),
    );
    assert_eq!(reply.status, Some(413), "{:?}", reply.text);
}

#[tokio::test]
async fn a_client_sending_half_a_header_block_is_disconnected_after_the_header_read_timeout() {
    let (_backend, proxy) = start().await;
    let outcome = wait_for_hangup(
        proxy.addr,
        b"GET / HTTP/1.1\r\nHost: x\r\n",
        Duration::from_secs(3),
    )
    .await;
    println!("half a header block, --header-read-timeout 1s: {outcome:?}");
    match outcome {
        Hangup::Closed(after, sent) => assert!(
            after >= Duration::from_millis(900),
            "disconnected after {after:?}, before the 1 s timeout, having sent {sent:?}"
        ),
        Hangup::StillOpen(sent) => {
            panic!("still connected 3 s after half a header block, having sent {sent:?}")
        }
    }
}

#[tokio::test]
async fn a_client_sending_nothing_is_disconnected_after_the_header_read_timeout() {
    let (_backend, proxy) = start().await;
    let outcome = wait_for_hangup(proxy.addr, b"", Duration::from_secs(3)).await;
    println!("a connection that sends nothing, --header-read-timeout 1s: {outcome:?}");
    match outcome {
        Hangup::Closed(after, sent) => assert!(
            after >= Duration::from_millis(900),
            "disconnected after {after:?}, before the 1 s timeout, having sent {sent:?}"
        ),
        Hangup::StillOpen(sent) => {
            panic!("still connected 3 s after connecting without a byte, having sent {sent:?}")
        }
    }
}

#[tokio::test]
async fn a_client_stalling_inside_the_http2_preface_is_disconnected_after_the_header_read_timeout()
{
    let (_backend, proxy) = start().await;
    let outcome = wait_for_hangup(proxy.addr, b"PRI * HTTP/2.0\r\n", Duration::from_secs(3)).await;
    println!("half an HTTP/2 preface, --header-read-timeout 1s: {outcome:?}");
    match outcome {
        Hangup::Closed(after, sent) => assert!(
            after >= Duration::from_millis(900),
            "disconnected after {after:?}, before the 1 s timeout, having sent {sent:?}"
        ),
        Hangup::StillOpen(sent) => {
            panic!("still connected 3 s after half an HTTP/2 preface, having sent {sent:?}")
        }
    }
}
