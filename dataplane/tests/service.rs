//! The request path in-process, with no socket: requests built in the test go straight into
//! `proxy::serve` (as axum's `examples/testing` calls its router), and the answer and the
//! counters are read back. Routing, the checks before routing and the mapping of every error
//! to its answer are specified here; what crosses processes (targets, connections, the wire)
//! is in `tests/proxy/`.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Empty, Full};
use weir_api::PoolsFile;
use weir_dataplane::body::ResponseBody;
use weir_dataplane::proxy::{self, Peer};
use weir_dataplane::settings::ProxySettings;
use weir_dataplane::state::{PoolState, State};

/// `web` (host `shop.example`) has one target, drained; `api` (path `/api` on the same
/// host) has one too. No target is ever connected to: every request here is answered by the
/// proxy itself.
const POOLS: &str = "\
pools:
  - name: web
    routes: [{ host: shop.example }]
    targets: [{ address: 127.0.0.1:9001, weight: 0 }]
  - name: api
    routes: [{ host: shop.example, pathPrefix: /api }]
    circuitBreaker: { maxRequests: 1 }
    targets: [{ address: 127.0.0.1:9002, weight: 0 }]
";

fn state(settings: ProxySettings) -> Arc<State> {
    let file: PoolsFile = serde_yaml::from_str(POOLS).unwrap();
    file.validate().unwrap();
    Arc::new(State::new(settings, file))
}

fn pool(state: &State, name: &str) -> Arc<PoolState> {
    let snapshot = state.snapshot.load();
    let found = snapshot.pools.iter().find(|p| p.config.name == name);
    found.expect("a configured pool").clone()
}

fn peer() -> Peer {
    Peer::new("192.0.2.7:40000".parse().unwrap())
}

fn get(path: &str) -> http::request::Builder {
    Request::builder().uri(path).header("host", "shop.example")
}

/// An answer, read whole.
struct Answer {
    status: StatusCode,
    headers: http::HeaderMap,
    body: String,
}

impl Answer {
    async fn of(response: Response<ResponseBody>) -> Self {
        let (parts, body) = response.into_parts();
        let body = body.collect().await.expect("a proxy-made body").to_bytes();
        Self {
            status: parts.status,
            headers: parts.headers,
            body: String::from_utf8(body.to_vec()).unwrap(),
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    /// The proxy's reason, after checking that the answer carries a request id, in the
    /// header and in the body.
    fn reason(&self) -> &str {
        let id = self
            .header("x-request-id")
            .expect("every answer has a request id");
        assert!(!id.is_empty());
        assert!(
            self.body.contains(&format!("(request id {id})")),
            "{:?}",
            self.body
        );
        self.header("x-weir-error")
            .expect("a proxy-made answer says why")
    }
}

async fn serve<B>(state: &State, req: Request<B>) -> Answer
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    Answer::of(proxy::serve(state, req, &peer()).await).await
}

fn count(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

#[tokio::test]
async fn a_request_for_an_unknown_host_gets_404_no_route() {
    let state = state(ProxySettings::default());
    let req = Request::builder()
        .uri("/")
        .header("host", "elsewhere.example")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let answer = serve(&state, req).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(answer.reason(), "no-route");
    assert!(
        answer
            .body
            .starts_with("404 Not Found: no route for this host and path")
    );
    assert_eq!(count(&state.listener.unrouted), 1);
    assert_eq!(count(&state.listener.rejected), 0);
    for name in ["web", "api"] {
        assert_eq!(count(&pool(&state, name).stats.requests), 0, "{name}");
    }
}

#[tokio::test]
async fn a_malformed_request_gets_400_with_the_reason_before_any_routing() {
    let state = state(ProxySettings::default());
    let req = get("/static/../api/keys")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let answer = serve(&state, req).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.reason(), "bad-request");
    assert!(
        answer
            .body
            .contains("a dot segment ('.' or '..') in the path"),
        "{:?}",
        answer.body
    );
    assert_eq!(answer.header("connection"), Some("close"));
    assert_eq!(count(&state.listener.rejected), 1);
    assert_eq!(count(&state.listener.unrouted), 0);
    assert_eq!(count(&pool(&state, "api").stats.requests), 0);
}

#[tokio::test]
async fn a_pool_with_no_usable_target_answers_503_and_counts_a_failure() {
    let state = state(ProxySettings::default());
    let answer = serve(&state, get("/cart").body(Empty::<Bytes>::new()).unwrap()).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.reason(), "no-usable-target");
    assert!(
        answer.body.contains("no usable target in pool web"),
        "{:?}",
        answer.body
    );
    let web = pool(&state, "web");
    assert_eq!(count(&web.stats.requests), 1);
    assert_eq!(count(&web.stats.proxy_errors.unavailable), 1);
    assert_eq!(count(&web.stats.failed), 1, "a 503 is a failed request");
    assert_eq!(count(&web.stats.proxy_errors.client), 0);
    assert_eq!(
        count(&pool(&state, "api").stats.requests),
        0,
        "routed by path"
    );
}

#[tokio::test]
async fn a_client_request_id_is_kept_on_the_answer() {
    let state = state(ProxySettings::default());
    let req = get("/api/orders")
        .header("x-request-id", "req-42")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let answer = serve(&state, req).await;
    assert_eq!(answer.reason(), "no-usable-target");
    assert_eq!(answer.header("x-request-id"), Some("req-42"));
    assert!(answer.body.contains("no usable target in pool api"));
}

#[tokio::test]
async fn a_request_over_the_pools_request_limit_gets_503_naming_the_limit() {
    let state = state(ProxySettings::default());
    // The first request holds the pool's one request slot: it announced a body it never
    // sends, which the proxy waits for (up to the body read timeout) before choosing a target.
    let held = {
        let state = state.clone();
        let req = get("/api/upload").body(Stalled).unwrap();
        tokio::spawn(async move { proxy::serve(&state, req, &peer()).await.status() })
    };
    let api = pool(&state, "api");
    for _ in 0..1000 {
        if count(&api.stats.in_flight) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(
        count(&api.stats.in_flight),
        1,
        "the first request is in the pool"
    );

    let answer = serve(
        &state,
        get("/api/orders").body(Empty::<Bytes>::new()).unwrap(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.reason(), "overflow");
    assert_eq!(answer.header("x-weir-overflow"), Some("max-requests"));
    assert!(
        answer
            .body
            .contains("the pool's max-requests limit is reached")
    );
    assert_eq!(count(&api.stats.proxy_errors.unavailable), 1);
    assert_eq!(count(&api.stats.overflows[2]), 1, "max-requests");
    assert_eq!(count(&api.stats.failed), 1);
    held.abort();
    let _ = held.await;
    assert_eq!(
        count(&api.stats.in_flight),
        0,
        "a request that ends leaves the pool"
    );
}

#[tokio::test]
async fn a_body_over_the_limit_gets_413_whether_announced_or_not() {
    let settings = ProxySettings {
        max_body_bytes: 16,
        ..ProxySettings::default()
    };
    let state = state(settings);
    let body = || Full::new(Bytes::from(vec![b'x'; 32]));

    let announced = get("/cart")
        .header("content-length", "32")
        .body(body())
        .unwrap();
    let answer = serve(&state, announced).await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(answer.reason(), "payload-too-large");
    assert_eq!(count(&state.listener.rejected), 1, "refused before routing");
    let web = pool(&state, "web");
    assert_eq!(count(&web.stats.requests), 0);

    // Without Content-Length the body is read (the pool retries, so it is buffered) until
    // it passes the limit.
    let unannounced = get("/cart").method("PUT").body(body()).unwrap();
    let answer = serve(&state, unannounced).await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(answer.reason(), "payload-too-large");
    assert!(
        answer.body.contains("larger than 16 bytes"),
        "{:?}",
        answer.body
    );
    assert_eq!(answer.header("connection"), Some("close"));
    assert_eq!(count(&web.stats.requests), 1);
    assert_eq!(count(&web.stats.proxy_errors.client), 1);
    assert_eq!(
        count(&web.stats.failed),
        0,
        "the client's fault is no failure"
    );
    assert_eq!(count(&state.listener.rejected), 1);
}

#[tokio::test]
async fn a_body_that_breaks_is_the_clients_fault() {
    let state = state(ProxySettings::default());
    let frames = [
        Ok(Frame::data(Bytes::from_static(b"half"))),
        Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "bad chunk size",
        )),
    ];
    let body = http_body_util::StreamBody::new(futures_util::stream::iter(frames));
    let req = get("/cart").method("PUT").body(Announced(body, 8)).unwrap();
    let answer = serve(&state, req).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.reason(), "bad-request-body");
    assert!(answer.body.contains("bad chunk size"), "{:?}", answer.body);
    let web = pool(&state, "web");
    assert_eq!(count(&web.stats.proxy_errors.client), 1);
    assert_eq!(count(&web.stats.failed), 0);
}

/// A client that announced a 5-byte body and sends none of it.
struct Stalled;

impl Body for Stalled {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        Poll::Pending
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(5)
    }
}

/// `B`, announcing `len` bytes, as a body with Content-Length or a known DATA length does.
struct Announced<B>(B, u64);

impl<B: Body + Unpin> Body for Announced<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.0).poll_frame(cx)
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.1)
    }
}
