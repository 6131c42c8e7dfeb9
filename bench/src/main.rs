//! `weir-bench`: the end-to-end load benchmark of Weir against HAProxy and NGINX.
//!
//! It starts three `weir-echo` backends (weights 3:2:1), puts each proxy in front of them in
//! turn with the same worker count, drives it with `wrk`, and reports throughput, latency,
//! the proxy's CPU cost per request and its peak memory. The `failover` scenario instead kills
//! and restarts one of three backends under load and reports each proxy's success rate; the
//! `battery` scenario sends malformed and ambiguous requests to each and tabulates what they
//! refuse; the `h2` scenario drives each with h2load over clear-text HTTP/2. Run it through `bench/run`, which installs the peers and builds everything in
//! release mode first.
//!
//! Start with [`plan`] (the command line and each scenario's defaults), then the scenario
//! modules: [`throughput`] (throughput and stress), [`h2`], [`failover`] and [`battery`]; [`proxies`]
//! starts the proxies under test, [`procs`] every child process.

mod battery;
mod conns;
mod failover;
mod h2;
mod h2load;
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
use crate::tools::Tools;

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
    match plan.scenario {
        Scenario::Throughput | Scenario::Stress => throughput::run(&plan, &tools, &tmp).await,
        Scenario::Failover => failover::run(&plan, &tools, &tmp).await,
        Scenario::Battery => battery::run(&plan, &tools, &tmp).await,
        Scenario::H2 => h2::run(&plan, &tools, &tmp).await,
        Scenario::Conns => conns::run(&plan, &tools, &tmp).await,
    }
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// One line naming the versions of wrk and of the peers in the plan.
async fn versions(plan: &Plan) -> String {
    let mut found = vec![if plan.scenario == Scenario::H2 {
        first_line("h2load", &["--version"]).await
    } else {
        first_line("wrk", &["-v"]).await
    }];
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
