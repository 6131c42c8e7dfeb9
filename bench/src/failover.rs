//! The `failover` scenario: the same load through each proxy while one of three backends is
//! SIGKILLed at 1/4 of the run and restarted on the same address at 1/2, to compare how many
//! requests each proxy loses and whether the backend gets traffic again once it is back.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use tokio::time::Instant;

use crate::procs::{self, Backend};
use crate::report::{self, FailoverRun};
use crate::{Plan, Proxy, STOP_GRACE, TempDir, Tools, backend_requests, run_wrk};

/// Shortest run that leaves a second before the kill and a second between kill and restart.
pub const MIN_DURATION_SECS: u64 = 4;
/// Weights of the three backends: equal, so each serves a third while all are up.
const WEIGHTS: [u32; 3] = [1, 1, 1];
/// Index of the backend that is killed and restarted.
const KILLED: usize = 1;
/// How long a restart may keep failing (say, the port is briefly taken) before giving up.
const RESTART_LIMIT: Duration = Duration::from_secs(2);
/// What the peers' fixed configs do when a backend dies, printed under the table.
const PEER_NOTE: &str = "note: peers run run-peer's fixed configs unchanged: HAProxy has no \
     health checks and no redispatch (a request sent to the dead backend is retried on that same \
     backend, then fails); NGINX has max_fails=0 (never marks it down) but passes a failed \
     connect to the next backend (default proxy_next_upstream); Weir uses the health checks, \
     outlier ejection and retries of its pools file.";

/// When, from the start of a run of `duration_secs`, the backend is killed and restarted.
pub fn schedule(duration_secs: u64) -> (Duration, Duration) {
    let run = Duration::from_secs(duration_secs);
    (run / 4, run / 2)
}

/// The pools file `weir-dataplane --pools` reads for this scenario: Weir's resilience
/// features on.
pub fn pools_yaml(targets: &[(SocketAddr, u32)]) -> String {
    let mut yaml = String::from(
        "pools:\n  - name: bench\n    routes: [{ host: \"*\", pathPrefix: / }]\n    \
         healthCheck: { path: /health, interval: 1s, timeout: 500ms, healthyThreshold: 1, \
         unhealthyThreshold: 2 }\n    \
         outlierDetection: { consecutiveGatewayFailures: 3, baseEjectionTime: 10s }\n    \
         retries: { attempts: 3, retryOn: [connect-failure, reset, 502, 503, 504] }\n    \
         timeouts: { connect: 500ms, perTry: 2s, request: 10s }\n    targets:\n",
    );
    for (addr, weight) in targets {
        yaml.push_str(&format!(
            "      - {{ address: {addr}, weight: {weight} }}\n"
        ));
    }
    yaml
}

/// Runs the scenario through every proxy of the plan in turn and prints the table.
pub async fn run(plan: &Plan, tools: &Tools, tmp: &TempDir) -> anyhow::Result<bool> {
    let names: Vec<String> = (1..=WEIGHTS.len()).map(|i| format!("echo-{i}")).collect();
    let (kill_at, restart_at) = schedule(plan.duration_secs);
    println!(
        "failover: per proxy, 3 fresh backends (weights 1:1:1); {} is SIGKILLed at {:.1} s and \
         restarted on the same address at {:.1} s of the {} s run",
        names[KILLED],
        kill_at.as_secs_f64(),
        restart_at.as_secs_f64(),
        plan.duration_secs
    );

    let mut runs = Vec::new();
    for &proxy in &plan.proxies {
        let run = once(plan, tools, tmp, proxy, &names).await?;
        println!("{}", run.line(&names));
        runs.push(run);
    }

    println!();
    println!(
        "failover: wrk -t{} -c{} -d{}s, {} proxy worker(s), backends 1:1:1, {} killed at {:.1} s \
         and restarted at {:.1} s",
        plan.threads,
        plan.connections,
        plan.duration_secs,
        plan.workers,
        names[KILLED],
        kill_at.as_secs_f64(),
        restart_at.as_secs_f64()
    );
    print!("{}", report::failover_table(&runs, &names[KILLED]));
    println!("{PEER_NOTE}");
    println!("reproduce: {}", plan.command_line());
    Ok(true)
}

/// One proxy's run: fresh backends, the proxy, warm-up, then the load while a backend dies
/// and comes back.
async fn once(
    plan: &Plan,
    tools: &Tools,
    tmp: &TempDir,
    proxy: Proxy,
    names: &[String],
) -> anyhow::Result<FailoverRun> {
    let any_port = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let mut backends = Vec::new();
    for name in names {
        let log = tmp.0.join(format!("failover-{proxy}-{name}.log"));
        backends.push(
            procs::start_echo(&tools.echo, name, any_port, plan.backend_workers, &log).await?,
        );
    }
    let targets: Vec<(SocketAddr, u32)> = backends.iter().map(|b| b.addr).zip(WEIGHTS).collect();
    let pools = tmp.0.join(format!("failover-{proxy}-pools.yaml"));
    std::fs::write(&pools, pools_yaml(&targets))?;
    let log = tmp.0.join(format!("failover-{proxy}.log"));
    let (mut guard, listen) =
        crate::start_proxy(plan, tools, &pools, &targets, proxy, &log).await?;

    let url = format!("http://{listen}/");
    if plan.warmup_secs > 0 {
        run_wrk(plan, &url, plan.warmup_secs).await?;
    }
    let before = backend_requests(&backends).await?;

    let victim = backends.remove(KILLED);
    let victim_log = tmp
        .0
        .join(format!("failover-{proxy}-{}.log", names[KILLED]));
    let (kill_at, restart_at) = schedule(plan.duration_secs);
    let start = Instant::now();
    let chaos = async {
        tokio::time::sleep_until(start + kill_at).await;
        let addr = victim.addr;
        victim.guard.kill().await;
        let killed_at = start.elapsed();
        tokio::time::sleep_until(start + restart_at).await;
        let back = restart_echo(
            &tools.echo,
            &names[KILLED],
            addr,
            plan.backend_workers,
            &victim_log,
        )
        .await?;
        anyhow::Ok((back, killed_at, start.elapsed()))
    };
    let (wrk, (back, killed_at, restarted_at)) =
        tokio::try_join!(run_wrk(plan, &url, plan.duration_secs), chaos)?;
    guard.check_alive()?;
    backends.insert(KILLED, back);
    let after = backend_requests(&backends).await?;
    for backend in &mut backends {
        backend.guard.check_alive()?;
    }
    crate::stop_proxy(guard).await;
    for backend in backends {
        backend.guard.stop(STOP_GRACE).await;
    }

    Ok(FailoverRun {
        proxy: proxy.to_string(),
        wrk,
        killed_at_secs: killed_at.as_secs_f64(),
        restarted_at_secs: restarted_at.as_secs_f64(),
        served: report::served(&before, &after, Some(KILLED)),
        killed: KILLED,
    })
}

/// Starts `weir-echo` again on the address it had, retrying briefly in case the port is not
/// free yet.
async fn restart_echo(
    exe: &Path,
    name: &str,
    addr: SocketAddr,
    workers: u16,
    log: &Path,
) -> anyhow::Result<Backend> {
    let deadline = Instant::now() + RESTART_LIMIT;
    loop {
        match procs::start_echo(exe, name, addr, workers, log).await {
            Ok(backend) => return Ok(backend),
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(err) => return Err(err.context(format!("restarting {name} on {addr}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kill_at_a_quarter_restart_at_half() {
        assert_eq!(
            schedule(20),
            (Duration::from_secs(5), Duration::from_secs(10))
        );
        assert_eq!(
            schedule(MIN_DURATION_SECS),
            (Duration::from_secs(1), Duration::from_secs(2))
        );
        assert_eq!(
            schedule(6),
            (Duration::from_millis(1500), Duration::from_secs(3))
        );
    }

    #[test]
    fn pools_file_turns_resilience_on() {
        let yaml = pools_yaml(&[
            ("127.0.0.1:19001".parse().unwrap(), 1),
            ("127.0.0.1:19002".parse().unwrap(), 1),
        ]);
        assert_eq!(
            yaml,
            "pools:\n  - name: bench\n    routes: [{ host: \"*\", pathPrefix: / }]\n    \
             healthCheck: { path: /health, interval: 1s, timeout: 500ms, healthyThreshold: 1, \
             unhealthyThreshold: 2 }\n    \
             outlierDetection: { consecutiveGatewayFailures: 3, baseEjectionTime: 10s }\n    \
             retries: { attempts: 3, retryOn: [connect-failure, reset, 502, 503, 504] }\n    \
             timeouts: { connect: 500ms, perTry: 2s, request: 10s }\n    targets:\n      \
             - { address: 127.0.0.1:19001, weight: 1 }\n      \
             - { address: 127.0.0.1:19002, weight: 1 }\n"
        );
    }
}
