//! Kubernetes mode, seen from the data plane: pools arrive over the controller's JSON channel.
//! The controller here is a scripted peer speaking the channel contract (`weir_api::channel`)
//! over a real socket; the controller itself is tested against it in its own crate.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use weir_api::Pool;
use weir_api::channel::{ChannelPool, Report, Update};

use crate::support::{Backend, Proxy};

const TOKEN: &str = "test-token";

/// The scripted controller: hands each stream request a channel the test writes updates to,
/// and keeps the reports and stream requests it receives.
struct Controller {
    addr: SocketAddr,
    streams: mpsc::UnboundedReceiver<(String, mpsc::UnboundedSender<Update>)>,
    reports: Arc<Mutex<Vec<Report>>>,
    task: tokio::task::JoinHandle<()>,
}

type Body = BoxBody<Bytes, std::convert::Infallible>;

impl Controller {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let addr = listener.local_addr().expect("its address");
        let (streams_tx, streams) = mpsc::unbounded_channel();
        let reports = Arc::new(Mutex::new(Vec::new()));
        let seen = reports.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (streams_tx, seen) = (streams_tx.clone(), seen.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let (streams_tx, seen) = (streams_tx.clone(), seen.clone());
                        async move {
                            Ok::<_, std::convert::Infallible>(answer(req, streams_tx, seen).await)
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            streams,
            reports,
            task,
        }
    }

    /// Waits for the data plane's next stream request: its query and the sender feeding it.
    async fn next_stream(&mut self) -> (String, mpsc::UnboundedSender<Update>) {
        tokio::time::timeout(Duration::from_secs(15), self.streams.recv())
            .await
            .expect("the data plane did not open a stream within 15 s")
            .expect("the controller is running")
    }

    /// Waits until a report satisfies `want`.
    async fn report_where(&self, want: impl Fn(&Report) -> bool) -> Report {
        let start = Instant::now();
        loop {
            if let Some(r) = self.reports.lock().unwrap().iter().rev().find(|r| want(r)) {
                return r.clone();
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "no such report within 10 s: {:?}",
                self.reports.lock().unwrap().last()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(
    req: Request<Incoming>,
    streams: mpsc::UnboundedSender<(String, mpsc::UnboundedSender<Update>)>,
    reports: Arc<Mutex<Vec<Report>>>,
) -> Response<Body> {
    let authorized = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        == Some(&format!("Bearer {TOKEN}"));
    if !authorized {
        return Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .body(full("bad token\n"))
            .unwrap();
    }
    match (req.method().clone(), req.uri().path()) {
        (Method::GET, "/v1/stream") => {
            let query = req.uri().query().unwrap_or_default().to_owned();
            let (tx, rx) = mpsc::unbounded_channel::<Update>();
            let _ = streams.send((query, tx));
            let lines = futures_util::stream::unfold(rx, |mut rx| async move {
                let update = rx.recv().await?;
                let mut line = serde_json::to_vec(&update).unwrap();
                line.push(b'\n');
                Some((Ok(Frame::data(Bytes::from(line))), rx))
            });
            Response::new(BoxBody::new(StreamBody::new(lines)))
        }
        (Method::POST, "/v1/report") => {
            let body = req.into_body().collect().await.unwrap().to_bytes();
            reports
                .lock()
                .unwrap()
                .push(serde_json::from_slice(&body).expect("a report"));
            Response::new(full(""))
        }
        _ => Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(full(""))
            .unwrap(),
    }
}

fn full(text: &'static str) -> Body {
    BoxBody::new(Full::new(Bytes::from_static(text.as_bytes())))
}

fn pool(generation: i64, targets: &[(SocketAddr, u32)]) -> ChannelPool {
    let targets: Vec<_> = targets
        .iter()
        .map(|(a, w)| serde_json::json!({"address": a, "weight": w}))
        .collect();
    let pool: Pool = serde_json::from_value(serde_json::json!({
        "name": "shop/web",
        "routes": [{"host": "*", "pathPrefix": "/"}],
        "targets": targets,
    }))
    .unwrap();
    ChannelPool { generation, pool }
}

/// Polls `/` until `backend` answers, bounded.
async fn until_served_by(proxy: &Proxy, backend: &str) -> Duration {
    let start = Instant::now();
    loop {
        let reply = proxy.get("/", &[]).await;
        if reply.backend() == Some(backend) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{backend} never answered: last {} {}",
            reply.status,
            reply.body
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pools_from_the_controller_are_served_changed_refused_and_kept_through_an_outage() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let mut controller = Controller::start().await;
    let url = controller.url();
    let starting = tokio::spawn(async move {
        let args = [
            "--controller",
            &url,
            "--token",
            TOKEN,
            "--data-plane-id",
            "dp-1",
        ];
        Proxy::start_managed(&args).await
    });

    // Ready only once the first state is in force.
    let (query, stream) = controller.next_stream().await;
    assert_eq!(
        query, "dataPlane=dp-1",
        "a first connection asks for everything"
    );
    stream
        .send(Update::Snapshot {
            revision: 1,
            pools: vec![pool(1, &[(a.addr, 1)])],
        })
        .unwrap();
    let proxy = starting.await.expect("the data plane started");
    assert_eq!(proxy.get("/", &[]).await.backend(), Some("a"));

    // A change takes effect at once.
    stream
        .send(Update::Pool {
            revision: 2,
            pool: Box::new(pool(2, &[(b.addr, 1)])),
        })
        .unwrap();
    let switched = until_served_by(&proxy, "b").await;
    let report = controller.report_where(|r| r.revision == 2).await;
    assert_eq!(report.data_plane, "dp-1");
    assert_eq!(report.applied[0].generation, 2);
    assert_eq!(report.health[0].healthy, vec![b.addr]);

    // An invalid pool is refused with its reason; the last good one keeps serving.
    stream
        .send(Update::Pool {
            revision: 3,
            pool: Box::new(pool(3, &[(a.addr, 5_000_000)])),
        })
        .unwrap();
    let refused = controller.report_where(|r| r.revision == 3).await;
    assert_eq!(refused.rejected[0].generation, 3);
    assert!(
        refused.rejected[0].reason.contains("maximum weight"),
        "{:?}",
        refused.rejected
    );
    assert_eq!(refused.applied[0].generation, 2);
    assert_eq!(proxy.get("/", &[]).await.backend(), Some("b"));

    // The controller goes away: the data plane keeps serving, then catches up from revision 3.
    drop(stream);
    let mut failures = 0;
    for _ in 0..50 {
        let reply = proxy.get("/", &[]).await;
        failures += usize::from(reply.status != 200);
    }
    let (query, stream) = controller.next_stream().await;
    assert_eq!(
        query, "dataPlane=dp-1&since=3",
        "a reconnect names the last revision applied"
    );
    stream
        .send(Update::Pool {
            revision: 4,
            pool: Box::new(pool(4, &[(a.addr, 1)])),
        })
        .unwrap();
    let resynced = until_served_by(&proxy, "a").await;

    // Removing the pool removes its routes.
    stream
        .send(Update::Removed {
            revision: 5,
            name: "shop/web".into(),
        })
        .unwrap();
    let start = Instant::now();
    while proxy.get("/", &[]).await.status != 404 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the removed pool still answers"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let admin = proxy
        .admin(
            Method::POST,
            "/pools/shop%2Fweb/targets",
            r#"{"address":"127.0.0.1:1"}"#,
        )
        .await;
    println!(
        "channel: change applied in {switched:?}; 50 requests during the outage, {failures} failed; \
         resynced in {resynced:?} after reconnecting; admin target API in controller mode: {}",
        admin.status
    );
    assert_eq!(failures, 0, "requests failed while the controller was away");
    assert!(
        matches!(admin.status.as_u16(), 404 | 409),
        "the admin API must not change controller pools: {}",
        admin.status
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_plane_with_a_wrong_token_gets_nothing_and_is_not_ready() {
    let mut controller = Controller::start().await;
    let url = controller.url();
    let proxy = Proxy::spawn_managed(&["--controller", &url, "--token", "wrong"]).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let ready = proxy.admin(Method::GET, "/ready", "").await;
    drop(proxy);
    println!("wrong token: /ready {} {}", ready.status, ready.body.trim());
    assert_eq!(ready.status, 503);
    assert!(
        controller.streams.try_recv().is_err(),
        "the controller must not have served a stream"
    );
}
