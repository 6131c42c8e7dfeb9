//! Convergence benchmark (issue 5): the time from an EndpointSlice change to every data plane
//! applying it, and the controller's memory with many pools of many endpoints.
//!
//! Against the shared real control plane (kube-apiserver and etcd, with Weir's CRDs), for each
//! pool count N it starts a `weir-controller` watching a namespace of its own and two
//! `weir-dataplane`s following it, creates N Services, each with one EndpointSlice and one
//! `LoadBalancerPool` naming it, and waits until both data planes serve all N pools. Then it
//! makes C changes, one at a time: each moves the first endpoint of one pool's slice to an
//! address never used before. A change's convergence time runs from the moment the API write
//! returns to the moment the last of the two data planes lists the new address in its admin
//! `GET /pools/{pool}` (the changed pool alone), polled every 2 ms (so the figure includes up
//! to one poll interval and one answer's serialization).
//!
//! Last, the memory run: M pools of E endpoints each (1,000 × 100 by default), the same wait,
//! a few changes, and the controller's VmRSS and VmHWM from `/proc/PID/status`.
//!
//! Endpoint addresses are in 198.18.0.0/15 and need not listen: health checks are off by
//! default, so targets are never dialled. Everything else is on loopback.
//!
//! ```sh
//! cargo build --release -p weir-controller -p weir-dataplane
//! cargo run --release -p weir-e2e --example convergence -- --pools 1,100,1000 --changes 50
//! ```
//!
//! Flags: `--pools N,N,..` (default 1,100,1000), `--changes C` (50), `--memory-pools M`
//! (1000; 0 skips the memory run), `--memory-endpoints E` (100), `--memory-changes C` (10).

use std::net::IpAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use futures_util::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use weir_crds::LoadBalancerPool;
use weir_e2e::weir::{Controller, DataPlane, Http};
use weir_e2e::{ControlPlane, objects};

type Result<T, E = Box<dyn std::error::Error + Send + Sync>> = std::result::Result<T, E>;

const TOKEN: &str = "weir-bench-token";
/// The port every endpoint names.
const PORT: u16 = 8080;
/// How many API writes are in flight while filling a namespace.
const CONCURRENCY: usize = 32;
/// How often each data plane's `/pools` is polled while a change is awaited.
const POLL: Duration = Duration::from_millis(2);
/// Longest one change may take to reach every data plane.
const CHANGE_BOUND: Duration = Duration::from_secs(10);
/// Longest the data planes may take to serve a freshly filled namespace.
const SETUP_BOUND: Duration = Duration::from_secs(600);
/// Pause between two changes.
const GAP: Duration = Duration::from_millis(20);

struct Args {
    pools: Vec<usize>,
    changes: usize,
    memory_pools: usize,
    memory_endpoints: usize,
    memory_changes: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        pools: vec![1, 100, 1000],
        changes: 50,
        memory_pools: 1000,
        memory_endpoints: 100,
        memory_changes: 10,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = |v: &str| {
            v.trim()
                .parse::<usize>()
                .map_err(|e| format!("{flag} {v:?}: {e}"))
        };
        match flag.as_str() {
            "--pools" => {
                args.pools = value.split(',').map(number).collect::<Result<_, _>>()?;
            }
            "--changes" => args.changes = number(&value)?,
            "--memory-pools" => args.memory_pools = number(&value)?,
            "--memory-endpoints" => args.memory_endpoints = number(&value)?,
            "--memory-changes" => args.memory_changes = number(&value)?,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if args.pools.contains(&0) || args.memory_endpoints == 0 || args.memory_endpoints > 250 {
        return Err("pool counts must be at least 1, endpoints 1 to 250".into());
    }
    Ok(args)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("convergence: {e}");
            return ExitCode::from(2);
        }
    };
    match run(&args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("convergence: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: &Args) -> Result<()> {
    let reproduce = format!(
        "cargo build --release -p weir-controller -p weir-dataplane && \
         cargo run --release -p weir-e2e --example convergence -- --pools {} --changes {} \
         --memory-pools {} --memory-endpoints {} --memory-changes {}",
        args.pools
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(","),
        args.changes,
        args.memory_pools,
        args.memory_endpoints,
        args.memory_changes
    );
    println!("reproduce: {reproduce}");
    let started = Instant::now();
    let plane = ControlPlane::shared_with_crds().await?;
    println!(
        "control plane with CRDs ready in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let mut rows = Vec::new();
    for &n in &args.pools {
        let run = Run::new(plane, &format!("conv-{n}"), n, 1).await?;
        let figures = run.changes(args.changes).await?;
        println!(
            "N={n} pools x 1 endpoint: {} (controller {})",
            figures.line(),
            run.memory()
        );
        rows.push((format!("{n} x 1"), figures, run.memory()));
    }
    if args.memory_pools > 0 {
        let (m, e) = (args.memory_pools, args.memory_endpoints);
        let run = Run::new(plane, &format!("mem-{m}x{e}"), m, e).await?;
        let memory = run.memory();
        println!("memory: controller after {m} pools x {e} endpoints programmed: {memory}");
        for (i, plane) in run.planes.iter().enumerate() {
            println!(
                "memory: data plane {} {}",
                i + 1,
                proc_memory(plane.pid()).unwrap_or_else(|e| e.to_string())
            );
        }
        let figures = run.changes(args.memory_changes).await?;
        println!("N={m} pools x {e} endpoints: {}", figures.line());
        rows.push((format!("{m} x {e}"), figures, run.memory()));
    }

    println!(
        "\nsummary (convergence = API write returned -> both data planes list the change in /pools/{{pool}}, polled every {} ms)",
        POLL.as_millis()
    );
    println!(
        "{:>12} {:>8} {:>10} {:>10} {:>10} {:>10}  controller memory",
        "pools x eps", "changes", "p50 ms", "p99 ms", "max ms", "write p50"
    );
    for (label, f, memory) in &rows {
        println!(
            "{label:>12} {:>8} {:>10.1} {:>10.1} {:>10.1} {:>10.1}  {memory}",
            f.converged.len(),
            ms(percentile(&f.converged, 50.0)),
            ms(percentile(&f.converged, 99.0)),
            ms(f.converged.iter().max().copied()),
            ms(percentile(&f.writes, 50.0)),
        );
    }
    println!("reproduce: {reproduce}");
    Ok(())
}

/// A namespace filled with `pools` pools of `endpoints` endpoints, with its controller and
/// two data planes, all serving.
struct Run {
    client: Client,
    ns: String,
    pools: usize,
    endpoints: usize,
    controller: Controller,
    planes: Vec<DataPlane>,
    http: Vec<Http>,
}

/// What a series of changes measured.
struct Figures {
    /// Per converged change: API write returned -> last data plane serving it.
    converged: Vec<Duration>,
    /// Per change: how long the API write took.
    writes: Vec<Duration>,
    /// Changes that did not converge within [`CHANGE_BOUND`].
    timeouts: usize,
}

impl Figures {
    fn line(&self) -> String {
        format!(
            "{} changes, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms, min {:.1} ms \
             (API write p50 {:.1} ms), {} not converged within {:?}",
            self.converged.len(),
            ms(percentile(&self.converged, 50.0)),
            ms(percentile(&self.converged, 99.0)),
            ms(self.converged.iter().max().copied()),
            ms(self.converged.iter().min().copied()),
            ms(percentile(&self.writes, 50.0)),
            self.timeouts,
            CHANGE_BOUND
        )
    }
}

impl Run {
    async fn new(
        plane: &'static ControlPlane,
        prefix: &str,
        pools: usize,
        endpoints: usize,
    ) -> Result<Self> {
        let ns = plane.namespace(prefix).await?;
        let client = plane.client();
        let controller = Controller::start(
            plane.kubeconfig_path(),
            &["--namespace", &ns, "--token", TOKEN],
        )
        .await;
        let mut planes = Vec::new();
        for i in 1..=2 {
            planes.push(
                DataPlane::start(
                    &format!("{ns}-dp-{i}"),
                    &controller.url(),
                    &["--token", TOKEN],
                )
                .await,
            );
        }
        let http = planes.iter().map(|_| Http::new()).collect();
        let run = Self {
            client,
            ns,
            pools,
            endpoints,
            controller,
            planes,
            http,
        };

        let started = Instant::now();
        futures_util::stream::iter(0..pools)
            .map(|i| run.create_pool(i))
            .buffer_unordered(CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await?;
        let created = started.elapsed();
        run.wait_programmed().await?;
        println!(
            "{}: {pools} pools x {endpoints} endpoints created in {:.1} s, served by both data \
             planes {:.1} s after the first write",
            run.ns,
            created.as_secs_f64(),
            started.elapsed().as_secs_f64()
        );
        Ok(run)
    }

    /// Service `p<i>`, its EndpointSlice and pool `p<i>` routed from host `p<i>.bench.test`.
    async fn create_pool(&self, i: usize) -> Result<()> {
        let name = format!("p{i}");
        Api::<Service>::namespaced(self.client.clone(), &self.ns)
            .create(&PostParams::default(), &objects::service(&name, 80))
            .await?;
        let addresses: Vec<IpAddr> = (0..self.endpoints).map(initial_address).collect();
        let slice = objects::endpoint_slice(&name, &name, &addresses, PORT, true);
        Api::<EndpointSlice>::namespaced(self.client.clone(), &self.ns)
            .create(&PostParams::default(), &slice)
            .await?;
        let pool: LoadBalancerPool = serde_json::from_value(json!({
            "apiVersion": "weir.dev/v1alpha1",
            "kind": "LoadBalancerPool",
            "metadata": { "name": name },
            "spec": {
                "routes": [{ "host": format!("{name}.bench.test"), "pathPrefix": "/" }],
                "backends": [{ "service": { "name": name, "port": 80 } }],
            },
        }))?;
        Api::<LoadBalancerPool>::namespaced(self.client.clone(), &self.ns)
            .create(&PostParams::default(), &pool)
            .await?;
        Ok(())
    }

    /// Waits until each data plane serves every pool of the namespace with all its targets.
    async fn wait_programmed(&self) -> Result<()> {
        let want = (self.pools, self.pools * self.endpoints);
        let started = Instant::now();
        for (plane, http) in self.planes.iter().zip(&self.http) {
            loop {
                let seen = match http.get(&format!("http://{}/pools", plane.admin)).await {
                    Ok(reply) => count(&reply.body, &self.ns),
                    Err(e) => {
                        eprintln!("{}: /pools: {e}", plane.id);
                        (0, 0)
                    }
                };
                if seen == want {
                    break;
                }
                if started.elapsed() > SETUP_BOUND {
                    return Err(format!(
                        "{}: {} pools and {} targets after {SETUP_BOUND:?}, want {want:?}",
                        plane.id, seen.0, seen.1
                    )
                    .into());
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
        Ok(())
    }

    /// `changes` changes one after the other, each awaited on every data plane.
    async fn changes(&self, changes: usize) -> Result<Figures> {
        let slices = Api::<EndpointSlice>::namespaced(self.client.clone(), &self.ns);
        let mut figures = Figures {
            converged: Vec::new(),
            writes: Vec::new(),
            timeouts: 0,
        };
        for k in 0..changes {
            // Spread the changes over the pools.
            let pool = (k * 7919) % self.pools;
            let new = change_address(k);
            let mut addresses: Vec<IpAddr> = (0..self.endpoints).map(initial_address).collect();
            addresses[0] = new;
            let patch = json!({ "endpoints": objects::endpoints(&addresses, true) });
            let needle = format!("\"{new}:{PORT}\"");
            let pool_name = format!("{}/p{pool}", self.ns);

            let write = Instant::now();
            slices
                .patch(
                    &format!("p{pool}"),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await?;
            let returned = Instant::now();
            figures.writes.push(returned - write);

            let waits = self
                .planes
                .iter()
                .zip(&self.http)
                .map(|(plane, http)| serving(http, plane, &pool_name, &needle, returned));
            let results = futures_util::future::join_all(waits).await;
            if results.iter().all(Option::is_some) {
                figures
                    .converged
                    .push(results.into_iter().flatten().max().unwrap_or_default());
            } else {
                figures.timeouts += 1;
                eprintln!(
                    "{}: change {k} (pool p{pool} -> {new}) not on every data plane within \
                     {CHANGE_BOUND:?}: {results:?}",
                    self.ns
                );
            }
            tokio::time::sleep(GAP).await;
        }
        Ok(figures)
    }

    /// The controller's VmRSS and VmHWM.
    fn memory(&self) -> String {
        match self.controller.pid() {
            Some(pid) => proc_memory(pid).unwrap_or_else(|e| e.to_string()),
            None => "(not running)".to_owned(),
        }
    }
}

/// When `plane` first lists `needle` in pool `pool` (`GET /pools/{pool}`), counted from
/// `since`; `None` after [`CHANGE_BOUND`].
async fn serving(
    http: &Http,
    plane: &DataPlane,
    pool: &str,
    needle: &str,
    since: Instant,
) -> Option<Duration> {
    let url = format!("http://{}/pools/{pool}", plane.admin);
    loop {
        if let Ok(reply) = http.get(&url).await
            && reply.body.contains(needle)
        {
            return Some(since.elapsed());
        }
        if since.elapsed() > CHANGE_BOUND {
            return None;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Pools of namespace `ns` in a `/pools` answer, and their targets.
fn count(body: &str, ns: &str) -> (usize, usize) {
    let Ok(file) = serde_json::from_str::<Value>(body) else {
        return (0, 0);
    };
    let prefix = format!("{ns}/");
    let pools: Vec<&Value> = file["pools"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|p| p["name"].as_str().is_some_and(|n| n.starts_with(&prefix)))
                .collect()
        })
        .unwrap_or_default();
    let targets = pools
        .iter()
        .map(|p| p["targets"].as_array().map_or(0, Vec::len))
        .sum();
    (pools.len(), targets)
}

/// The `j`th endpoint's address in every slice: 198.18.1.1, 198.18.1.2, ...
fn initial_address(j: usize) -> IpAddr {
    IpAddr::from([198, 18, 1 + (j / 250) as u8, 1 + (j % 250) as u8])
}

/// The address change `k` moves an endpoint to, used by no other endpoint: 198.18.100.1, ...
fn change_address(k: usize) -> IpAddr {
    IpAddr::from([198, 18, 100 + (k / 250) as u8, 1 + (k % 250) as u8])
}

/// VmRSS and VmHWM of process `pid`.
fn proc_memory(pid: u32) -> Result<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_owned())
            .unwrap_or_else(|| "?".to_owned())
    };
    let kib = |v: &str| {
        v.trim_end_matches(" kB")
            .parse::<f64>()
            .map(|k| format!("{:.1} MiB", k / 1024.0))
            .unwrap_or_else(|_| v.to_owned())
    };
    Ok(format!(
        "VmRSS {} VmHWM {} (pid {pid})",
        kib(&field("VmRSS:")),
        kib(&field("VmHWM:"))
    ))
}

/// The nearest-rank `p`th percentile.
fn percentile(sorted_or_not: &[Duration], p: f64) -> Option<Duration> {
    if sorted_or_not.is_empty() {
        return None;
    }
    let mut v = sorted_or_not.to_vec();
    v.sort();
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    Some(v[rank.clamp(1, v.len()) - 1])
}

fn ms(d: Option<Duration>) -> f64 {
    d.map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
}
