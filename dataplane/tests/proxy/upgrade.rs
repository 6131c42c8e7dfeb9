//! HTTP/2 on both sides of the proxy, and WebSocket upgrades through it.

use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use http::{Method, Version};
use tokio_tungstenite::tungstenite::Message;

use crate::support::{Backend, Proxy, h2c, pool, pools_file, send};

#[tokio::test]
async fn h2c_prior_knowledge_clients_are_served_over_http2() {
    let backend = Backend::start("b1");
    let proxy = Proxy::start(&pools_file(&[pool("web", &[], &[(&backend, 1)])]), &[]).await;
    let client = h2c();
    let mut upstream_versions = Vec::new();
    for _ in 0..20 {
        let reply = send(&client, Method::GET, &proxy.url("/headers"), &[], "")
            .await
            .expect("an h2c request through the proxy");
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(reply.version, Version::HTTP_2);
        upstream_versions.push(
            reply.json()["version"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        );
    }
    upstream_versions.dedup();
    println!("20 h2c requests: answered over HTTP/2, forwarded as {upstream_versions:?}");
    assert_eq!(
        upstream_versions,
        ["HTTP/1.1"],
        "the pool's default upstream is HTTP/1.1"
    );
}

#[tokio::test]
async fn a_pool_with_http2_upstream_reaches_the_backend_over_h2c() {
    let backend = Backend::start("b1");
    let yaml = pools_file(&[pool(
        "web",
        &["upstream: { protocol: \"HTTP/2\" }"],
        &[(&backend, 1)],
    )]);
    let proxy = Proxy::start(&yaml, &[]).await;
    let mut versions = Vec::new();
    for i in 0..20 {
        let reply = if i % 2 == 0 {
            proxy.get("/headers", &[]).await
        } else {
            send(&h2c(), Method::GET, &proxy.url("/headers"), &[], "")
                .await
                .expect("an h2c request through the proxy")
        };
        assert_eq!(reply.status, 200, "{}", reply.body);
        versions.push(
            reply.json()["version"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        );
    }
    versions.dedup();
    // The client's host travels as the HTTP/2 :authority, which backends take as the host.
    let report = proxy
        .get("/headers", &[("host", "shop.example")])
        .await
        .json();
    println!(
        "Host: shop.example over an HTTP/2 pool: the backend saw URI {} and host {:?}",
        report["uri"],
        crate::support::seen_header(&report, "host")
    );
    assert_eq!(report["uri"], "http://shop.example/headers");
    let status = proxy.status().await;
    let connections = &status["pools"][0]["targets"][0]["active_connections"];
    println!(
        "20 requests (HTTP/1.1 and h2c downstream) to an HTTP/2 pool: the backend saw {versions:?}; \
         upstream connections open {connections}"
    );
    assert_eq!(versions, ["HTTP/2.0"]);
}

#[tokio::test]
async fn a_websocket_upgrade_through_the_proxy_echoes_text_messages() {
    let backend = Backend::start("b1");
    let proxy = Proxy::start(&pools_file(&[pool("web", &[], &[(&backend, 1)])]), &[]).await;
    let bound = Duration::from_secs(5);

    let (mut ws, response) = tokio::time::timeout(
        bound,
        tokio_tungstenite::connect_async(format!("ws://{}/ws", proxy.addr)),
    )
    .await
    .expect("the handshake within 5 s")
    .expect("a WebSocket handshake through the proxy");
    assert_eq!(response.status(), 101);
    let mut echoed = Vec::new();
    for text in ["hello", "through", "weir"] {
        ws.send(Message::text(text))
            .await
            .expect("sending a message");
        let reply = tokio::time::timeout(bound, ws.next())
            .await
            .expect("an echo within 5 s")
            .expect("the socket open")
            .expect("a message");
        echoed.push(
            reply
                .into_text()
                .expect("a text message")
                .as_str()
                .to_owned(),
        );
    }
    ws.close(None).await.expect("closing");
    println!(
        "WebSocket through the proxy: 101 with x-request-id {:?}; echoes {echoed:?}",
        response.headers().get("x-request-id")
    );
    assert_eq!(echoed, ["b1: hello", "b1: through", "b1: weir"]);
}
