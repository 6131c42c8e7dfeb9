//! The whole loop against the shared real control plane: the `weir-controller` binary, real
//! `weir-dataplane` processes following it over the JSON channel, and `weir-echo` backends
//! behind Services and EndpointSlices made by the tests (there is no EndpointSlice controller).
//!
//! Each test works in a namespace of its own, with its own controller watching only that
//! namespace. Backends listen on a non-loopback address of this machine, because the API
//! server refuses loopback addresses in EndpointSlices. Every wait is bounded.
//!
//! Needs the binaries of `scripts/control-plane` and Weir's binaries built next to the test
//! executable (`cargo test --workspace` builds them; or `cargo build -p weir-controller -p
//! weir-dataplane -p weir-echo`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, Service, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use weir_crds::{LoadBalancerPool, LoadBalancerPoolStatus};
use weir_e2e::weir::{Controller, DataPlane, Echo, Http, Tally, eventually, host_address};
use weir_e2e::{ControlPlane, objects};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const TOKEN: &str = "weir-e2e-token";
/// Longest the status may take to show what the data planes did (they report every second).
const STATUS_BOUND: Duration = Duration::from_secs(30);

/// The shared control plane with the CRD installed from `crds/` (once per test binary).
async fn plane() -> Result<&'static ControlPlane, Box<dyn std::error::Error>> {
    Ok(ControlPlane::shared_with_crds().await?)
}

/// A namespace, a controller watching it, and helpers to fill it.
struct Scene {
    plane: &'static ControlPlane,
    client: Client,
    ns: String,
    controller: Controller,
}

impl Scene {
    /// A new namespace `<prefix>-xxxxx` and a controller for it with a static token.
    async fn new(prefix: &str) -> Result<Self, Box<dyn std::error::Error>> {
        let plane = plane().await?;
        let ns = plane.namespace(prefix).await?;
        let controller = Controller::start(
            plane.kubeconfig_path(),
            &["--namespace", &ns, "--token", TOKEN],
        )
        .await;
        Ok(Self {
            plane,
            client: plane.client(),
            ns,
            controller,
        })
    }

    /// A data plane following the controller with the static token.
    async fn data_plane(&self, name: &str) -> DataPlane {
        following(&self.controller, &format!("{}-{name}", self.ns)).await
    }

    /// Service `name` (port 80 named `http`) and one EndpointSlice per backend,
    /// `<name>-<backend>`, each endpoint ready.
    async fn service(&self, name: &str, backends: &[&Echo]) -> TestResult {
        Api::<Service>::namespaced(self.client.clone(), &self.ns)
            .create(&PostParams::default(), &objects::service(name, 80))
            .await?;
        for backend in backends {
            self.slices()
                .create(
                    &PostParams::default(),
                    &slice(name, &format!("{name}-{}", backend.name), backend.addr),
                )
                .await?;
        }
        Ok(())
    }

    fn slices(&self) -> Api<EndpointSlice> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// `kubectl apply` of pool `name` with `spec` (YAML lines indented by two spaces).
    async fn apply_pool(&self, name: &str, spec: &str) -> TestResult {
        let yaml = format!(
            "apiVersion: weir.dev/v1alpha1\nkind: LoadBalancerPool\nmetadata: {{ name: {name} }}\n\
             spec:\n{spec}"
        );
        self.plane
            .kubectl_with_input(["apply", "-n", &self.ns, "-f", "-"], &yaml)
            .await?;
        Ok(())
    }

    /// Waits until the status of pool `name` satisfies `want` (which says what is missing).
    async fn status_where(
        &self,
        name: &str,
        want: impl Fn(&LoadBalancerPoolStatus) -> Result<(), String>,
    ) -> (LoadBalancerPoolStatus, Duration) {
        let api = Api::<LoadBalancerPool>::namespaced(self.client.clone(), &self.ns);
        let what = format!("status of {}/{name}", self.ns);
        eventually(&what, STATUS_BOUND, || {
            let api = api.clone();
            let want = &want;
            async move {
                let pool = api.get_status(name).await.map_err(|e| e.to_string())?;
                let status = pool.status.unwrap_or_default();
                want(&status).map_err(|e| format!("{e} in {}", describe(&status)))?;
                Ok(status)
            }
        })
        .await
    }
}

/// Slice `name` of Service `service` with one ready endpoint, the backend at `addr`.
fn slice(service: &str, name: &str, addr: SocketAddr) -> EndpointSlice {
    objects::endpoint_slice(service, name, &[addr.ip()], addr.port(), true)
}

fn condition<'s>(status: &'s LoadBalancerPoolStatus, type_: &str) -> Option<&'s Condition> {
    status.conditions.iter().find(|c| c.type_ == type_)
}

/// `Ok` when condition `type_` has `status` at `generation`.
fn has(
    status: &LoadBalancerPoolStatus,
    type_: &str,
    want: &str,
    generation: i64,
) -> Result<(), String> {
    match condition(status, type_) {
        Some(c) if c.status == want && c.observed_generation == Some(generation) => Ok(()),
        _ => Err(format!("no {type_}={want} at generation {generation}")),
    }
}

/// `Ok` when `connected` data planes are connected and all of them synced, and the pool is
/// programmed at `generation`.
fn programmed(
    status: &LoadBalancerPoolStatus,
    connected: u32,
    generation: i64,
) -> Result<(), String> {
    let planes = status.data_planes.unwrap_or_default();
    if (planes.connected, planes.synced) != (connected, connected) {
        return Err(format!("not {connected} of {connected} data planes synced"));
    }
    has(status, "Programmed", "True", generation)
}

/// A one-line account of a status, for messages.
fn describe(status: &LoadBalancerPoolStatus) -> String {
    let conditions: Vec<String> = status
        .conditions
        .iter()
        .map(|c| format!("{}={} ({}: {})", c.type_, c.status, c.reason, c.message))
        .collect();
    format!(
        "targets {:?}, data planes {:?}, observed generation {:?}, conditions [{}]",
        status.targets,
        status.data_planes,
        status.observed_generation,
        conditions.join("; ")
    )
}

/// When each request was sent, and the backend that answered or why it failed.
type Answers = Vec<(Instant, Result<String, String>)>;

/// Requests sent over and over through data planes until stopped: what answered, when.
struct Traffic {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<Answers>>,
}

impl Traffic {
    /// One client per data plane, GET `/` in a loop.
    fn start(planes: &[&DataPlane]) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = planes
            .iter()
            .map(|plane| {
                let (stop, url) = (stop.clone(), format!("http://{}/", plane.listen));
                tokio::spawn(async move {
                    let http = Http::new();
                    let mut seen = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let sent = Instant::now();
                        let answer = match http.get(&url).await {
                            Ok(r) if r.status == StatusCode::OK => {
                                Ok(r.backend.unwrap_or_default())
                            }
                            Ok(r) => Err(format!("{} {}", r.status, r.body.trim())),
                            Err(e) => Err(e),
                        };
                        seen.push((sent, answer));
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    seen
                })
            })
            .collect();
        Self { stop, tasks }
    }

    /// Stops and returns every answer, in the order sent per data plane.
    async fn stop(self) -> Answers {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        for task in self.tasks {
            all.extend(task.await.expect("a traffic task"));
        }
        all
    }
}

/// (a) and (b): a pool of two Services weighted 90/10 splits traffic 90/10 through each of two
/// data planes, and its status shows the targets, both data planes synced and
/// `Programmed=True`; a third data plane brings it to 3 synced without touching the pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_90_10_pool_splits_traffic_on_every_data_plane_and_reports_it_programmed() -> TestResult {
    let scene = Scene::new("split").await?;
    let ip = host_address();
    let (v1, v2) = (Echo::start("users-v1", ip), Echo::start("users-v2", ip));
    scene.service("users-v1", &[&v1]).await?;
    scene.service("users-v2", &[&v2]).await?;
    let planes = [
        scene.data_plane("dp-1").await,
        scene.data_plane("dp-2").await,
    ];

    let applied = Instant::now();
    scene
        .apply_pool(
            "users",
            "  backends:\n\
             \x20   - service: { name: users-v1, port: 80 }\n\
             \x20     weight: 90\n\
             \x20   - service: { name: users-v2, port: http }\n\
             \x20     weight: 10\n",
        )
        .await?;
    let apply_returned = Instant::now();
    let (status, _) = scene
        .status_where("users", |s| {
            programmed(s, 2, 1)?;
            match s.targets {
                Some(t) if (t.total, t.ready, t.healthy) == (2, 2, 2) => Ok(()),
                _ => Err("targets not 2 total, 2 ready, 2 healthy".into()),
            }
        })
        .await;
    println!(
        "split: programmed {:.2} s after kubectl apply began, {:.2} s after it returned \
         (the API server holds the first create after a new CRD for 2 s): {}",
        applied.elapsed().as_secs_f64(),
        apply_returned.elapsed().as_secs_f64(),
        describe(&status)
    );
    assert_eq!(status.routes.as_deref(), Some("*/"));
    has(&status, "Accepted", "True", 1)?;
    has(&status, "ResolvedRefs", "True", 1)?;

    for plane in &planes {
        let tally = plane.tally("/", 2_000).await;
        println!("split: through {}: {tally}", plane.id);
        assert_eq!(tally.failures, 0, "{tally}");
        let share = tally.share("users-v1");
        assert!(
            (87.0..=93.0).contains(&share),
            "users-v1 got {share:.1}% through {}, not 90 ± 3: {tally}",
            plane.id
        );
    }
    let columns = scene
        .plane
        .kubectl(["get", "lbp", "-n", &scene.ns, "-o", "wide"])
        .await?;
    println!("split: kubectl get lbp -o wide:\n{}", columns.trim_end());

    // (b) A third data plane: the status follows without any change to the pool.
    let started = Instant::now();
    let third = scene.data_plane("dp-3").await;
    let (status, _) = scene.status_where("users", |s| programmed(s, 3, 1)).await;
    println!(
        "split: third data plane started and counted synced in {:.2} s: {}",
        started.elapsed().as_secs_f64(),
        describe(&status)
    );
    let tally = third.tally("/", 200).await;
    println!("split: through {}: {tally}", third.id);
    assert_eq!(tally.failures, 0, "{tally}");
    let controller = &scene.controller;
    let metric = controller.metric("weir_controller_data_planes").await;
    let count = controller
        .metric("weir_controller_convergence_seconds_count")
        .await
        .unwrap_or(0.0);
    let sum = controller
        .metric("weir_controller_convergence_seconds_sum")
        .await
        .unwrap_or(0.0);
    println!(
        "split: weir_controller_data_planes {metric:?}; reconciles {:?}, status writes {:?}; \
         {count} changes converged, {:.0} ms on average (reports come once a second)",
        controller.metric("weir_controller_reconciles_total").await,
        controller
            .metric("weir_controller_status_writes_total")
            .await,
        if count > 0.0 { sum * 1e3 / count } else { 0.0 },
    );
    assert_eq!(metric, Some(3.0));

    // A data plane that goes away: its stream closes at once; it stays counted for 30 s
    // after its last report (long enough to ride out a restart).
    drop(third);
    let (_, closed_in) = eventually(
        "the stream of a killed data plane closed",
        STATUS_BOUND,
        || async {
            match controller.metric("weir_controller_streams").await {
                Some(n) if n <= 2.0 => Ok(()),
                other => Err(format!("weir_controller_streams {other:?}")),
            }
        },
    )
    .await;
    println!(
        "split: the killed dp-3's stream seen closed after {:.0} ms",
        closed_in.as_secs_f64() * 1e3
    );
    Ok(())
}

/// (c) Marking an endpoint not ready in its EndpointSlice stops traffic to it within a
/// second, on every data plane, without a failed request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_marked_not_ready_gets_no_traffic_within_a_second() -> TestResult {
    let scene = Scene::new("ready").await?;
    let ip = host_address();
    let (a, b) = (Echo::start("web-a", ip), Echo::start("web-b", ip));
    scene.service("web", &[&a, &b]).await?;
    let planes = [
        scene.data_plane("dp-1").await,
        scene.data_plane("dp-2").await,
    ];
    scene
        .apply_pool(
            "web",
            "  backends:\n    - service: { name: web, port: http }\n",
        )
        .await?;
    scene.status_where("web", |s| programmed(s, 2, 1)).await;
    for plane in &planes {
        let tally = plane.tally("/", 100).await;
        assert!(
            tally.count("web-a") > 0 && tally.count("web-b") > 0,
            "both endpoints serve at first: {tally}"
        );
    }

    let traffic = Traffic::start(&[&planes[0], &planes[1]]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let patched = Instant::now();
    let slices = scene.slices();
    let mut not_ready = slices.get("web-web-b").await?;
    for endpoint in not_ready.endpoints.iter_mut().flatten() {
        endpoint.conditions = Some(serde_json::from_value(
            json!({ "ready": false, "serving": false, "terminating": false }),
        )?);
    }
    slices
        .replace("web-web-b", &PostParams::default(), &not_ready)
        .await?;
    let written = patched.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let answers = traffic.stop().await;

    let failures: Vec<_> = answers.iter().filter(|(_, a)| a.is_err()).collect();
    let after: Vec<_> = answers.iter().filter(|(at, _)| *at >= patched).collect();
    let last_b = after
        .iter()
        .filter(|(_, a)| a.as_deref() == Ok("web-b"))
        .map(|(at, _)| at.duration_since(patched))
        .max();
    let late = after
        .iter()
        .filter(|(at, a)| {
            at.duration_since(patched) >= Duration::from_secs(1) && a.as_deref() == Ok("web-b")
        })
        .count();
    println!(
        "ready: slice written in {:.0} ms; {} requests in all, {} after the change, {} failed; \
         web-b last answered {} after the change; {late} requests reached it after 1 s",
        written.as_secs_f64() * 1e3,
        answers.len(),
        after.len(),
        failures.len(),
        last_b.map_or("never".to_owned(), |d| format!(
            "{:.0} ms",
            d.as_secs_f64() * 1e3
        )),
    );
    assert!(
        failures.is_empty(),
        "failed requests: {:?}",
        &failures[..failures.len().min(5)]
    );
    assert_eq!(
        late, 0,
        "web-b still took traffic a second after it was marked not ready"
    );
    let (status, _) = scene
        .status_where("web", |s| match s.targets {
            Some(t) if (t.total, t.ready) == (2, 1) => Ok(()),
            _ => Err("targets not 2 total, 1 ready".into()),
        })
        .await;
    println!("ready: {}", describe(&status));
    Ok(())
}

/// (d) A pool naming a Service that does not exist gets `ResolvedRefs=False` with a readable
/// message and an Event; creating the Service resolves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_naming_a_missing_service_reports_resolved_refs_false() -> TestResult {
    let scene = Scene::new("missing").await?;
    scene
        .apply_pool(
            "orders",
            "  backends:\n    - service: { name: orders-v2, port: 8080 }\n",
        )
        .await?;
    let (status, took) = scene
        .status_where("orders", |s| has(s, "ResolvedRefs", "False", 1))
        .await;
    let resolved = condition(&status, "ResolvedRefs").expect("the condition");
    println!(
        "missing: ResolvedRefs={} reason {} message {:?} after {:.2} s; {}",
        resolved.status,
        resolved.reason,
        resolved.message,
        took.as_secs_f64(),
        describe(&status)
    );
    assert_eq!(resolved.reason, "BackendNotFound");
    assert_eq!(
        resolved.message,
        r#"backends[0]: Service "orders-v2" not found"#
    );
    has(&status, "Accepted", "True", 1)?;
    let targets = status.targets.unwrap_or_default();
    assert_eq!((targets.total, targets.ready), (0, 0));

    let events = Api::<Event>::namespaced(scene.client.clone(), &scene.ns);
    let (event, _) = eventually("a BackendNotFound event", STATUS_BOUND, || {
        let events = events.clone();
        async move {
            let list = events
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?;
            list.items
                .into_iter()
                .find(|e| e.reason.as_deref() == Some("BackendNotFound"))
                .ok_or_else(|| "no event yet".to_owned())
        }
    })
    .await;
    println!(
        "missing: event {} {:?}: {:?}",
        event.type_.unwrap_or_default(),
        event.reason.unwrap_or_default(),
        event.note.unwrap_or_default()
    );

    let backend = Echo::start("orders-v2", host_address());
    let created = Instant::now();
    Api::<Service>::namespaced(scene.client.clone(), &scene.ns)
        .create(&PostParams::default(), &objects::service("orders-v2", 8080))
        .await?;
    scene
        .slices()
        .create(
            &PostParams::default(),
            &slice("orders-v2", "orders-v2-a", backend.addr),
        )
        .await?;
    let (status, _) = scene
        .status_where("orders", |s| {
            has(s, "ResolvedRefs", "True", 1)?;
            match s.targets {
                Some(t) if t.ready == 1 => Ok(()),
                _ => Err("no ready target".into()),
            }
        })
        .await;
    println!(
        "missing: Service created, resolved in {:.2} s: {}",
        created.elapsed().as_secs_f64(),
        describe(&status)
    );
    Ok(())
}

/// (e) With the controller killed, data planes keep serving without a single error; when it
/// comes back they reconnect, resync, and follow the next change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_planes_serve_through_a_controller_outage_and_resync_after() -> TestResult {
    let mut scene = Scene::new("outage").await?;
    let ip = host_address();
    let (a, b) = (Echo::start("blue", ip), Echo::start("green", ip));
    scene.service("blue", &[&a]).await?;
    scene.service("green", &[&b]).await?;
    let planes = [
        scene.data_plane("dp-1").await,
        scene.data_plane("dp-2").await,
    ];
    let pool = |blue: u32, green: u32| {
        format!(
            "  backends:\n\
             \x20   - service: {{ name: blue, port: 80 }}\n\
             \x20     weight: {blue}\n\
             \x20   - service: {{ name: green, port: 80 }}\n\
             \x20     weight: {green}\n"
        )
    };
    scene.apply_pool("app", &pool(1, 0)).await?;
    scene.status_where("app", |s| programmed(s, 2, 1)).await;

    let traffic = Traffic::start(&[&planes[0], &planes[1]]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let killed = Instant::now();
    scene.controller.kill();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let restarted = Instant::now();
    scene.controller.restart().await;
    let ready_in = restarted.elapsed();
    let controller = &scene.controller;
    let (_, reconnected_in) = eventually(
        "both data planes streaming from the new controller",
        STATUS_BOUND,
        || async {
            match controller.metric("weir_controller_streams").await {
                Some(n) if n >= 2.0 => Ok(()),
                other => Err(format!("weir_controller_streams {other:?}")),
            }
        },
    )
    .await;
    let (status, _) = scene.status_where("app", |s| programmed(s, 2, 1)).await;
    println!(
        "outage: controller down {:.1} s, ready {:.2} s after restart, both data planes \
         streaming {:.2} s after it was ready; {}",
        (restarted - killed).as_secs_f64(),
        ready_in.as_secs_f64(),
        reconnected_in.as_secs_f64(),
        describe(&status)
    );

    // The next change reaches both data planes through the new controller.
    let changed = Instant::now();
    scene.apply_pool("app", &pool(0, 1)).await?;
    for plane in &planes {
        eventually(
            &format!("{} serving green", plane.id),
            STATUS_BOUND,
            || async {
                match plane.get("/").await {
                    Ok(r) if r.backend.as_deref() == Some("green") => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            },
        )
        .await;
        println!(
            "outage: {} follows the change {:.2} s after kubectl apply",
            plane.id,
            changed.elapsed().as_secs_f64()
        );
    }
    let (status, _) = scene.status_where("app", |s| programmed(s, 2, 2)).await;
    let answers = traffic.stop().await;
    let during: Vec<_> = answers
        .iter()
        .filter(|(at, _)| *at >= killed && *at < restarted + ready_in)
        .collect();
    let failures: Vec<_> = answers.iter().filter(|(_, a)| a.is_err()).collect();
    let mut tally = Tally::default();
    for (_, answer) in &answers {
        tally.record(answer.clone().map(|backend| weir_e2e::weir::Reply {
            status: StatusCode::OK,
            backend: Some(backend),
            body: String::new(),
        }));
    }
    println!(
        "outage: {} requests while the controller was down or starting, {} failed in all; {tally}; {}",
        during.len(),
        failures.len(),
        describe(&status)
    );
    assert!(
        failures.is_empty(),
        "failed requests: {:?}",
        &failures[..failures.len().min(5)]
    );
    assert!(during.len() > 100, "too little traffic during the outage");
    Ok(())
}

/// (f) Deleting a pool removes its routes: every data plane answers 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_pool_answers_404_on_every_data_plane() -> TestResult {
    let scene = Scene::new("delete").await?;
    let backend = Echo::start("shop", host_address());
    scene.service("shop", &[&backend]).await?;
    let planes = [
        scene.data_plane("dp-1").await,
        scene.data_plane("dp-2").await,
    ];
    scene
        .apply_pool(
            "shop",
            "  backends:\n    - service: { name: shop, port: 80 }\n",
        )
        .await?;
    scene.status_where("shop", |s| programmed(s, 2, 1)).await;
    for plane in &planes {
        assert_eq!(plane.get("/").await?.status, StatusCode::OK);
    }
    let deleted = Instant::now();
    scene
        .plane
        .kubectl(["delete", "lbp", "shop", "-n", &scene.ns, "--wait=false"])
        .await?;
    for plane in &planes {
        let (reply, _) = eventually(
            &format!("404 from {}", plane.id),
            Duration::from_secs(10),
            || async {
                match plane.get("/").await {
                    Ok(r) if r.status == StatusCode::NOT_FOUND => Ok(r),
                    other => Err(format!("{other:?}")),
                }
            },
        )
        .await;
        println!(
            "delete: {} answers {} {:?} {:.0} ms after kubectl delete",
            plane.id,
            reply.status,
            reply.body.trim(),
            deleted.elapsed().as_secs_f64() * 1e3
        );
    }
    Ok(())
}

/// Data planes authenticate with ServiceAccount tokens checked by TokenReview: an allowed
/// ServiceAccount's token follows the channel; another's is refused with 403, a bad token or
/// none with 401; a token bound to a pod may speak only for the data plane of that name (403
/// otherwise), so one data plane cannot skew another's part of the status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_planes_authenticate_with_service_account_tokens() -> TestResult {
    const AUDIENCE: &str = "weir-e2e-channel";
    let plane = plane().await?;
    let ns = plane.namespace("tokens").await?;
    let client = plane.client();
    let accounts = Api::<ServiceAccount>::namespaced(client.clone(), &ns);
    let pp = PostParams::default();
    let mut tokens = Vec::new();
    for name in ["dataplane", "intruder"] {
        accounts
            .create(
                &pp,
                &serde_json::from_value(json!({ "metadata": { "name": name } }))?,
            )
            .await?;
        let request: TokenRequest = serde_json::from_value(json!({
            "spec": { "audiences": [AUDIENCE], "expirationSeconds": 600 },
        }))?;
        let token = accounts
            .create_token_request(name, &pp, &request)
            .await?
            .status
            .and_then(|s| s.token)
            .ok_or("no token")?;
        tokens.push(token);
    }
    let allowed = format!("{ns}:dataplane");
    let controller = Controller::start(
        plane.kubeconfig_path(),
        &[
            "--namespace",
            &ns,
            "--token-audience",
            AUDIENCE,
            "--allowed-service-account",
            &allowed,
        ],
    )
    .await;
    let dir = tempfile::tempdir()?;
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, &tokens[0])?;
    let token_file = token_file.display().to_string();
    let follower = DataPlane::start(
        &format!("{ns}-dp"),
        &controller.url(),
        &["--token-file", &token_file],
    )
    .await;

    let stream = format!("{}/v1/stream?dataPlane=x", controller.url());
    let http = Http::new();
    let intruder = http.send(Method::GET, &stream, Some(&tokens[1])).await?;
    let garbage = http.send(Method::GET, &stream, Some("not-a-token")).await?;
    let none = http.send(Method::GET, &stream, None).await?;
    println!(
        "tokens: allowed ServiceAccount's data plane ready; another ServiceAccount: {} {:?}; \
         a bad token: {} {:?}; none: {} {:?}",
        intruder.status,
        intruder.body.trim(),
        garbage.status,
        garbage.body.trim(),
        none.status,
        none.body.trim()
    );
    assert_eq!(intruder.status, StatusCode::FORBIDDEN);
    assert!(
        intruder
            .body
            .contains(&format!("system:serviceaccount:{ns}:intruder"))
    );
    assert_eq!(garbage.status, StatusCode::UNAUTHORIZED);
    assert_eq!(none.status, StatusCode::UNAUTHORIZED);
    let metric = controller.metric("weir_controller_streams").await;
    assert_eq!(metric, Some(1.0), "only the allowed data plane streams");

    // A token bound to a pod (what a projected token in a pod is) speaks for that pod only.
    let pods = Api::<Pod>::namespaced(client.clone(), &ns);
    let pod = pods
        .create(
            &pp,
            &serde_json::from_value(json!({
                "metadata": { "name": "dp-pod" },
                "spec": {
                    "serviceAccountName": "dataplane",
                    "automountServiceAccountToken": false,
                    "containers": [{ "name": "dp", "image": "weir" }],
                },
            }))?,
        )
        .await?;
    let request: TokenRequest = serde_json::from_value(json!({
        "spec": {
            "audiences": [AUDIENCE],
            "expirationSeconds": 600,
            "boundObjectRef": { "kind": "Pod", "apiVersion": "v1", "name": "dp-pod", "uid": pod.metadata.uid },
        },
    }))?;
    let bound = accounts
        .create_token_request("dataplane", &pp, &request)
        .await?
        .status
        .and_then(|s| s.token)
        .ok_or("no token")?;
    let report_url = format!("{}/v1/report", controller.url());
    let report = |id: &str| {
        json!({ "dataPlane": id, "revision": 0, "applied": [], "rejected": [], "health": [] })
            .to_string()
    };
    let own = http
        .send_body(Method::POST, &report_url, Some(&bound), report("dp-pod"))
        .await?;
    let other = http
        .send_body(Method::POST, &report_url, Some(&bound), report("dp-other"))
        .await?;
    let other_stream = http
        .send(
            Method::GET,
            &format!("{}/v1/stream?dataPlane=dp-other", controller.url()),
            Some(&bound),
        )
        .await?;
    println!(
        "tokens: a pod-bound token reporting for its pod: {}; for another: {} {:?}",
        own.status,
        other.status,
        other.body.trim()
    );
    assert_eq!(own.status, StatusCode::NO_CONTENT);
    assert_eq!(other.status, StatusCode::FORBIDDEN);
    assert!(
        other.body.contains("does not match the pod \"dp-pod\""),
        "{}",
        other.body
    );
    assert_eq!(other_stream.status, StatusCode::FORBIDDEN);
    drop(follower);
    Ok(())
}

/// Several replicas: one holds the Lease and writes status, whichever replica each data
/// plane follows (reports that reach the other are relayed); a leader stopped with SIGTERM
/// releases the Lease, so the other takes over at once instead of after the Lease's 15 s, and
/// writes status from the end of its warm-up on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_elect_one_status_writer_and_hand_over_when_it_stops() -> TestResult {
    let plane = plane().await?;
    let ns = plane.namespace("lease").await?;
    let args = ["--namespace", ns.as_str(), "--token", TOKEN];
    let kubeconfig = plane.kubeconfig_path();
    let mut replicas = vec![
        Controller::start_replica(kubeconfig, &args, &ns, "replica-a").await,
        Controller::start_replica(kubeconfig, &args, &ns, "replica-b").await,
    ];
    let (leader, elected_in) =
        eventually("one replica leads", STATUS_BOUND, || leading(&replicas)).await;
    let follower = 1 - leader;
    let names = ["replica-a", "replica-b"];
    let leases = Api::<Lease>::namespaced(plane.client(), &ns);
    let holder = |lease: Lease| lease.spec.and_then(|s| s.holder_identity);
    assert_eq!(
        holder(leases.get("weir-controller").await?).as_deref(),
        Some(names[leader])
    );
    println!("lease: {} leads after {elected_in:.2?}", names[leader]);

    let scene = Scene {
        plane,
        client: plane.client(),
        ns: ns.clone(),
        controller: replicas.remove(leader),
    };
    let mut other = replicas.remove(0);
    let ip = host_address();
    let web = Echo::start("web-1", ip);
    scene.service("web", &[&web]).await?;
    let on_leader = scene.data_plane("dp-leader").await;
    let on_follower = following(&other, &format!("{ns}-dp-follower")).await;
    scene
        .apply_pool(
            "web",
            "  backends:\n    - service: { name: web, port: http }\n",
        )
        .await?;
    // The data plane on the follower counts: its reports were relayed to the leader.
    let (status, took) = scene.status_where("web", |s| programmed(s, 2, 1)).await;
    println!(
        "lease: programmed with both data planes after {took:.2?}: {}",
        describe(&status)
    );
    has_written_status(&scene.controller, "the leader").await;
    assert_eq!(
        writes(&other).await,
        Some(0.0),
        "the follower never writes status"
    );

    // SIGTERM: the leader releases the Lease on its way out.
    let mut scene = scene;
    let stopped = Instant::now();
    assert!(
        scene.controller.terminate(),
        "the leader exits cleanly on SIGTERM"
    );
    drop(on_leader);
    let (_, took_over) = eventually("the follower takes over", STATUS_BOUND, || async {
        match other.metric("weir_controller_leader").await {
            Some(1.0) => Ok(()),
            v => Err(format!("weir_controller_leader {v:?}")),
        }
    })
    .await;
    println!(
        "lease: {} took over {:.2?} after SIGTERM to the leader (the Lease lasts 15 s)",
        names[follower],
        stopped.elapsed()
    );
    assert!(
        took_over < Duration::from_secs(5),
        "a released Lease is taken over within a few retry periods, not after it expires"
    );
    assert_eq!(
        holder(leases.get("weir-controller").await?).as_deref(),
        Some(names[follower])
    );

    // The new leader writes status: a new generation, with the data planes it knows (the
    // killed leader's data plane reconnects to it, as it would through the Service).
    let rejoined = following(&other, &format!("{ns}-dp-rejoined")).await;
    scene
        .apply_pool(
            "web",
            "  backends:\n    - service: { name: web, port: http }\n\
             \x20 algorithm: LeastRequest\n",
        )
        .await?;
    let changed = Instant::now();
    let (status, _) = scene.status_where("web", |s| programmed(s, 2, 2)).await;
    println!(
        "lease: generation 2 programmed by the new leader {:.2?} after the change \
         (its warm-up is 11 s from the takeover): {}",
        changed.elapsed(),
        describe(&status)
    );
    has_written_status(&other, "the new leader").await;
    for plane in [&on_follower, &rejoined] {
        let tally = plane.tally("/", 100).await;
        assert_eq!(tally.failures, 0, "{}: {tally}", plane.id);
    }
    other.kill();
    Ok(())
}

/// The one replica of `replicas` whose `weir_controller_leader` is 1.
async fn leading(replicas: &[Controller]) -> Result<usize, String> {
    let mut leaders = Vec::new();
    for (i, replica) in replicas.iter().enumerate() {
        if replica.metric("weir_controller_leader").await == Some(1.0) {
            leaders.push(i);
        }
    }
    match leaders.as_slice() {
        [one] => Ok(*one),
        _ => Err(format!("replicas leading: {leaders:?}")),
    }
}

/// Status writes by `controller`.
async fn writes(controller: &Controller) -> Option<f64> {
    controller
        .metric("weir_controller_status_writes_total")
        .await
}

/// Waits until `controller` (`who`) counts a status write. The count moves once the API
/// server has answered the write, so a status read back can be seen before it moves.
async fn has_written_status(controller: &Controller, who: &str) {
    eventually(
        &format!("{who} counts its status writes"),
        STATUS_BOUND,
        || async {
            match writes(controller).await {
                Some(n) if n > 0.0 => Ok(()),
                v => Err(format!("weir_controller_status_writes_total {v:?}")),
            }
        },
    )
    .await;
}

/// A data plane `id` following `controller` with the static token.
async fn following(controller: &Controller, id: &str) -> DataPlane {
    DataPlane::start(id, &controller.url(), &["--token", TOKEN]).await
}
