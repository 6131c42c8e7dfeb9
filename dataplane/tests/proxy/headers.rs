//! What the proxy does to request headers on their way to a backend.

use crate::support::{Backend, Proxy, pool, pools_file, raw, seen_header};

async fn one_backend(extra_args: &[&str]) -> (Backend, Proxy) {
    let backend = Backend::start("b1");
    let proxy = Proxy::start(
        &pools_file(&[pool("web", &[], &[(&backend, 1)])]),
        extra_args,
    )
    .await;
    (backend, proxy)
}

fn is_uuid_v4(id: &str) -> bool {
    let groups: Vec<&str> = id.split('-').collect();
    groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups
            .iter()
            .all(|g| g.bytes().all(|b| b.is_ascii_hexdigit()))
        && groups[2].starts_with('4')
}

fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[tokio::test]
async fn a_generated_request_id_reaches_the_backend_and_equals_the_responses() {
    let (_backend, proxy) = one_backend(&[]).await;
    let reply = proxy.get("/headers", &[]).await;
    let report = reply.json();
    let sent = seen_header(&report, "x-request-id");
    let returned = reply.header("x-request-id");
    println!("generated request id: backend saw {sent:?}, client got {returned:?}");
    let sent = sent.expect("the backend got no x-request-id");
    assert!(is_uuid_v4(&sent), "not a UUIDv4: {sent}");
    assert_eq!(returned, Some(sent.as_str()));
}

#[tokio::test]
async fn an_absolute_form_request_reaches_an_http1_backend_in_origin_form() {
    let (_backend, proxy) = one_backend(&[]).await;
    let reply = proxy.get("/headers?a=1", &[]).await;
    println!("the backend saw request target {}", reply.json()["uri"]);
    assert_eq!(reply.json()["uri"], "/headers?a=1");
}

#[tokio::test]
async fn a_clients_sane_request_id_is_kept_and_an_insane_one_replaced() {
    let (_backend, proxy) = one_backend(&[]).await;
    let reply = proxy
        .get("/headers", &[("x-request-id", "client-id-123")])
        .await;
    let sent = seen_header(&reply.json(), "x-request-id");
    println!(
        "client id client-id-123: backend saw {sent:?}, client got {:?}",
        reply.header("x-request-id")
    );
    assert_eq!(sent.as_deref(), Some("client-id-123"));
    assert_eq!(reply.header("x-request-id"), Some("client-id-123"));

    let long = "x".repeat(500);
    let reply = proxy.get("/headers", &[("x-request-id", &long)]).await;
    let sent = seen_header(&reply.json(), "x-request-id").unwrap_or_default();
    println!("client id of 500 bytes: backend saw {sent:?}");
    assert!(is_uuid_v4(&sent), "a 500-byte id was not replaced: {sent}");
    assert_eq!(reply.header("x-request-id"), Some(sent.as_str()));
}

#[tokio::test]
async fn without_trace_headers_the_backend_gets_a_new_traceparent_and_matching_b3() {
    let (_backend, proxy) = one_backend(&[]).await;
    let report = proxy.get("/headers", &[]).await.json();
    let traceparent = seen_header(&report, "traceparent").expect("no traceparent");
    let b3_trace = seen_header(&report, "x-b3-traceid");
    let b3_span = seen_header(&report, "x-b3-spanid");
    println!(
        "new trace: traceparent {traceparent}, x-b3-traceid {b3_trace:?}, x-b3-spanid {b3_span:?}"
    );
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent}");
    assert_eq!(parts[0], "00", "{traceparent}");
    assert!(
        is_lower_hex(parts[1], 32) && parts[1] != "0".repeat(32),
        "{traceparent}"
    );
    assert!(
        is_lower_hex(parts[2], 16) && parts[2] != "0".repeat(16),
        "{traceparent}"
    );
    assert!(is_lower_hex(parts[3], 2), "{traceparent}");
    assert_eq!(b3_trace.as_deref(), Some(parts[1]));
    assert_eq!(b3_span.as_deref(), Some(parts[2]));
}

#[tokio::test]
async fn a_clients_traceparent_reaches_the_backend_unchanged() {
    let (_backend, proxy) = one_backend(&[]).await;
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let report = proxy
        .get("/headers", &[("traceparent", traceparent)])
        .await
        .json();
    let seen = seen_header(&report, "traceparent");
    let b3 = seen_header(&report, "x-b3-traceid");
    println!("client traceparent: backend saw {seen:?}, x-b3-traceid {b3:?}");
    assert_eq!(seen.as_deref(), Some(traceparent));
    assert_eq!(b3.as_deref(), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
}

#[tokio::test]
async fn spoofed_forwarding_headers_are_replaced_by_default() {
    let (_backend, proxy) = one_backend(&[]).await;
    let report = proxy
        .get(
            "/headers",
            &[
                ("host", "shop.example"),
                ("x-forwarded-for", "6.6.6.6"),
                ("x-forwarded-proto", "https"),
                ("x-forwarded-host", "evil.example"),
            ],
        )
        .await
        .json();
    let (xff, proto, host) = (
        seen_header(&report, "x-forwarded-for"),
        seen_header(&report, "x-forwarded-proto"),
        seen_header(&report, "x-forwarded-host"),
    );
    println!("trusted hops 0: x-forwarded-for {xff:?}, -proto {proto:?}, -host {host:?}");
    assert_eq!(xff.as_deref(), Some("127.0.0.1"));
    assert_eq!(proto.as_deref(), Some("http"));
    assert_eq!(host.as_deref(), Some("shop.example"));
    assert_eq!(
        seen_header(&report, "host").as_deref(),
        Some("shop.example"),
        "Host was not kept"
    );
}

#[tokio::test]
async fn with_one_trusted_hop_the_last_forwarded_for_entry_is_kept_and_the_peer_appended() {
    let (_backend, proxy) = one_backend(&["--trusted-hops", "1"]).await;
    let report = proxy
        .get("/headers", &[("x-forwarded-for", "6.6.6.6")])
        .await
        .json();
    let one = seen_header(&report, "x-forwarded-for");
    let report = proxy
        .get("/headers", &[("x-forwarded-for", "1.1.1.1, 6.6.6.6")])
        .await
        .json();
    let two = seen_header(&report, "x-forwarded-for");
    let report = proxy.get("/headers", &[]).await.json();
    let none = seen_header(&report, "x-forwarded-for");
    println!("trusted hops 1: 6.6.6.6 → {one:?}; 1.1.1.1, 6.6.6.6 → {two:?}; none → {none:?}");
    assert_eq!(one.as_deref(), Some("6.6.6.6, 127.0.0.1"));
    assert_eq!(two.as_deref(), Some("6.6.6.6, 127.0.0.1"));
    assert_eq!(none.as_deref(), Some("127.0.0.1"));
}

#[tokio::test]
async fn hop_by_hop_headers_never_reach_the_backend() {
    let (_backend, proxy) = one_backend(&[]).await;
    let request = b"GET /headers HTTP/1.1\r\n\
        Host: shop.example\r\n\
        Connection: x-secret\r\n\
        X-Secret: 1\r\n\
        Keep-Alive: timeout=5\r\n\
        Proxy-Connection: keep-alive\r\n\
        TE: gzip\r\n\
        X-Kept: yes\r\n\
        \r\n";
    let reply = raw(proxy.addr, request).await;
    assert_eq!(reply.status, Some(200), "{}", reply.text);
    let body = reply
        .text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or_default();
    let report: serde_json::Value = serde_json::from_str(body).expect("a /headers report");
    let names: Vec<&str> = report["headers"]
        .as_array()
        .expect("a header list")
        .iter()
        .filter_map(|pair| pair[0].as_str())
        .collect();
    println!("the backend got: {names:?}");
    for hop in [
        "connection",
        "x-secret",
        "keep-alive",
        "proxy-connection",
        "te",
    ] {
        assert!(
            !names.contains(&hop),
            "{hop} reached the backend: {names:?}"
        );
    }
    assert!(
        names.contains(&"x-kept"),
        "an end-to-end header was dropped: {names:?}"
    );
}
