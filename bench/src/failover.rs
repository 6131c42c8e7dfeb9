//! The `failover` scenario: the same load through each proxy while one of three backends is
//! SIGKILLed at 1/4 of the run and restarted on the same address at 1/2, to compare how many
//! requests each proxy loses and whether the backend gets traffic again once it is back. Every
//! proxy runs its defaults, Weir too: a pools file with targets and nothing else.
//!
//! Then, for Weir alone, the other side of retries: a retry storm. Every backend answers 503
//! and the pool retries 503 three times; the retry budget must keep the backends' load close
//! to the clients' (at most its 20% plus its floor), where unbudgeted retries would triple it.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use tokio::time::Instant;

use crate::procs::{self, Backend};
use crate::report::{self, FailoverRun};
use weir_testkit::TempDir;

use crate::plan::{Plan, Proxy};
use crate::procs::{STOP_GRACE, backend_requests};
use crate::tools::Tools;
use crate::wrk;

/// Weights of the three backends: equal, so each serves a third while all are up.
const WEIGHTS: [u32; 3] = [1, 1, 1];
/// Index of the backend that is killed and restarted.
const KILLED: usize = 1;
/// How long a restart may keep failing (say, the port is briefly taken) before giving up.
const RESTART_LIMIT: Duration = Duration::from_secs(2);
/// What the peers' fixed configs do when a backend dies, printed under the table.
const PEER_NOTE: &str = "note: every proxy runs its defaults. Peers run run-peer's fixed \
     configs unchanged: HAProxy has no health checks and no redispatch (a request sent to the dead \
     backend is retried on that same backend, then fails); NGINX has max_fails=0 (never marks it \
     down) but passes a failed connect or a reset to the next backend (default \
     proxy_next_upstream error timeout); Weir's pools file names the targets and nothing else: \
     no health checks, no outlier detection; its default retries (connect-failure and reset, for \
     idempotent requests, within a budget of 20% of 10 s of requests plus 10 a second) and \
     per-target breakers (5 consecutive failures, 30 s) do the work.";
/// How long the retry-storm phase loads Weir.
const STORM_SECS: u64 = 3;

/// When, from the start of a run of `duration_secs`, the backend is killed and restarted.
pub fn schedule(duration_secs: u64) -> (Duration, Duration) {
    let run = Duration::from_secs(duration_secs);
    (run / 4, run / 2)
}

/// The pools file `weir-dataplane --pools` reads for this scenario: the targets, and Weir's
/// defaults for everything else.
pub fn pools_yaml(targets: &[(SocketAddr, u32)]) -> String {
    pool_yaml(targets, "")
}

/// The storm phase's pool: 503 retried up to three tries, and the per-target breakers out of
/// the way (they would otherwise stop the traffic to targets answering only 503 after five
/// of them, hiding what the budget does).
pub fn storm_yaml(targets: &[(SocketAddr, u32)]) -> String {
    pool_yaml(
        targets,
        "    retries: { attempts: 3, retryOn: [503] }\n    \
         circuitBreaker: { failureThreshold: 1000000000 }\n",
    )
}

fn pool_yaml(targets: &[(SocketAddr, u32)], settings: &str) -> String {
    let mut yaml = format!(
        "pools:\n  - name: bench\n    routes: [{{ host: \"*\", pathPrefix: / }}]\n{settings}    \
         targets:\n"
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
    if plan.proxies.contains(&Proxy::Weir) {
        let storm = storm(plan, tools, tmp, &names).await?;
        println!();
        println!("{}", storm.line());
    }
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
        let log = tmp.path().join(format!("failover-{proxy}-{name}.log"));
        backends.push(
            procs::start_echo(&tools.echo, name, any_port, plan.backend_workers, &log).await?,
        );
    }
    let targets: Vec<(SocketAddr, u32)> = backends.iter().map(|b| b.addr).zip(WEIGHTS).collect();
    let pools = tmp.path().join(format!("failover-{proxy}-pools.yaml"));
    std::fs::write(&pools, pools_yaml(&targets))?;
    let log = tmp.path().join(format!("failover-{proxy}.log"));
    let (mut guard, listen) =
        crate::proxies::start_proxy(plan, tools, &pools, &targets, proxy, &log).await?;

    let url = format!("http://{listen}/");
    if plan.warmup_secs > 0 {
        wrk::run(plan, &url, plan.warmup_secs).await?;
    }
    let before = backend_requests(&backends).await?;

    let victim = backends.remove(KILLED);
    let victim_log = tmp
        .path()
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
        tokio::try_join!(wrk::run(plan, &url, plan.duration_secs), chaos)?;
    guard.check_alive()?;
    backends.insert(KILLED, back);
    let after = backend_requests(&backends).await?;
    for backend in &mut backends {
        backend.guard.check_alive()?;
    }
    crate::proxies::stop_proxy(guard).await;
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

/// What the retry budget did in the storm phase.
struct Storm {
    clients: u64,
    backends: u64,
    unbudgeted: u64,
}

impl Storm {
    fn line(&self) -> String {
        let ratio = self.backends as f64 / self.clients.max(1) as f64;
        format!(
            "retry storm (Weir, every backend answers 503, retries: {{ attempts: 3, retryOn: \
             [503] }}, breakers off, wrk {STORM_SECS} s): {} client requests became {} backend \
             requests ({ratio:.3}x; without the budget {}x = {}); the budget allows 1.2x plus 10/s",
            self.clients, self.backends, 3, self.unbudgeted
        )
    }
}

/// Weir in front of three backends that all answer 503, its pool retrying 503: how many
/// requests reach the backends for each one a client sends.
async fn storm(
    plan: &Plan,
    tools: &Tools,
    tmp: &TempDir,
    names: &[String],
) -> anyhow::Result<Storm> {
    let any_port = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let mut backends = Vec::new();
    for name in names {
        let log = tmp.path().join(format!("storm-{name}.log"));
        backends.push(
            procs::start_echo(&tools.echo, name, any_port, plan.backend_workers, &log).await?,
        );
    }
    let targets: Vec<(SocketAddr, u32)> = backends.iter().map(|b| b.addr).zip(WEIGHTS).collect();
    let pools = tmp.path().join("storm-pools.yaml");
    std::fs::write(&pools, storm_yaml(&targets))?;
    let log = tmp.path().join("storm-weir.log");
    let (mut guard, listen) =
        crate::proxies::start_proxy(plan, tools, &pools, &targets, Proxy::Weir, &log).await?;
    let before = backend_requests(&backends).await?;
    let wrk = wrk::run(plan, &format!("http://{listen}/status/503"), STORM_SECS).await?;
    let after = backend_requests(&backends).await?;
    guard.check_alive()?;
    crate::proxies::stop_proxy(guard).await;
    for backend in backends {
        backend.guard.stop(STOP_GRACE).await;
    }
    let backends: u64 = report::served(&before, &after, None).iter().sum();
    Ok(Storm {
        clients: wrk.requests,
        backends,
        unbudgeted: wrk.requests * 3,
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
    use crate::plan::FAILOVER_MIN_DURATION_SECS;

    #[test]
    fn kill_at_a_quarter_restart_at_half() {
        assert_eq!(
            schedule(20),
            (Duration::from_secs(5), Duration::from_secs(10))
        );
        assert_eq!(
            schedule(FAILOVER_MIN_DURATION_SECS),
            (Duration::from_secs(1), Duration::from_secs(2))
        );
        assert_eq!(
            schedule(6),
            (Duration::from_millis(1500), Duration::from_secs(3))
        );
    }

    #[test]
    fn weir_runs_its_defaults_and_the_storm_pool_retries_503() {
        let targets = [
            ("127.0.0.1:19001".parse().unwrap(), 1),
            ("127.0.0.1:19002".parse().unwrap(), 1),
        ];
        assert_eq!(
            pools_yaml(&targets),
            "pools:\n  - name: bench\n    routes: [{ host: \"*\", pathPrefix: / }]\n    \
             targets:\n      \
             - { address: 127.0.0.1:19001, weight: 1 }\n      \
             - { address: 127.0.0.1:19002, weight: 1 }\n"
        );
        let storm = storm_yaml(&targets);
        assert!(
            storm.contains("    retries: { attempts: 3, retryOn: [503] }\n"),
            "{storm}"
        );
        assert!(
            storm.contains("failureThreshold: 1000000000 }\n    targets:"),
            "{storm}"
        );
    }
}
