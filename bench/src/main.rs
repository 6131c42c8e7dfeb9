//! `weir-bench`: the end-to-end load benchmark of Weir against HAProxy and NGINX.
//!
//! It starts three `weir-echo` backends (weights 3:2:1), puts each proxy in front of them in
//! turn with the same worker count, drives it with `wrk`, and reports throughput, latency,
//! the proxy's CPU cost per request and its peak memory. The `failover` scenario instead kills
//! and restarts one of three backends under load and reports each proxy's success rate; the
//! `battery` scenario sends malformed and ambiguous requests to each and tabulates what they
//! refuse. Run it through `bench/run`, which installs the peers and builds everything in
//! release mode first.

//!
//! Start with [`plan`] (the command line and each scenario's defaults), then the scenario
//! modules: [`throughput`] (throughput and stress), [`failover`] and [`battery`]; [`proxies`]
//! starts the proxies under test, [`procs`] every child process.

mod battery;
mod failover;
mod plan;
mod procfs;
mod procs;
mod proxies;
mod report;
mod throughput;
mod tools;
mod wrk;

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Parser as _;
use tokio::process::Command;
use tokio::signal::unix::{SignalKind, signal};
use weir_testkit::TempDir;

use crate::plan::{Args, Plan, Proxy, Scenario};
use crate::procs::Backend;
use crate::tools::Tools;

/// How long a proxy or backend may take to become ready.
const READY_LIMIT: Duration = Duration::from_secs(10);
/// How long a stopped proxy gets to exit before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

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
    match plan.scenario {
        Scenario::Throughput | Scenario::Stress => throughput::run(&plan, &tools, &tmp).await,
        Scenario::Failover => failover::run(&plan, &tools, &tmp).await,
        Scenario::Battery => battery::run(&plan, &tools, &tmp).await,
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
