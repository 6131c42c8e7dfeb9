//! Which pool takes a request: the most specific host, then the longest path prefix.

use crate::support::{Backend, Proxy, pool, pools_file, raw, seen_header};

#[tokio::test]
async fn exact_hosts_beat_the_catch_all_and_the_longest_prefix_wins() {
    let (api, users, web) = (
        Backend::start("api"),
        Backend::start("users"),
        Backend::start("web"),
    );
    let yaml = pools_file(&[
        pool(
            "api",
            &["routes: [{ host: api.example.com, pathPrefix: / }]"],
            &[(&api, 1)],
        ),
        pool(
            "users",
            &["routes: [{ host: api.example.com, pathPrefix: /v1/users }]"],
            &[(&users, 1)],
        ),
        pool(
            "web",
            &["routes: [{ host: \"*\", pathPrefix: /static }]"],
            &[(&web, 1)],
        ),
    ]);
    let proxy = Proxy::start(&yaml, &[]).await;

    let cases = [
        ("api.example.com", "/anything", "api"),
        ("api.example.com", "/v1/users", "users"),
        ("api.example.com", "/v1/users/42", "users"),
        // Prefixes match whole segments.
        ("api.example.com", "/v1/usersx", "api"),
        // The exact host wins even where `*` has a matching prefix.
        ("api.example.com", "/static/app.js", "api"),
        // Hosts match without case or port.
        ("API.Example.com:8080", "/v1/users/7", "users"),
        ("other.example.org", "/static/app.js", "web"),
        ("other.example.org", "/static", "web"),
    ];
    for (host, path, want) in cases {
        let reply = proxy.get(path, &[("host", host)]).await;
        println!(
            "Host: {host}, {path} → {} {:?}",
            reply.status,
            reply.backend()
        );
        assert_eq!(reply.status, 200, "{host}{path}: {}", reply.body);
        assert_eq!(reply.backend(), Some(want), "{host}{path}");
    }
}

#[tokio::test]
async fn a_request_no_route_matches_gets_404_no_route_and_reaches_no_backend() {
    let (api, web) = (Backend::start("api"), Backend::start("web"));
    let yaml = pools_file(&[
        pool(
            "api",
            &["routes: [{ host: api.example.com, pathPrefix: /v1 }]"],
            &[(&api, 1)],
        ),
        pool(
            "web",
            &["routes: [{ host: \"*\", pathPrefix: /static }]"],
            &[(&web, 1)],
        ),
    ]);
    let proxy = Proxy::start(&yaml, &[]).await;

    for (host, path) in [
        ("other.example.org", "/"),
        ("other.example.org", "/staticx"),
        ("api.example.com", "/v2"),
    ] {
        let reply = proxy.get(path, &[("host", host)]).await;
        let id = reply.header("x-request-id").unwrap_or_default().to_owned();
        println!(
            "Host: {host}, {path} → {} x-weir-error {:?}, body {:?}",
            reply.status,
            reply.header("x-weir-error"),
            reply.body.trim()
        );
        assert_eq!(reply.status, 404, "{host}{path}");
        assert_eq!(reply.header("x-weir-error"), Some("no-route"));
        assert!(!id.is_empty(), "a 404 without x-request-id");
        assert!(
            reply.body.contains(&id),
            "the body lacks the request id: {}",
            reply.body
        );
    }
    assert_eq!(
        api.requests().await + web.requests().await,
        0,
        "an unrouted request reached a backend"
    );
    let status = proxy.status().await;
    println!("unrouted in /status: {}", status["requests"]["unrouted"]);
    assert_eq!(status["requests"]["unrouted"], 3);
}

#[tokio::test]
async fn an_absolute_form_request_is_routed_by_its_uri_and_forwarded_with_that_host() {
    let (api, web) = (Backend::start("api"), Backend::start("web"));
    let yaml = pools_file(&[
        pool(
            "api",
            &["routes: [{ host: api.example.com, pathPrefix: / }]"],
            &[(&api, 1)],
        ),
        pool("web", &[], &[(&web, 1)]),
    ]);
    let proxy = Proxy::start(&yaml, &[]).await;

    // RFC 9112 §3.2.2: the target URI's authority wins over the Host field, and a proxy
    // forwards it as the new Host. (A Host naming another host is refused: see the battery's
    // absolute-form-host-mismatch.)
    let request =
        b"GET http://api.example.com/headers HTTP/1.1\r\nHost: API.Example.com:80\r\n\r\n";
    let reply = raw(proxy.addr, request).await;
    let body = reply
        .text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or_default();
    let report: serde_json::Value = serde_json::from_str(body)
        .unwrap_or_else(|e| panic!("not a /headers report ({e}): {:?}", reply.text));
    let (host, forwarded_host) = (
        seen_header(&report, "host"),
        seen_header(&report, "x-forwarded-host"),
    );
    println!(
        "GET http://api.example.com/headers with Host: API.Example.com:80 → {} {:?}, backend saw Host {host:?}, \
         X-Forwarded-Host {forwarded_host:?}",
        reply.status.unwrap_or_default(),
        reply.header("x-backend"),
    );
    assert_eq!(reply.header("x-backend"), Some("api"));
    assert_eq!(
        host.as_deref(),
        Some("api.example.com"),
        "the client's Host was forwarded"
    );
    assert_eq!(forwarded_host.as_deref(), Some("api.example.com"));
}
