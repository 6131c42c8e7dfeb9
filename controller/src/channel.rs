//! The controller's side of the JSON channel (`weir_api::channel`): a hyper server where data
//! planes open `GET /v1/stream?dataPlane=ID[&since=REV][&selector=SEL]` and post
//! `POST /v1/report`.
//!
//! - Nothing is served before the controller is ready (caches synced, pools compiled): 503.
//! - Every request carries a bearer token ([`Authenticator`]): 401 without a valid one, 403
//!   for a ServiceAccount not allowed.
//! - A stream starts with what the data plane is missing ([`Hub::updates`](crate::hub::Hub::updates)), then writes every
//!   commit of the hub as one chunk (commits are coalesced, at most every ~100 ms), and a
//!   heartbeat after [`HEARTBEAT`] of silence.
//! - A report updates the data plane's record; the pools whose observation changed are
//!   reconciled again, so their status follows.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Body as HttpBody, Frame};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::Instant;
use weir_api::channel::{REPORT_PATH, Report, STREAM_PATH, Update, parse_query};

use crate::auth::{Authenticator, Denied, Identity};
use crate::controller::Shared;
use crate::dataplanes::StreamGuard;
use crate::relay::{RELAYED_BY, Relay};
use crate::selector::Selector;

/// Silence after which a stream gets a heartbeat (data planes give up after 45 s).
pub const HEARTBEAT: Duration = Duration::from_secs(15);
/// Largest report accepted (health for thousands of targets fits).
const MAX_REPORT: usize = 32 * 1024 * 1024;

/// The response body: a full answer or an endless stream of lines.
pub type Body = BoxBody<Bytes, Infallible>;

/// Everything the channel's handlers need.
pub struct Channel {
    /// The hub, data planes, metrics and triggers shared with the controller.
    pub shared: Shared,
    /// Who may connect.
    pub auth: Authenticator,
    /// True once the controller may serve.
    pub ready: watch::Receiver<bool>,
    /// Silence before a heartbeat.
    pub heartbeat: Duration,
    /// Sends reports on to the replica that writes status.
    pub relay: Relay,
}

/// A stream being written: where it is, and what keeps its data plane connected.
struct Stream {
    channel: Arc<Channel>,
    revisions: watch::Receiver<u64>,
    sent: Option<u64>,
    selector: Selector,
    first: bool,
    _open: OpenStream,
}

/// Counts the stream in the metrics and the data plane's record while it lives.
struct OpenStream {
    _guard: StreamGuard,
    channel: Arc<Channel>,
}

/// Serves the channel on `listener` for as long as the task runs.
pub async fn serve(listener: TcpListener, channel: Arc<Channel>) {
    crate::serve::serve(listener, "channel", move |req| handle(channel.clone(), req)).await;
}

/// Answers one request; generic over the request body so tests call it without a socket.
pub async fn handle<B>(channel: Arc<Channel>, req: Request<B>) -> Response<Body>
where
    B: HttpBody,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let route = (req.method().clone(), req.uri().path().to_owned());
    let known = matches!(
        (&route.0, route.1.as_str()),
        (&Method::GET, STREAM_PATH) | (&Method::POST, REPORT_PATH)
    );
    if !known {
        return text(
            StatusCode::NOT_FOUND,
            "no such route: GET /v1/stream or POST /v1/report",
        );
    }
    if !*channel.ready.borrow() {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "the controller's caches are not synced yet; retry shortly",
        );
    }
    let identity = match channel
        .auth
        .check(req.headers().get(header::AUTHORIZATION))
        .await
    {
        Ok(identity) => identity,
        Err(denied) => return refuse(&route.1, &denied),
    };
    if route.0 == Method::GET {
        open_stream(channel, &identity, req.uri().query().unwrap_or_default())
    } else {
        take_report(channel, &identity, req).await
    }
}

fn refuse(path: &str, denied: &Denied) -> Response<Body> {
    tracing::info!(%path, %denied, "channel request refused");
    text(denied.status(), &denied.to_string())
}

fn open_stream(channel: Arc<Channel>, identity: &Identity, query: &str) -> Response<Body> {
    let params = parse_query(query);
    let Some(id) = params.get("dataPlane").filter(|id| !id.is_empty()) else {
        return text(
            StatusCode::BAD_REQUEST,
            "the dataPlane query parameter is required",
        );
    };
    if let Err(denied) = identity.may_speak_for(id) {
        return refuse(STREAM_PATH, &denied);
    }
    let since = match params.get("since").map(|s| s.parse::<u64>()) {
        None => None,
        Some(Ok(since)) => Some(since),
        Some(Err(_)) => return text(StatusCode::BAD_REQUEST, "since must be a revision number"),
    };
    let selector = match Selector::parse(params.get("selector").map_or("", String::as_str)) {
        Ok(selector) => selector,
        Err(e) => return text(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    let shared = &channel.shared;
    // Subscribe before reading the state, so no commit falls in between.
    let revisions = shared.hub.subscribe();
    let (guard, new) = shared
        .data_planes
        .stream_opened(id, selector.clone(), Instant::now());
    shared.metrics.streams.inc();
    if new {
        shared.triggers.pools(shared.hub.selected(&selector));
    }
    tracing::info!(data_plane = %id, ?since, selector = %selector, "data plane connected");
    let stream = Stream {
        channel: channel.clone(),
        revisions,
        sent: since,
        selector,
        first: true,
        _open: OpenStream {
            _guard: guard,
            channel: channel.clone(),
        },
    };
    let lines = futures_util::stream::unfold(stream, |mut stream| async move {
        let chunk = stream.next_chunk().await?;
        Some((Ok::<_, Infallible>(Frame::data(chunk)), stream))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .header(header::CACHE_CONTROL, "no-store")
        .body(BoxBody::new(StreamBody::new(lines)))
        .expect("a valid response")
}

impl Stream {
    /// The next chunk of lines: what is missing, or a heartbeat. `None` ends the stream.
    async fn next_chunk(&mut self) -> Option<Bytes> {
        let hub = &self.channel.shared.hub;
        loop {
            if !std::mem::take(&mut self.first) {
                tokio::select! {
                    changed = self.revisions.changed() => changed.ok()?,
                    () = tokio::time::sleep(self.channel.heartbeat) => {
                        let revision = self.sent.unwrap_or_else(|| hub.revision());
                        return Some(heartbeat(revision));
                    }
                }
            }
            let lines = hub.updates(self.sent, &self.selector);
            if let Some(last) = lines.last() {
                self.sent = Some(last.revision());
                let mut out = Vec::with_capacity(lines.len() * 256);
                lines.iter().for_each(|line| line.write_to(&mut out));
                return Some(Bytes::from(out));
            }
        }
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.channel.shared.metrics.streams.dec();
    }
}

async fn take_report<B>(
    channel: Arc<Channel>,
    identity: &Identity,
    req: Request<B>,
) -> Response<Body>
where
    B: HttpBody,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let relayed = req.headers().contains_key(RELAYED_BY);
    let authorization = req.headers().get(header::AUTHORIZATION).cloned();
    let body = match Limited::new(req.into_body(), MAX_REPORT).collect().await {
        Ok(body) => body.to_bytes(),
        Err(e) => {
            return text(
                StatusCode::BAD_REQUEST,
                &format!("cannot read the report: {e}"),
            );
        }
    };
    let report: Report = match serde_json::from_slice(&body) {
        Ok(report) => report,
        Err(e) => return text(StatusCode::BAD_REQUEST, &format!("invalid report: {e}")),
    };
    if report.data_plane.is_empty() {
        return text(
            StatusCode::BAD_REQUEST,
            "invalid report: dataPlane is empty",
        );
    }
    if let Err(denied) = identity.may_speak_for(&report.data_plane) {
        return refuse(REPORT_PATH, &denied);
    }
    let selector = match Selector::parse(&report.selector) {
        Ok(selector) => selector,
        Err(e) => return text(StatusCode::BAD_REQUEST, &format!("invalid report: {e}")),
    };
    let shared = &channel.shared;
    if !relayed && let Some(leader) = shared.role.borrow().relay_to() {
        channel.relay.forward(leader, authorization, body.clone());
    }
    let now = Instant::now();
    let id = report.data_plane.clone();
    let revision = report.revision;
    let reported = shared.data_planes.report(report, selector, now);
    for selector in &reported.selectors {
        shared.triggers.pools(shared.hub.selected(selector));
    }
    if !reported.pools.is_empty() {
        tracing::debug!(data_plane = %id, revision, pools = ?reported.pools, "report changed pools");
    }
    shared.triggers.pools(&reported.pools);
    for took in shared.data_planes.converged(now, |r| shared.hub.issued(r)) {
        shared.metrics.convergence.observe(took.as_secs_f64());
    }
    shared
        .metrics
        .data_planes
        .set(i64::try_from(shared.data_planes.connected(now)).unwrap_or(i64::MAX));
    Response::builder()
        .status(StatusCode::NO_CONTENT)
        .body(BoxBody::new(Full::new(Bytes::new())))
        .expect("a valid response")
}

/// A heartbeat line.
fn heartbeat(revision: u64) -> Bytes {
    let mut out =
        serde_json::to_vec(&Update::Heartbeat { revision }).expect("an update serializes");
    out.push(b'\n');
    Bytes::from(out)
}

fn text(status: StatusCode, message: &str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(BoxBody::new(Full::new(Bytes::from(format!("{message}\n")))))
        .expect("a valid response")
}

#[cfg(test)]
mod tests {
    use weir_api::Pool;
    use weir_api::channel::{AppliedPool, ChannelPool};

    use super::*;
    use crate::controller::Triggers;
    use crate::dataplanes::{DataPlanes, LINGER};
    use crate::hub::{Entry, Hub};
    use crate::leader::Role;
    use crate::metrics::Metrics;

    const BASE: u64 = 5 << 39;

    fn channel(ready: bool) -> Arc<Channel> {
        let (triggers, _) = Triggers::new();
        let hub = Arc::new(Hub::new(BASE));
        let pool: Pool = serde_json::from_value(serde_json::json!({
            "name": "shop/web",
            "targets": [{"address": "10.0.0.1:80", "weight": 1}],
        }))
        .unwrap();
        hub.stage(
            "shop/web",
            Some(Entry {
                pool: ChannelPool {
                    generation: 3,
                    pool,
                },
                labels: [("team".to_owned(), "shop".to_owned())].into(),
            }),
        );
        hub.commit();
        Arc::new(Channel {
            shared: Shared {
                hub,
                data_planes: Arc::new(DataPlanes::new(LINGER)),
                metrics: Arc::new(Metrics::new()),
                triggers,
                role: watch::channel(Role::Alone).1,
            },
            auth: Authenticator::new(vec!["t0ken".into()], None),
            ready: watch::channel(ready).1,
            heartbeat: HEARTBEAT,
            relay: Relay::new("test"),
        })
    }

    fn request(method: Method, uri: &str, token: Option<&str>, body: &str) -> Request<Full<Bytes>> {
        let mut r = Request::builder().method(method).uri(uri);
        if let Some(token) = token {
            r = r.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        r.body(Full::new(Bytes::from(body.to_owned()))).unwrap()
    }

    async fn answer(channel: &Arc<Channel>, req: Request<Full<Bytes>>) -> (StatusCode, String) {
        let response = handle(channel.clone(), req).await;
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    /// The first chunk of a stream.
    async fn first_chunk(channel: &Arc<Channel>, uri: &str) -> (StatusCode, String) {
        let response = handle(
            channel.clone(),
            request(Method::GET, uri, Some("t0ken"), ""),
        )
        .await;
        let status = response.status();
        let mut body = response.into_body();
        let frame = tokio::time::timeout(Duration::from_secs(1), body.frame())
            .await
            .expect("a first chunk at once")
            .expect("a frame")
            .unwrap();
        let data = frame.into_data().unwrap();
        (status, String::from_utf8_lossy(&data).into_owned())
    }

    #[tokio::test]
    async fn nothing_is_served_before_the_caches_are_synced() {
        let (status, body) = answer(
            &channel(false),
            request(Method::GET, "/v1/stream?dataPlane=a", Some("t0ken"), ""),
        )
        .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("not synced"), "{body}");
    }

    #[tokio::test]
    async fn requests_without_a_valid_token_or_with_a_bad_query_are_refused() {
        let c = channel(true);
        let cases = [
            (
                request(Method::GET, "/v1/stream?dataPlane=a", None, ""),
                401,
                "no bearer token",
            ),
            (
                request(Method::GET, "/v1/stream?dataPlane=a", Some("nope"), ""),
                401,
                "not valid",
            ),
            (
                request(Method::POST, "/v1/report", Some("nope"), "{}"),
                401,
                "not valid",
            ),
            (
                request(Method::GET, "/v1/stream", Some("t0ken"), ""),
                400,
                "dataPlane",
            ),
            (
                request(
                    Method::GET,
                    "/v1/stream?dataPlane=a&since=x",
                    Some("t0ken"),
                    "",
                ),
                400,
                "since",
            ),
            (
                request(
                    Method::GET,
                    "/v1/stream?dataPlane=a&selector=team%20within%20(a)",
                    Some("t0ken"),
                    "",
                ),
                400,
                "key in (v1,v2)",
            ),
            (
                request(Method::POST, "/v1/report", Some("t0ken"), "{\"x\":1}"),
                400,
                "invalid report",
            ),
            (
                request(Method::GET, "/v2/stream", Some("t0ken"), ""),
                404,
                "no such route",
            ),
        ];
        for (req, want, says) in cases {
            let uri = req.uri().to_string();
            let (status, body) = answer(&c, req).await;
            assert_eq!(status.as_u16(), want, "{uri}: {body}");
            assert!(body.contains(says), "{uri}: {body}");
        }
    }

    #[tokio::test]
    async fn a_stream_starts_with_the_snapshot_or_what_was_missed() {
        let c = channel(true);
        let (status, first) = first_chunk(&c, "/v1/stream?dataPlane=a").await;
        assert_eq!(status, StatusCode::OK);
        let update: Update = serde_json::from_str(first.trim_end()).unwrap();
        let Update::Snapshot { revision, pools } = update else {
            panic!("{first}")
        };
        assert_eq!((revision, pools.len()), (BASE + 1, 1));
        let (_, missed) = first_chunk(&c, &format!("/v1/stream?dataPlane=a&since={BASE}")).await;
        assert!(
            missed.starts_with(r#"{"type":"pool","revision":"#),
            "{missed}"
        );
        let (_, other) = first_chunk(&c, "/v1/stream?dataPlane=b&selector=team%3Dweb").await;
        assert!(
            other.contains(r#""pools":[]"#),
            "the selector leaves the pool out: {other}"
        );
        // The three streams were dropped, as hyper drops the body of a closed connection.
        assert_eq!(c.shared.metrics.streams.get(), 0);
        assert_eq!(
            c.shared.data_planes.connected(Instant::now()),
            0,
            "a data plane whose stream ended without ever reporting is not connected"
        );
    }

    #[tokio::test]
    async fn a_report_is_recorded_and_counts_the_data_plane_synced() {
        let c = channel(true);
        let report = Report {
            data_plane: "dp-1".into(),
            revision: BASE + 1,
            applied: vec![AppliedPool {
                name: "shop/web".into(),
                generation: 3,
            }],
            ..Report::default()
        };
        let body = serde_json::to_string(&report).unwrap();
        let (status, _) = answer(
            &c,
            request(Method::POST, "/v1/report", Some("t0ken"), &body),
        )
        .await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let labels = [("team".to_owned(), "shop".to_owned())].into();
        let seen = c
            .shared
            .data_planes
            .observe("shop/web", &labels, 3, &[], Instant::now());
        assert_eq!((seen.connected, seen.synced), (1, 1));
    }
}
