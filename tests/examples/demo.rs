//! The local demo (issue 6): Weir's whole Kubernetes loop on one machine, without a cluster.
//!
//! It starts a real kube-apiserver and etcd (the end-to-end tests' control plane), applies
//! Weir's CRD from `crds/`, starts three `weir-echo` backends, creates two Services for them
//! with their EndpointSlices, runs `weir-controller` and two `weir-dataplane`s following it,
//! applies `examples/demo-pool.yaml` with `kubectl` (the one `scripts/control-plane` builds), waits for the pool's status
//! to say it is programmed, sends requests through each data plane and prints the split each
//! one gave next to the split the pool asks for, then shows `kubectl get lbp -o wide` and
//! `kubectl describe lbp`. Everything runs as local processes and is stopped on exit.
//!
//! Two things stand in for a cluster. There is no kube-controller-manager and there are no
//! Pods, so the demo writes the EndpointSlices that the EndpointSlice controller would. And
//! the API server refuses loopback addresses in EndpointSlices, so the backends listen on the
//! test host 198.18.0.2, a network namespace made by `scripts/test-hosts` (as root).
//!
//! ```sh
//! scripts/demo                 # run it, print what it saw, stop everything
//! scripts/demo --keep          # then keep it running, with commands to try, until Ctrl-C
//! ```
//!
//! `scripts/demo` builds what it needs and runs this example; by hand, with the test host made
//! and the control plane built (`scripts/test` does both):
//!
//! ```sh
//! cargo build -p weir-controller -p weir-dataplane -p weir-echo
//! cargo run -p weir-e2e --example demo -- --keep
//! ```
//!
//! Flags: `--keep`, `--requests N` (per data plane, default 1000).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::PostParams;
use kube::{Api, Client};
use serde_json::json;
use tokio::signal::unix::{SignalKind, signal};
use weir_crds::{LoadBalancerPool, LoadBalancerPoolStatus};
use weir_e2e::weir::{Controller, DataPlane, Echo, Tally, host_address};
use weir_e2e::{ControlPlane, binaries, objects};

type Result<T, E = Box<dyn std::error::Error + Send + Sync>> = std::result::Result<T, E>;

/// The namespace everything of the demo lives in.
const NS: &str = "weir-demo";
/// The pool in `examples/demo-pool.yaml`.
const POOL: &str = "web";
const POOL_FILE: &str = "examples/demo-pool.yaml";
/// The Services the pool names and the backends behind each.
const SERVICES: &[(&str, &[&str])] = &[
    ("web-v1", &["web-v1-a", "web-v1-b"]),
    ("web-v2", &["web-v2-a"]),
];
/// What the data planes present to the controller. In a cluster they present ServiceAccount
/// tokens, which the controller checks with a TokenReview (see `weir-controller --help`).
const TOKEN: &str = "weir-demo-token";
/// Longest the pool may take to be programmed everywhere (data planes report once a second,
/// and the API server holds the first create after a new CRD for about 2 s).
const PROGRAMMED_BOUND: Duration = Duration::from_secs(60);

const USAGE: &str = "usage: scripts/demo [--keep] [--requests N]
  --keep          keep everything running after the demo, with commands to try, until Ctrl-C
  --requests N    requests sent through each data plane (default 1000)";

struct Args {
    keep: bool,
    requests: usize,
}

/// The arguments, or `None` after `--help`.
fn parse_args() -> Result<Option<Args>, String> {
    let mut args = Args {
        keep: false,
        requests: 1000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--keep" => args.keep = true,
            "--requests" => {
                let value = it.next().ok_or("--requests needs a value")?;
                args.requests = match value.parse() {
                    Ok(n) if n > 0 => n,
                    _ => return Err(format!("--requests {value:?}: want a number above 0")),
                };
            }
            "-h" | "--help" => return Ok(None),
            _ => return Err(format!("unknown flag {flag}\n{USAGE}")),
        }
    }
    Ok(Some(args))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(Some(a)) => a,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    // Leaving `run` early drops what it started: the harness's handles kill their processes
    // and remove the control plane's folder. Dying of a signal instead would leave the Weir
    // processes running, so the signals that end a terminal session are caught, and first,
    // before the first (blocking) start.
    let code = tokio::select! {
        biased;
        signal = stop_signal() => {
            println!("\n{signal}: stopping everything.");
            if args.keep { ExitCode::SUCCESS } else { ExitCode::from(130) }
        }
        result = run(&args) => match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("\ndemo failed: {e}");
                ExitCode::FAILURE
            }
        },
    };
    println!("Stopped: control plane, controller, data planes and backends.");
    code
}

/// The first of SIGINT (Ctrl-C), SIGTERM and SIGHUP, by name.
async fn stop_signal() -> &'static str {
    let listen = |kind| signal(kind).expect("a signal handler");
    let (mut int, mut term, mut hup) = (
        listen(SignalKind::interrupt()),
        listen(SignalKind::terminate()),
        listen(SignalKind::hangup()),
    );
    tokio::select! {
        _ = int.recv() => "Ctrl-C",
        _ = term.recv() => "SIGTERM",
        _ = hup.recv() => "SIGHUP",
    }
}

async fn run(args: &Args) -> Result<()> {
    let began = Instant::now();
    println!(
        "Weir local demo: a real kube-apiserver and etcd, weir-controller, two weir-dataplanes\n\
         and three backends, all as local processes.\n"
    );

    let plane = ControlPlane::start()?;
    let client = plane.client();
    let version = client.apiserver_version().await?.git_version;
    println!(
        "1. control plane up in {:.1} s: kube-apiserver {version} and etcd, at {}",
        plane.started_in().as_secs_f64(),
        plane.server()
    );

    let started = Instant::now();
    plane.install_crds().await?;
    println!(
        "2. CRD loadbalancerpools.weir.dev applied (kubectl apply -f crds/) and established in \
         {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let ip = host_address();
    let mut backends: Vec<(&str, Echo)> = Vec::new();
    for &(service, names) in SERVICES {
        for name in names {
            backends.push((service, Echo::start(name, ip)));
        }
    }
    println!(
        "3. three backends (weir-echo, answering their names) on the test host {ip}:\n   {}",
        backends
            .iter()
            .map(|(_, echo)| format!("{} at :{}", echo.name, echo.addr.port()))
            .collect::<Vec<_>>()
            .join(", ")
    );

    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({ "metadata": { "name": NS } }))?,
        )
        .await?;
    for &(service, _) in SERVICES {
        let behind: Vec<&Echo> = backends
            .iter()
            .filter(|(s, _)| *s == service)
            .map(|(_, e)| e)
            .collect();
        create_service(&client, service, &behind).await?;
    }
    println!(
        "4. namespace {NS}: Services web-v1 (2 endpoints) and web-v2 (1 endpoint). This control \
         plane has no\n   kube-controller-manager and no Pods, so the demo writes the \
         EndpointSlices itself, one per backend."
    );

    // All namespaces, as in a cluster: with --keep, pools made in other namespaces work too.
    let controller = Controller::start(plane.kubeconfig_path(), &["--token", TOKEN]).await;
    println!(
        "5. weir-controller ready: channel {}, metrics http://{}/metrics",
        controller.url(),
        controller.metrics
    );

    let mut planes = Vec::new();
    for id in ["dp-1", "dp-2"] {
        planes.push(DataPlane::start(id, &controller.url(), &["--token", TOKEN]).await);
    }
    println!("6. two weir-dataplanes following the controller, each with its state:");
    for p in &planes {
        println!(
            "   {}: proxy http://{}, admin http://{}",
            p.id, p.listen, p.admin
        );
    }

    let applied = Instant::now();
    let out = plane
        .kubectl(["apply", "-n", NS, "-f", &repository_path(POOL_FILE)])
        .await?;
    println!("7. kubectl apply -n {NS} -f {POOL_FILE}: {}", out.trim());

    let pools = Api::<LoadBalancerPool>::namespaced(client.clone(), NS);
    let status = match programmed(&pools, planes.len(), backends.len()).await {
        Ok(status) => status,
        Err(e) => {
            let log = controller.log();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            return Err(format!(
                "{e}\nthe end of weir-controller's log:\n{}",
                tail.join("\n")
            )
            .into());
        }
    };
    let targets = status.targets.unwrap_or_default();
    println!(
        "8. pool {POOL} programmed {:.1} s after kubectl apply, says its status: {} of {} targets \
         healthy,\n   synced on {} of {} data planes",
        applied.elapsed().as_secs_f64(),
        targets.healthy,
        targets.total,
        status.data_planes.unwrap_or_default().synced,
        planes.len()
    );

    let tallies =
        futures_util::future::join_all(planes.iter().map(|p| p.tally("/", args.requests))).await;
    let expected = expected_shares(&pools.get(POOL).await?, &backends);
    println!(
        "9. {} requests through each data plane (GET /; each backend names itself in \
         x-backend):\n",
        thousands(args.requests)
    );
    print_split(&backends, &expected, &planes, &tallies);

    let args_get = ["get", "lbp", "-n", NS, "-o", "wide"];
    println!("\n10. kubectl {}\n", args_get.join(" "));
    print_indented(&plane.kubectl(args_get).await?);
    let args_describe = ["describe", "lbp", POOL, "-n", NS];
    println!("\n11. kubectl {}\n", args_describe.join(" "));
    print_indented(&plane.kubectl(args_describe).await?);

    let failures: u64 = tallies.iter().map(|t| t.failures).sum();
    if failures > 0 {
        let first: Vec<&String> = tallies.iter().flat_map(|t| &t.failed).collect();
        return Err(format!("{failures} requests failed; the first: {first:?}").into());
    }
    if !args.keep {
        println!(
            "\nDone in {:.1} s. `scripts/demo --keep` keeps it all running to try it yourself.",
            began.elapsed().as_secs_f64()
        );
        return Ok(());
    }

    let (dp1, dp2) = (&planes[0], &planes[1]);
    println!(
        r#"
Done in {secs:.1} s. Everything keeps running until Ctrl-C. From another terminal, try:

  export KUBECONFIG={kubeconfig}
  # kubectl and helm as built with this control plane (v1.37)
  export PATH={bin}:$PATH
  # the pool's status as it changes (Ctrl-C stops watching)
  kubectl get lbp -n {NS} -o wide -w
  # ten requests through dp-1 (dp-2 is http://{dp2}/)
  for i in $(seq 10); do curl -s http://{dp1}/; done
  # web-v2 as heavy as web-v1: both data planes follow within a second
  kubectl patch lbp {POOL} -n {NS} --type=json \
    -p '[{{"op":"replace","path":"/spec/backends/1/weight","value":90}}]'
  # or edit {POOL_FILE} and apply it again
  kubectl apply -n {NS} -f {POOL_FILE}
  # web-v1-a not ready, as if its Pod failed its readiness probe: it gets no more traffic
  kubectl patch endpointslice web-v1-a -n {NS} --type=json \
    -p '[{{"op":"replace","path":"/endpoints/0/conditions/ready","value":false}}]'
  # what dp-1 runs, as the controller sent it, and its counters per target
  curl -s http://{admin1}/pools
  curl -s http://{admin1}/status
  # the controller's metrics
  curl -s http://{metrics}/metrics | grep ^weir_controller
  # the Helm chart on this control plane (it has no nodes: the objects are created and
  # checked by the API server, the pods stay Pending)
  helm install weir charts/weir -n weir-system --create-namespace
  kubectl get deploy,svc,pdb,networkpolicy,sa,role,rolebinding -n weir-system
  helm uninstall weir -n weir-system
"#,
        secs = began.elapsed().as_secs_f64(),
        kubeconfig = plane.kubeconfig_path().display(),
        bin = binaries::helm()?
            .parent()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        dp1 = dp1.listen,
        dp2 = dp2.listen,
        admin1 = dp1.admin,
        metrics = controller.metrics,
    );
    std::future::pending::<()>().await;
    Ok(())
}

/// Service `name` with port 80 named `http`, and an EndpointSlice `<backend>` for each backend,
/// its endpoint ready.
async fn create_service(client: &Client, name: &str, backends: &[&Echo]) -> Result<()> {
    Api::<Service>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &objects::service(name, 80))
        .await?;
    let slices = Api::<EndpointSlice>::namespaced(client.clone(), NS);
    for backend in backends {
        // One slice per backend: backends listen on ports of their own, and a slice has one
        // port list for all its endpoints.
        let slice = objects::endpoint_slice(
            name,
            &backend.name,
            &[backend.addr.ip()],
            backend.addr.port(),
            true,
        );
        slices.create(&PostParams::default(), &slice).await?;
    }
    Ok(())
}

/// Waits until the pool's status says `Programmed=True` for its current generation, on
/// `planes` data planes, with all `targets` targets healthy.
async fn programmed(
    pools: &Api<LoadBalancerPool>,
    planes: usize,
    targets: usize,
) -> Result<LoadBalancerPoolStatus> {
    let started = Instant::now();
    loop {
        let pool = pools.get_status(POOL).await?;
        let generation = pool.metadata.generation;
        let status = pool.status.unwrap_or_default();
        let is_programmed = status.conditions.iter().any(|c| {
            c.type_ == "Programmed" && c.status == "True" && c.observed_generation == generation
        });
        let synced = status
            .data_planes
            .is_some_and(|d| d.synced as usize == planes && d.connected as usize == planes);
        let healthy = status
            .targets
            .is_some_and(|t| t.total as usize == targets && t.healthy as usize == targets);
        if is_programmed && synced && healthy {
            return Ok(status);
        }
        if started.elapsed() > PROGRAMMED_BOUND {
            let conditions: Vec<String> = status
                .conditions
                .iter()
                .map(|c| format!("{}={} ({}: {})", c.type_, c.status, c.reason, c.message))
                .collect();
            return Err(format!(
                "pool {POOL} not programmed with {targets} healthy targets on {planes} data \
                 planes within {PROGRAMMED_BOUND:?}: targets {:?}, data planes {:?}, \
                 conditions [{}]",
                status.targets,
                status.data_planes,
                conditions.join("; ")
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Each backend's expected share in percent, by the pool as applied: a Service backend's
/// weight is shared evenly among the Service's endpoints (Gateway API semantics).
fn expected_shares(pool: &LoadBalancerPool, backends: &[(&str, Echo)]) -> BTreeMap<String, f64> {
    let total: u32 = pool.spec.backends.iter().map(|b| b.weight).sum();
    let mut shares = BTreeMap::new();
    for backend in &pool.spec.backends {
        let Some(service) = &backend.service else {
            continue;
        };
        let behind: Vec<&Echo> = backends
            .iter()
            .filter(|(s, _)| *s == service.name)
            .map(|(_, e)| e)
            .collect();
        // The demo's Services have the one port, `http` = 80.
        let port_ok = match &service.port {
            IntOrString::Int(p) => *p == 80,
            IntOrString::String(name) => name == "http",
        };
        if total == 0 || behind.is_empty() || !port_ok {
            continue;
        }
        for echo in &behind {
            *shares.entry(echo.name.clone()).or_default() +=
                f64::from(backend.weight) * 100.0 / f64::from(total) / behind.len() as f64;
        }
    }
    shares
}

/// The split as a table: one row per backend, expected share and the share seen through each
/// data plane.
fn print_split(
    backends: &[(&str, Echo)],
    expected: &BTreeMap<String, f64>,
    planes: &[DataPlane],
    tallies: &[Tally],
) {
    let mut header = format!("   {:<10} {:<8} {:>9}", "backend", "Service", "expected");
    for plane in planes {
        header.push_str(&format!(" {:>15}", plane.id));
    }
    println!("{header}");
    for (service, echo) in backends {
        let mut row = format!(
            "   {:<10} {:<8} {:>8.1}%",
            echo.name,
            service,
            expected.get(&echo.name).copied().unwrap_or(0.0)
        );
        for tally in tallies {
            row.push_str(&format!(
                " {:>6} ({:>5.1}%)",
                tally.count(&echo.name),
                tally.share(&echo.name)
            ));
        }
        println!("{row}");
    }
    let mut row = format!("   {:<10} {:<8} {:>9}", "failed", "", "");
    for tally in tallies {
        row.push_str(&format!(" {:>6}{:9}", tally.failures, ""));
    }
    println!("{}", row.trim_end());
    // Anything else that answered (a backend outside the pool, or none) would be a bug: show it.
    for tally in tallies {
        for (name, n) in &tally.by_backend {
            if !backends.iter().any(|(_, e)| &e.name == name) {
                println!("   unexpected backend {name}: {n}");
            }
        }
    }
}

/// A path in the repository, whatever the working directory.
fn repository_path(relative: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative)
        .display()
        .to_string()
}

fn print_indented(text: &str) {
    for line in text.trim_end().lines() {
        println!("   {line}");
    }
}

/// 1000 as "1,000".
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
