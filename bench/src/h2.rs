//! The h2 scenario: HTTP/2 from the clients (h2load, clear text with prior knowledge) and
//! HTTP/1.1 to the same three backends as throughput, each proxy in turn with its default
//! limits, rounds in rotating order, and the table of medians with ratios.
//!
//! The peers' launcher configures HTTP/1.1 listeners. HAProxy's serves h2c as it is: it
//! recognises the HTTP/2 preface on a clear-text bind. NGINX's does not (it needs `http2` on
//! `listen`), so this scenario writes NGINX's config itself, the launcher's with `http2` added.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::bail;
use tokio::process::Command;
use weir_testkit::TempDir;

use crate::h2load::{self, H2Report, Load};
use crate::plan::{Plan, Proxy};
use crate::procfs;
use crate::procs::{self, Guard, READY_LIMIT, STOP_GRACE};
use crate::proxies::{start_proxy, stop_proxy};
use crate::report::{median, ratio};
use crate::throughput::start_backends;
use crate::tools::Tools;

/// One measured h2load run through one proxy.
#[derive(Debug, Clone, PartialEq)]
pub struct H2Run {
    /// Which proxy, as printed.
    pub proxy: String,
    /// What h2load reported.
    pub h2: H2Report,
    /// CPU seconds the proxy's processes used during the measured run.
    pub cpu_secs: f64,
    /// Peak RSS of the proxy's processes, summed, KiB.
    pub peak_rss_kib: u64,
}

impl H2Run {
    /// Proxy CPU seconds per 100,000 requests.
    pub fn cpu_per_100k(&self) -> f64 {
        if self.h2.requests == 0 {
            return f64::NAN;
        }
        self.cpu_secs * 100_000.0 / self.h2.requests as f64
    }
}

/// Runs the h2 scenario; `Ok(false)` when Weir left a request unserved.
pub async fn run(plan: &Plan, tools: &Tools, tmp: &TempDir) -> anyhow::Result<bool> {
    let (backends, targets, pools) = start_backends(plan, tools, tmp).await?;
    let load = Load {
        threads: plan.threads,
        connections: plan.connections,
        streams: plan.streams,
    };
    let mut runs = Vec::new();
    for round in 0..plan.rounds {
        for proxy in plan.round_order(round) {
            let log = tmp.path().join(format!("{proxy}-h2-{}.log", round + 1));
            let (mut guard, listen) = if proxy == Proxy::Nginx {
                start_nginx_h2(plan, tmp, &targets, &log, round).await?
            } else {
                start_proxy(plan, tools, &pools, &targets, proxy, &log).await?
            };
            let url = format!("http://{listen}/");
            let run = measure(plan, load, &url, &mut guard, proxy).await;
            stop_proxy(guard).await;
            let run = run?;
            println!(
                "round {}/{} {:<8} {:>10.0} req/s  mean {:>7.3} ms  max {:>8.3} ms  cpu {:>6.2} s \
                 ({:.3} s/100k)  rss {:>6.1} MiB  unserved {} of {}",
                round + 1,
                plan.rounds,
                run.proxy,
                run.h2.requests_per_sec,
                run.h2.mean_ms,
                run.h2.max_ms,
                run.cpu_secs,
                run.cpu_per_100k(),
                run.peak_rss_kib as f64 / 1024.0,
                run.h2.unserved(),
                run.h2.requests,
            );
            runs.push(run);
        }
    }
    for backend in backends {
        backend.guard.stop(STOP_GRACE).await;
    }

    let summaries: Vec<H2Summary> = plan
        .proxies
        .iter()
        .filter_map(|p| summarize(&p.to_string(), &runs))
        .collect();
    println!();
    println!(
        "medians over {} round(s): h2load -t{} -c{} -m{} -D{} (h2c), {} proxy worker(s), \
         HTTP/1.1 to backends 3:2:1, every proxy with its default limits",
        plan.rounds, plan.threads, plan.connections, plan.streams, plan.duration_secs, plan.workers
    );
    print!("{}", table(&summaries));
    let find = |name: &str| summaries.iter().find(|s| s.proxy == name);
    let mut weir_served_all = true;
    if let Some(weir) = find("weir") {
        for (name, label) in [("haproxy", "Weir/HAProxy"), ("nginx", "Weir/NGINX")] {
            if let Some(other) = find(name) {
                println!("{}", ratio_line(weir, other, label));
            }
        }
        println!("(req/s above 1x and time or CPU below 1x favour Weir)");
        weir_served_all = weir.unserved == 0;
        println!(
            "Weir served every request: {}",
            crate::report::pass(weir_served_all)
        );
    }
    println!("(h2load reports no percentiles: mean and max time per request instead of p50/p99)");
    println!("reproduce: {}", plan.command_line());
    Ok(weir_served_all)
}

/// Waits until `proxy` answers one request over h2c, warms it up, and measures one run.
async fn measure(
    plan: &Plan,
    load: Load,
    url: &str,
    guard: &mut Guard,
    proxy: Proxy,
) -> anyhow::Result<H2Run> {
    wait_h2_ready(guard, url).await?;
    if plan.warmup_secs > 0 {
        h2load::run(load, url, plan.warmup_secs, None).await?;
    }
    let before = procfs::usage(guard.pid());
    let h2 = h2load::run(load, url, plan.duration_secs, None).await?;
    let after = procfs::usage(guard.pid());
    guard.check_alive()?;
    Ok(H2Run {
        proxy: proxy.to_string(),
        h2,
        cpu_secs: (after.cpu_secs - before.cpu_secs).max(0.0),
        peak_rss_kib: after.peak_rss_kib,
    })
}

/// Polls with single h2load requests until one is served: a readiness check that also proves
/// the listener speaks h2c.
async fn wait_h2_ready(guard: &mut Guard, url: &str) -> anyhow::Result<()> {
    let one = Load {
        threads: 1,
        connections: 1,
        streams: 1,
    };
    let deadline = Instant::now() + READY_LIMIT;
    let mut last = String::from("no attempt");
    while Instant::now() < deadline {
        guard.check_alive()?;
        match h2load::run(one, url, 1, Some(1)).await {
            Ok(report) if report.succeeded == 1 => return Ok(()),
            Ok(report) => last = format!("{} of 1 served", report.succeeded),
            Err(err) => last = format!("{err:#}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("{url} did not serve a request over h2c within {READY_LIMIT:?} ({last})")
}

/// NGINX with the launcher's configuration plus `http2` on its listener.
async fn start_nginx_h2(
    plan: &Plan,
    tmp: &TempDir,
    targets: &[(SocketAddr, u32)],
    log: &Path,
    round: u32,
) -> anyhow::Result<(Guard, SocketAddr)> {
    let dir = tmp.path().join(format!("nginx-h2-{}", round + 1));
    std::fs::create_dir_all(&dir)?;
    let listen = SocketAddr::from((Ipv4Addr::LOCALHOST, procs::peer_port()?));
    let conf = dir.join("nginx.conf");
    std::fs::write(&conf, nginx_h2_conf(&dir, listen, plan.workers, targets))?;
    let mut cmd = Command::new("nginx");
    cmd.arg("-c").arg(&conf);
    let guard = Guard::spawn("nginx", &mut cmd, Some(log))?;
    Ok((guard, listen))
}

/// The peers launcher's NGINX config with `http2` on `listen` (clear-text HTTP/2 with prior
/// knowledge), written out here because the launcher has no switch for it.
pub fn nginx_h2_conf(
    dir: &Path,
    listen: SocketAddr,
    workers: u16,
    targets: &[(SocketAddr, u32)],
) -> String {
    let dir = dir.display();
    let mut conf = format!(
        "worker_processes {workers}; daemon off; pid {dir}/nginx.pid; \
         error_log {dir}/error.log warn;\n\
         events {{ worker_connections 16384; }}\n\
         http {{ access_log off; keepalive_requests 1000000;\n  upstream pool {{\n"
    );
    for (addr, weight) in targets {
        let _ = writeln!(conf, "    server {addr} weight={weight} max_fails=0;");
    }
    let _ = write!(
        conf,
        "    keepalive 512; }}\n  server {{ listen {listen} http2 backlog=4096; location / {{\n    \
         proxy_pass http://pool; proxy_http_version 1.1; proxy_set_header Connection \"\";\n    \
         proxy_set_header Host $host; proxy_set_header X-Forwarded-For \
         $proxy_add_x_forwarded_for; }} }} }}\n"
    );
    conf
}

/// Medians over the rounds of one proxy.
#[derive(Debug, Clone, PartialEq)]
pub struct H2Summary {
    /// Which proxy.
    pub proxy: String,
    /// Runs summarized.
    pub runs: usize,
    /// Median requests per second.
    pub requests_per_sec: f64,
    /// Median of the runs' mean time per request, ms.
    pub mean_ms: f64,
    /// Median of the runs' longest request, ms.
    pub max_ms: f64,
    /// Median CPU seconds per 100k requests.
    pub cpu_per_100k: f64,
    /// Median peak RSS, MiB.
    pub peak_rss_mib: f64,
    /// Requests not served with 2xx or 3xx, summed over all runs.
    pub unserved: u64,
}

/// Summarizes the runs of `proxy` among `runs`; `None` if it has none.
pub fn summarize(proxy: &str, runs: &[H2Run]) -> Option<H2Summary> {
    let mine: Vec<&H2Run> = runs.iter().filter(|r| r.proxy == proxy).collect();
    Some(H2Summary {
        proxy: proxy.to_owned(),
        runs: mine.len(),
        requests_per_sec: median(mine.iter().map(|r| r.h2.requests_per_sec))?,
        mean_ms: median(mine.iter().map(|r| r.h2.mean_ms))?,
        max_ms: median(mine.iter().map(|r| r.h2.max_ms))?,
        cpu_per_100k: median(mine.iter().map(|r| r.cpu_per_100k())).unwrap_or(f64::NAN),
        peak_rss_mib: median(mine.iter().map(|r| r.peak_rss_kib as f64 / 1024.0))?,
        unserved: mine.iter().map(|r| r.h2.unserved()).sum(),
    })
}

/// The table of medians, one row per proxy.
pub fn table(summaries: &[H2Summary]) -> String {
    let mut out = format!(
        "{:<8} {:>4} {:>11} {:>9} {:>9} {:>11} {:>12} {:>9}\n",
        "proxy", "runs", "req/s", "mean ms", "max ms", "CPU s/100k", "peak RSS MiB", "unserved"
    );
    for s in summaries {
        let _ = writeln!(
            out,
            "{:<8} {:>4} {:>11.0} {:>9.3} {:>9.3} {:>11.3} {:>12.1} {:>9}",
            s.proxy,
            s.runs,
            s.requests_per_sec,
            s.mean_ms,
            s.max_ms,
            s.cpu_per_100k,
            s.peak_rss_mib,
            s.unserved
        );
    }
    out
}

/// `Weir/HAProxy  req/s 1.05x  mean 0.95x ...`: above 1 is better for req/s, below 1 for the
/// rest.
pub fn ratio_line(ours: &H2Summary, theirs: &H2Summary, label: &str) -> String {
    let show = |r: Option<f64>| r.map_or_else(|| "n/a".to_owned(), |r| format!("{r:.2}x"));
    format!(
        "{label:<13} req/s {}  mean {}  max {}  CPU/100k {}  peak RSS {}",
        show(ratio(ours.requests_per_sec, theirs.requests_per_sec)),
        show(ratio(ours.mean_ms, theirs.mean_ms)),
        show(ratio(ours.max_ms, theirs.max_ms)),
        show(ratio(ours.cpu_per_100k, theirs.cpu_per_100k)),
        show(ratio(ours.peak_rss_mib, theirs.peak_rss_mib)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(proxy: &str, rps: f64, mean: f64, cpu: f64, unserved: u64) -> H2Run {
        let requests = (rps * 10.0) as u64;
        H2Run {
            proxy: proxy.to_owned(),
            h2: H2Report {
                protocol: "h2c".to_owned(),
                requests,
                succeeded: requests - unserved,
                status_5xx: unserved,
                duration_secs: 10.0,
                requests_per_sec: rps,
                mean_ms: mean,
                max_ms: mean * 3.0,
            },
            cpu_secs: cpu,
            peak_rss_kib: 20 * 1024,
        }
    }

    #[test]
    fn medians_ratios_and_unserved_requests_per_proxy() {
        let runs = [
            run("weir", 30_000.0, 50.0, 3.0, 0),
            run("haproxy", 50_000.0, 30.0, 4.0, 0),
            run("weir", 32_000.0, 48.0, 3.2, 16),
            run("weir", 31_000.0, 49.0, 3.1, 0),
        ];
        let weir = summarize("weir", &runs).unwrap();
        assert_eq!(weir.runs, 3);
        assert_eq!(weir.requests_per_sec, 31_000.0);
        assert_eq!(weir.mean_ms, 49.0);
        assert_eq!(weir.max_ms, 147.0);
        assert_eq!(weir.unserved, 16);
        // 3.1 CPU seconds for 310,000 requests: 1 s per 100k.
        assert!((weir.cpu_per_100k - 1.0).abs() < 1e-9);
        assert!(summarize("nginx", &runs).is_none());

        let haproxy = summarize("haproxy", &runs).unwrap();
        let line = ratio_line(&weir, &haproxy, "Weir/HAProxy");
        assert!(line.contains("req/s 0.62x"), "{line}");
        assert!(line.contains("CPU/100k 1.25x"), "{line}");
        assert!(line.contains("peak RSS 1.00x"), "{line}");
        let table = table(&[weir, haproxy]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines.iter().all(|l| l.len() == lines[0].len()), "{table}");
    }

    #[test]
    fn nginx_gets_the_launchers_config_with_http2_on_its_listener() {
        let conf = nginx_h2_conf(
            Path::new("/tmp/x"),
            "127.0.0.1:18080".parse().unwrap(),
            2,
            &[
                ("127.0.0.1:19001".parse().unwrap(), 3),
                ("127.0.0.1:19002".parse().unwrap(), 1),
            ],
        );
        assert!(conf.starts_with("worker_processes 2; daemon off; pid /tmp/x/nginx.pid;"));
        assert!(
            conf.contains("listen 127.0.0.1:18080 http2 backlog=4096;"),
            "{conf}"
        );
        assert!(
            conf.contains("server 127.0.0.1:19001 weight=3 max_fails=0;"),
            "{conf}"
        );
        assert!(
            conf.contains("server 127.0.0.1:19002 weight=1 max_fails=0;"),
            "{conf}"
        );
        assert!(conf.contains("keepalive 512;"), "{conf}");
        assert!(conf.contains("proxy_http_version 1.1;"), "{conf}");
        // Balanced braces: nginx refuses the file otherwise.
        assert_eq!(conf.matches('{').count(), conf.matches('}').count());
    }
}
