//! The throughput and stress scenarios: three backends weighted 3:2:1, each proxy in front of
//! them in turn, measured with wrk (rounds in rotating order for throughput), and the report.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use weir_testkit::TempDir;

use crate::plan::{Plan, Proxy, Scenario};
use crate::procfs;
use crate::procs::{self, Backend};
use crate::procs::{STOP_GRACE, backend_requests};
use crate::proxies::{pools_yaml, start_proxy, stop_proxy};
use crate::report::{self, Run};
use crate::tools::Tools;
use crate::wrk;

/// Weights of the three backends, as in the seed's example pool.
const WEIGHTS: [u32; 3] = [3, 2, 1];

/// Runs the throughput or stress scenario; `Ok(false)` when a stress bar was missed.
pub async fn run(plan: &Plan, tools: &Tools, tmp: &TempDir) -> anyhow::Result<bool> {
    let (mut backends, targets, pools) = start_backends(plan, tools, tmp).await?;

    let mut runs = Vec::new();
    for round in 0..plan.rounds {
        for proxy in plan.round_order(round) {
            let run = measure(
                plan,
                tools,
                tmp,
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
            print_throughput(plan, &runs);
            true
        }
        Scenario::Stress => print_stress(plan, &runs),
        Scenario::Failover | Scenario::Battery | Scenario::H2 | Scenario::Conns => {
            unreachable!("main::run sends the other scenarios elsewhere")
        }
    };
    for backend in backends {
        backend.guard.stop(STOP_GRACE).await;
    }
    Ok(ok)
}

/// Starts the three backends (weights 3:2:1) and writes the pools file Weir reads them from.
pub async fn start_backends(
    plan: &Plan,
    tools: &Tools,
    tmp: &TempDir,
) -> anyhow::Result<(Vec<Backend>, Vec<(SocketAddr, u32)>, PathBuf)> {
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
    Ok((backends, targets, pools))
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
        wrk::run(plan, &url, plan.warmup_secs).await?;
    }
    let before_split = backend_requests(backends).await?;
    let before = procfs::usage(guard.pid());
    let wrk = wrk::run(plan, &url, plan.duration_secs).await?;
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
