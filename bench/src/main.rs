//! `weir-bench`: the end-to-end load benchmark of Weir against HAProxy and NGINX.
//!
//! It starts three `weir-echo` backends (weights 3:2:1), puts each proxy in front of them in
//! turn with the same worker count, drives it with `wrk`, and reports throughput, latency,
//! the proxy's CPU cost per request and its peak memory. The `failover` scenario instead kills
//! and restarts one of three backends under load and reports each proxy's success rate; the
//! `battery` scenario sends malformed and ambiguous requests to each and tabulates what they
//! refuse. Run it through `bench/run`, which installs the peers and builds everything in
//! release mode first.

mod battery;
mod failover;
mod procfs;
mod procs;
mod report;
mod wrk;

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Parser, ValueEnum};
use tokio::process::Command;
use tokio::signal::unix::{SignalKind, signal};
use weir_testkit::TempDir;

use crate::procs::{Backend, Guard};
use crate::report::Run;

/// Command line of `weir-bench`.
#[derive(Debug, Parser)]
#[command(name = "weir-bench", version, about)]
struct Args {
    /// What to measure.
    #[arg(value_enum, default_value_t = Scenario::Throughput)]
    scenario: Scenario,
    /// Proxies to measure, comma separated [default: weir,haproxy,nginx for throughput and
    /// failover, weir for stress].
    #[arg(long, value_enum, value_delimiter = ',')]
    proxies: Option<Vec<Proxy>>,
    /// Worker threads (Weir, HAProxy) or processes (NGINX) of every proxy.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    workers: u16,
    /// Throughput rounds; each round measures every proxy once, in rotating order.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// wrk threads [default: 2 for throughput, 12 for stress].
    #[arg(long)]
    threads: Option<u32>,
    /// wrk connections [default: 64 for throughput, 400 for stress].
    #[arg(long)]
    connections: Option<u32>,
    /// Measured duration of each wrk run, e.g. 10s or 1m [default: 10s for throughput, 30s for
    /// stress, 20s for failover].
    #[arg(long, value_parser = parse_secs)]
    duration: Option<u64>,
    /// Unmeasured wrk run before each measured one, e.g. 2s (0s for none).
    #[arg(long, value_parser = parse_secs, default_value = "2s")]
    warmup: u64,
    /// Tokio worker threads of each weir-echo backend.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    backend_workers: u16,
    /// The peers' launcher [default: ../shared/peers/run-peer beside the workspace].
    #[arg(long)]
    peers_script: Option<PathBuf>,
    /// Where weir-echo and weir-dataplane are [default: beside this binary].
    #[arg(long)]
    bin_dir: Option<PathBuf>,
}

/// A benchmark scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// Weir vs HAProxy vs NGINX, medians over rounds.
    Throughput,
    /// The seed's stress plan (wrk -t12 -c400 -d30s) with pass/fail bars.
    Stress,
    /// One of three backends SIGKILLed at 1/4 of the run and restarted at 1/2; success rates.
    Failover,
    /// Malformed and ambiguous HTTP/1.1 requests: what each proxy refuses or lets through.
    Battery,
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Throughput => "throughput",
            Self::Stress => "stress",
            Self::Failover => "failover",
            Self::Battery => "battery",
        })
    }
}

/// A proxy under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Proxy {
    /// Weir's `weir-dataplane`.
    Weir,
    /// Weir writing its JSON access log to a file (`--access-log`), to measure the log's cost
    /// side by side with Weir without one.
    #[value(name = "weir-log")]
    WeirLog,
    /// HAProxy, via the peers script.
    Haproxy,
    /// NGINX, via the peers script.
    Nginx,
}

impl Proxy {
    fn is_weir(self) -> bool {
        matches!(self, Self::Weir | Self::WeirLog)
    }
}

impl fmt::Display for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Weir => "weir",
            Self::WeirLog => "weir-log",
            Self::Haproxy => "haproxy",
            Self::Nginx => "nginx",
        })
    }
}

/// Weights of the three backends, as in the seed's example pool.
const WEIGHTS: [u32; 3] = [3, 2, 1];
/// How long a proxy or backend may take to become ready.
const READY_LIMIT: Duration = Duration::from_secs(10);
/// How long a stopped proxy gets to exit before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// `10`, `10s`, `2m`: whole seconds, as wrk's `-d` takes them.
fn parse_secs(text: &str) -> Result<u64, String> {
    let (number, scale) = if let Some(n) = text.strip_suffix('s') {
        (n, 1)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60)
    } else {
        (text, 1)
    };
    number
        .parse::<u64>()
        .map(|n| n * scale)
        .map_err(|_| format!("{text:?} is not a duration like 10s or 1m"))
}

/// The settings of one benchmark, with the scenario's defaults filled in.
#[derive(Debug, Clone)]
struct Plan {
    scenario: Scenario,
    proxies: Vec<Proxy>,
    workers: u16,
    rounds: u32,
    threads: u32,
    connections: u32,
    duration_secs: u64,
    warmup_secs: u64,
    backend_workers: u16,
}

impl Plan {
    fn new(args: &Args) -> anyhow::Result<Self> {
        let stress = args.scenario == Scenario::Stress;
        let failover = args.scenario == Scenario::Failover;
        let proxies = args.proxies.clone().unwrap_or_else(|| {
            if stress {
                vec![Proxy::Weir]
            } else {
                vec![Proxy::Weir, Proxy::Haproxy, Proxy::Nginx]
            }
        });
        let mut unique = Vec::new();
        for proxy in proxies {
            if !unique.contains(&proxy) {
                unique.push(proxy);
            }
        }
        let plan = Self {
            scenario: args.scenario,
            proxies: unique,
            workers: args.workers,
            rounds: if args.scenario == Scenario::Throughput {
                args.rounds
            } else {
                1
            },
            threads: args.threads.unwrap_or(if stress { 12 } else { 2 }),
            connections: args.connections.unwrap_or(if stress { 400 } else { 64 }),
            duration_secs: args.duration.unwrap_or(match args.scenario {
                Scenario::Throughput => 10,
                Scenario::Stress => 30,
                Scenario::Failover => 20,
                // Unused: the battery generates no load.
                Scenario::Battery => 1,
            }),
            warmup_secs: args.warmup,
            backend_workers: args.backend_workers,
        };
        if plan.proxies.is_empty() {
            bail!("--proxies names no proxy");
        }
        if plan.threads == 0 || plan.connections < plan.threads {
            bail!("wrk needs at least one thread and at least as many connections as threads");
        }
        if plan.duration_secs == 0 {
            bail!("--duration must be at least 1s");
        }
        if failover && plan.duration_secs < failover::MIN_DURATION_SECS {
            bail!(
                "failover needs --duration of at least {}s: a backend is killed at 1/4 of it and \
                 restarted at 1/2",
                failover::MIN_DURATION_SECS
            );
        }
        Ok(plan)
    }

    /// The command line that runs this exact benchmark again.
    fn command_line(&self) -> String {
        let proxies: Vec<String> = self.proxies.iter().map(Proxy::to_string).collect();
        let scenario = self.scenario;
        if scenario == Scenario::Battery {
            // No load is generated: only the proxies and their worker count matter.
            return format!(
                "bench/run battery --proxies {} --workers {}",
                proxies.join(","),
                self.workers
            );
        }
        let rounds = match self.scenario {
            Scenario::Throughput => format!(" --rounds {}", self.rounds),
            Scenario::Stress | Scenario::Failover | Scenario::Battery => String::new(),
        };
        format!(
            "bench/run {scenario} --proxies {} --workers {}{rounds} --threads {} --connections {} \
             --duration {}s --warmup {}s --backend-workers {}",
            proxies.join(","),
            self.workers,
            self.threads,
            self.connections,
            self.duration_secs,
            self.warmup_secs,
            self.backend_workers,
        )
    }
}

/// Where the binaries and scripts the benchmark starts are.
struct Tools {
    echo: PathBuf,
    dataplane: Option<PathBuf>,
    peers: Option<PathBuf>,
}

impl Tools {
    fn locate(args: &Args, plan: &Plan) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("locating weir-bench")?;
        let bin_dir = match &args.bin_dir {
            Some(dir) => dir.clone(),
            None => exe
                .parent()
                .context("weir-bench has no parent dir")?
                .to_path_buf(),
        };
        let need = |name: &str| -> anyhow::Result<PathBuf> {
            let path = bin_dir.join(name);
            if !path.is_file() {
                bail!(
                    "{} not found; build it with `cargo build --release -p {name}` or use bench/run",
                    path.display()
                );
            }
            // Beside weir-bench, the binaries are this checkout's build products: one older
            // than its sources would measure old code in silence. One named by --bin-dir may
            // come from anywhere.
            if args.bin_dir.is_none() {
                if let Err(problem) = weir_testkit::check_built(&path) {
                    bail!(
                        "{} {problem}; build it with `cargo build --release -p {name}` or use \
                         bench/run",
                        path.display()
                    );
                }
            }
            Ok(path)
        };
        let echo = need("weir-echo")?;
        let dataplane = if plan.proxies.iter().any(|p| p.is_weir()) {
            Some(need("weir-dataplane")?)
        } else {
            None
        };
        let peers = if plan.proxies.iter().any(|p| !p.is_weir()) {
            let script = match &args.peers_script {
                Some(script) => script.clone(),
                None => default_peers_script(&exe)?,
            };
            if !script.is_file() {
                bail!(
                    "peers script {} not found (see --peers-script)",
                    script.display()
                );
            }
            Some(script)
        } else {
            None
        };
        if plan.scenario != Scenario::Battery && which("wrk").is_none() {
            bail!("wrk is not installed; run scripts/install-deps");
        }
        Ok(Self {
            echo,
            dataplane,
            peers,
        })
    }
}

/// `<workspace>/../shared/peers/run-peer`, with the workspace found from the binary's place
/// in `target/<profile>/`, or failing that from where this crate was compiled.
fn default_peers_script(exe: &Path) -> anyhow::Result<PathBuf> {
    let from_exe = exe.ancestors().nth(3).map(Path::to_path_buf);
    let from_build = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf);
    let root = from_exe
        .filter(|root| root.join("bench").is_dir())
        .or(from_build)
        .context("cannot find the workspace root; pass --peers-script")?;
    Ok(root.join("../shared/peers/run-peer"))
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|path| path.is_file())
    })
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("weir-bench: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        let (mut sigint, mut sigterm) = match (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) {
            (Ok(int), Ok(term)) => (int, term),
            (Err(err), _) | (_, Err(err)) => return Err(err.into()),
        };
        // Dropping `run` on a signal drops every Guard in it, which stops every child.
        tokio::select! {
            result = run(&args) => result,
            _ = sigint.recv() => bail!("interrupted; stopped every process started"),
            _ = sigterm.recv() => bail!("terminated; stopped every process started"),
        }
    });
    match outcome {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::from(1),
        Err(err) => {
            eprintln!("weir-bench: {err:#}");
            std::process::ExitCode::from(2)
        }
    }
}

/// Runs the benchmark; `Ok(false)` when a stress bar was missed.
async fn run(args: &Args) -> anyhow::Result<bool> {
    let plan = Plan::new(args)?;
    let tools = Tools::locate(args, &plan)?;
    // Config files and logs, removed at the end (on Ctrl-C too: `run` is dropped).
    let tmp = TempDir::with_prefix("weir-bench.").context("creating a temporary folder")?;

    println!("weir-bench: {}", plan.command_line());
    println!("machine: {} cores; {}", cores(), versions(&plan).await);
    if plan.scenario == Scenario::Failover {
        return failover::run(&plan, &tools, &tmp).await;
    }
    if plan.scenario == Scenario::Battery {
        return battery::run(&plan, &tools, &tmp).await;
    }

    let mut backends = Vec::new();
    for (i, _) in WEIGHTS.iter().enumerate() {
        let name = format!("echo-{}", i + 1);
        let log = tmp.path().join(format!("{name}.log"));
        let any_port = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        let backend =
            procs::start_echo(&tools.echo, &name, any_port, plan.backend_workers, &log).await?;
        backends.push(backend);
    }
    let targets: Vec<(SocketAddr, u32)> = backends.iter().map(|b| b.addr).zip(WEIGHTS).collect();
    println!(
        "backends: {}",
        targets
            .iter()
            .map(|(addr, weight)| format!("{addr} (weight {weight})"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let pools = tmp.path().join("pools.yaml");
    std::fs::write(&pools, pools_yaml(&targets))?;

    let mut runs = Vec::new();
    for round in 0..plan.rounds {
        // Rotating the order spreads slow drifts of the machine over every proxy.
        let mut order = plan.proxies.clone();
        let shift = round as usize % order.len();
        order.rotate_left(shift);
        for proxy in order {
            let run = measure(
                &plan,
                &tools,
                &tmp,
                &pools,
                &targets,
                &mut backends,
                proxy,
                round,
            )
            .await?;
            println!("round {}/{} {}", round + 1, plan.rounds, run.line());
            runs.push(run);
        }
    }

    let ok = match plan.scenario {
        Scenario::Throughput => {
            print_throughput(&plan, &runs);
            true
        }
        Scenario::Stress => print_stress(&plan, &runs),
        Scenario::Failover | Scenario::Battery => unreachable!("returned above"),
    };
    for backend in backends {
        backend.guard.stop(STOP_GRACE).await;
    }
    Ok(ok)
}

/// Starts `proxy`, warms it up, measures one wrk run, and stops it.
#[allow(clippy::too_many_arguments)]
async fn measure(
    plan: &Plan,
    tools: &Tools,
    tmp: &TempDir,
    pools: &Path,
    targets: &[(SocketAddr, u32)],
    backends: &mut [Backend],
    proxy: Proxy,
    round: u32,
) -> anyhow::Result<Run> {
    let log = tmp.path().join(format!("{proxy}-{}.log", round + 1));
    let (mut guard, listen) = start_proxy(plan, tools, pools, targets, proxy, &log).await?;

    let url = format!("http://{listen}/");
    if plan.warmup_secs > 0 {
        run_wrk(plan, &url, plan.warmup_secs).await?;
    }
    let before_split = backend_requests(backends).await?;
    let before = procfs::usage(guard.pid());
    let wrk = run_wrk(plan, &url, plan.duration_secs).await?;
    let after = procfs::usage(guard.pid());
    guard.check_alive()?;
    let after_split = backend_requests(backends).await?;
    for backend in backends.iter_mut() {
        backend.guard.check_alive()?;
    }
    stop_proxy(guard).await;

    Ok(Run {
        proxy: proxy.to_string(),
        wrk,
        cpu_secs: (after.cpu_secs - before.cpu_secs).max(0.0),
        peak_rss_kib: after.peak_rss_kib,
        split: report::served(&before_split, &after_split, None),
    })
}

/// Starts `proxy` in front of `targets` (Weir reads them from `pools`), logging to `log`, and
/// waits until it answers on the address it returns.
async fn start_proxy(
    plan: &Plan,
    tools: &Tools,
    pools: &Path,
    targets: &[(SocketAddr, u32)],
    proxy: Proxy,
    log: &Path,
) -> anyhow::Result<(Guard, SocketAddr)> {
    match proxy {
        Proxy::Weir | Proxy::WeirLog => {
            let any_port = SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).to_string();
            let mut cmd = Command::new(tools.dataplane.as_ref().context("weir-dataplane")?);
            cmd.arg("--pools")
                .arg(pools)
                .args(["--listen", &any_port])
                .args(["--admin", &any_port])
                .args(["--workers", &plan.workers.to_string()]);
            if proxy == Proxy::WeirLog {
                cmd.arg("--access-log")
                    .arg(log.with_extension("access.log"));
            }
            let mut guard = Guard::spawn(&proxy.to_string(), &mut cmd, Some(log))?;
            let (listen, admin) = procs::dataplane_addrs(&mut guard, READY_LIMIT).await?;
            procs::wait_ready(&mut guard, admin, "/ready", READY_LIMIT).await?;
            procs::wait_ready(&mut guard, listen, "/", READY_LIMIT).await?;
            Ok((guard, listen))
        }
        Proxy::Haproxy | Proxy::Nginx => {
            let mut attempt = 1;
            loop {
                let listen = SocketAddr::from((Ipv4Addr::LOCALHOST, procs::peer_port()?));
                let mut cmd = Command::new("bash");
                cmd.arg(tools.peers.as_ref().context("peers script")?)
                    .arg(proxy.to_string())
                    .arg(listen.to_string())
                    .arg(plan.workers.to_string())
                    .args(
                        targets
                            .iter()
                            .map(|(addr, weight)| format!("{addr}={weight}")),
                    );
                let mut guard = Guard::spawn(&proxy.to_string(), &mut cmd, Some(log))?;
                match procs::wait_ready(&mut guard, listen, "/", READY_LIMIT).await {
                    Ok(()) => return Ok((guard, listen)),
                    // See procs::peer_port: someone took the port before the peer bound it.
                    Err(e)
                        if attempt < 3 && format!("{e:#}").contains("Address already in use") =>
                    {
                        attempt += 1;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
    }
}

/// Stops a proxy started by [`start_proxy`] and removes the config directory a peer leaves.
async fn stop_proxy(guard: Guard) {
    let peer_dir = peer_temp_dir(guard.pid());
    guard.stop(STOP_GRACE).await;
    if let Some(dir) = peer_dir {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Runs wrk against `url` for `secs` seconds and parses its report.
async fn run_wrk(plan: &Plan, url: &str, secs: u64) -> anyhow::Result<wrk::WrkReport> {
    let mut cmd = Command::new("wrk");
    cmd.args(["-t", &plan.threads.to_string()])
        .args(["-c", &plan.connections.to_string()])
        .args(["-d", &format!("{secs}s")])
        .arg("--latency")
        .arg(url)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    // wrk stops by itself after `secs`; the margin covers thread start-up and a loaded machine.
    let limit = Duration::from_secs(secs + 30);
    let output = tokio::time::timeout(limit, cmd.output())
        .await
        .with_context(|| format!("wrk did not finish within {limit:?}"))?
        .context("running wrk")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "wrk failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr),
            stdout
        );
    }
    wrk::parse(&stdout)
}

/// The `/tmp/weir-peer.*` directory run-peer wrote the config of process `pid` to.
///
/// run-peer leaves it behind (it execs the peer), so the benchmark removes it after each run
/// rather than leave one directory per run in /tmp.
fn peer_temp_dir(pid: u32) -> Option<PathBuf> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    // nginx rewrites its argv into one title ("nginx: master process nginx -c ..."), so
    // words are split on spaces as well as NULs.
    String::from_utf8_lossy(&cmdline)
        .split(|c: char| c == '\0' || c.is_whitespace())
        .find(|arg| arg.starts_with("/tmp/weir-peer."))
        .and_then(|config| Path::new(config).parent())
        .filter(|dir| dir.parent() == Some(Path::new("/tmp")))
        .map(Path::to_path_buf)
}

/// The request counters of every backend, in target order.
async fn backend_requests(backends: &[Backend]) -> anyhow::Result<Vec<u64>> {
    let mut counts = Vec::with_capacity(backends.len());
    for backend in backends {
        let (status, body) = procs::http_get(backend.addr, "/_stats").await?;
        let stats: serde_json::Value = serde_json::from_str(&body)
            .with_context(|| format!("bad /_stats from {} ({status}): {body:?}", backend.addr))?;
        counts.push(stats["requests"].as_u64().unwrap_or_default());
    }
    Ok(counts)
}

/// The pools file `weir-dataplane --pools` reads.
fn pools_yaml(targets: &[(SocketAddr, u32)]) -> String {
    let mut yaml = String::from(
        "pools:\n  - name: bench\n    routes: [{ host: \"*\", pathPrefix: / }]\n    \
         algorithm: WeightedRoundRobin\n    targets:\n",
    );
    for (addr, weight) in targets {
        yaml.push_str(&format!(
            "      - {{ address: {addr}, weight: {weight} }}\n"
        ));
    }
    yaml
}

fn print_throughput(plan: &Plan, runs: &[Run]) {
    let summaries: Vec<report::Summary> = plan
        .proxies
        .iter()
        .filter_map(|p| report::summarize(&p.to_string(), runs))
        .collect();
    println!();
    println!(
        "medians over {} round(s): wrk -t{} -c{} -d{}s, {} proxy worker(s), backends 3:2:1",
        plan.rounds, plan.threads, plan.connections, plan.duration_secs, plan.workers
    );
    print!("{}", report::table(&summaries));
    let find = |name: &str| summaries.iter().find(|s| s.proxy == name);
    if let Some(weir) = find("weir") {
        for (name, label) in [("haproxy", "Weir/HAProxy"), ("nginx", "Weir/NGINX")] {
            if let Some(other) = find(name) {
                println!("{}", report::ratio_line(weir, other, label));
            }
        }
        println!("(req/s above 1x and latency or CPU below 1x favour Weir)");
    }
    println!("reproduce: {}", plan.command_line());
}

fn print_stress(plan: &Plan, runs: &[Run]) -> bool {
    println!();
    let mut all_seed = true;
    for run in runs {
        let verdict = report::stress_verdict(&run.wrk);
        all_seed &= verdict.seed_pass;
        println!(
            "{}: {} requests, {:.3}% success, p99 {:.3} ms, CPU {:.2} s, peak RSS {:.1} MiB",
            run.proxy,
            run.wrk.requests,
            verdict.success_percent,
            run.wrk.p99_ms,
            run.cpu_secs,
            run.peak_rss_kib as f64 / 1024.0
        );
        println!(
            "  seed's bar (>= 99.9% success, p99 < 200 ms): {}",
            report::pass(verdict.seed_pass)
        );
        println!(
            "  our bar (100% success):                       {}",
            report::pass(verdict.ours_pass)
        );
    }
    println!("reproduce: {}", plan.command_line());
    all_seed
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// One line naming the versions of wrk and of the peers in the plan.
async fn versions(plan: &Plan) -> String {
    let mut found = vec![first_line("wrk", &["-v"]).await];
    if plan.proxies.contains(&Proxy::Haproxy) {
        found.push(first_line("haproxy", &["-v"]).await);
    }
    if plan.proxies.contains(&Proxy::Nginx) {
        found.push(first_line("nginx", &["-v"]).await);
    }
    found.join("; ")
}

async fn first_line(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(Duration::from_secs(5), output).await {
        Ok(Ok(output)) => {
            // wrk and nginx print their version on stderr, and wrk exits 1 doing so.
            let text = [output.stdout, output.stderr].concat();
            let text = String::from_utf8_lossy(&text);
            text.lines()
                .next()
                .map_or_else(|| format!("{program} ?"), |l| l.trim().to_owned())
        }
        _ => format!("{program} ?"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_secs("10"), Ok(10));
        assert_eq!(parse_secs("10s"), Ok(10));
        assert_eq!(parse_secs("2m"), Ok(120));
        assert!(parse_secs("fast").is_err());
    }

    #[test]
    fn scenario_defaults_and_command_line() {
        let args = Args::parse_from(["weir-bench"]);
        let plan = Plan::new(&args).unwrap();
        assert_eq!(plan.proxies, [Proxy::Weir, Proxy::Haproxy, Proxy::Nginx]);
        assert_eq!(
            plan.command_line(),
            "bench/run throughput --proxies weir,haproxy,nginx --workers 1 --rounds 3 \
             --threads 2 --connections 64 --duration 10s --warmup 2s --backend-workers 1"
        );
        // The printed command line must parse back to the same plan.
        let again: Vec<String> = plan
            .command_line()
            .split_whitespace()
            .skip(1)
            .map(str::to_owned)
            .collect();
        let reparsed = Plan::new(&Args::parse_from(
            std::iter::once("weir-bench".to_owned()).chain(again),
        ))
        .unwrap();
        assert_eq!(reparsed.command_line(), plan.command_line());

        let stress = Plan::new(&Args::parse_from(["weir-bench", "stress"])).unwrap();
        assert_eq!(stress.proxies, [Proxy::Weir]);
        assert_eq!(
            (stress.threads, stress.connections, stress.duration_secs),
            (12, 400, 30)
        );

        let peers = Plan::new(&Args::parse_from([
            "weir-bench",
            "--proxies",
            "haproxy,nginx,haproxy",
            "--duration",
            "3s",
        ]))
        .unwrap();
        assert_eq!(peers.proxies, [Proxy::Haproxy, Proxy::Nginx]);

        let failover = Plan::new(&Args::parse_from(["weir-bench", "failover"])).unwrap();
        assert_eq!(
            failover.command_line(),
            "bench/run failover --proxies weir,haproxy,nginx --workers 1 --threads 2 \
             --connections 64 --duration 20s --warmup 2s --backend-workers 1"
        );
        assert_eq!(failover.rounds, 1);
        let short = Args::parse_from(["weir-bench", "failover", "--duration", "3s"]);
        assert!(Plan::new(&short).is_err());
        assert_eq!(peers.duration_secs, 3);
        assert!(Plan::new(&Args::parse_from(["weir-bench", "--connections", "1"])).is_err());

        let battery = Plan::new(&Args::parse_from(["weir-bench", "battery"])).unwrap();
        assert_eq!(battery.proxies, [Proxy::Weir, Proxy::Haproxy, Proxy::Nginx]);
        assert_eq!(
            battery.command_line(),
            "bench/run battery --proxies weir,haproxy,nginx --workers 1"
        );
    }

    #[test]
    fn pools_file_lists_targets_with_weights() {
        let yaml = pools_yaml(&[
            ("127.0.0.1:19001".parse().unwrap(), 3),
            ("127.0.0.1:19002".parse().unwrap(), 2),
        ]);
        assert_eq!(
            yaml,
            "pools:\n  - name: bench\n    routes: [{ host: \"*\", pathPrefix: / }]\n    \
             algorithm: WeightedRoundRobin\n    targets:\n      \
             - { address: 127.0.0.1:19001, weight: 3 }\n      \
             - { address: 127.0.0.1:19002, weight: 2 }\n"
        );
    }
}
