//! The command line and the plan it makes: the scenario, the proxies, wrk's settings, with
//! each scenario's defaults filled in.

use std::fmt;
use std::path::PathBuf;

use anyhow::bail;
use clap::{Parser, ValueEnum};

/// Shortest failover run that leaves a second before the kill and a second between kill
/// and restart.
pub const FAILOVER_MIN_DURATION_SECS: u64 = 4;

/// Command line of `weir-bench`.
#[derive(Debug, Parser)]
#[command(name = "weir-bench", version, about)]
pub struct Args {
    /// What to measure.
    #[arg(value_enum, default_value_t = Scenario::Throughput)]
    pub scenario: Scenario,
    /// Proxies to measure, comma separated [default: weir,haproxy,nginx for throughput and
    /// failover, weir for stress].
    #[arg(long, value_enum, value_delimiter = ',')]
    pub proxies: Option<Vec<Proxy>>,
    /// Worker threads (Weir, HAProxy) or processes (NGINX) of every proxy.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    pub workers: u16,
    /// Throughput rounds; each round measures every proxy once, in rotating order.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub rounds: u32,
    /// wrk or h2load threads [default: 2 for throughput, 12 for stress, 1 for h2].
    #[arg(long)]
    pub threads: Option<u32>,
    /// wrk or h2load connections [default: 64 for throughput, 400 for stress, 16 for h2].
    #[arg(long)]
    pub connections: Option<u32>,
    /// HTTP/2 streams h2load keeps in flight on each connection (h2 only).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub streams: u32,
    /// Measured duration of each wrk run, e.g. 10s or 1m [default: 10s for throughput, 30s for
    /// stress, 20s for failover].
    #[arg(long, value_parser = parse_secs)]
    pub duration: Option<u64>,
    /// Unmeasured wrk run before each measured one, e.g. 2s (0s for none).
    #[arg(long, value_parser = parse_secs, default_value = "2s")]
    pub warmup: u64,
    /// Tokio worker threads of each weir-echo backend.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    pub backend_workers: u16,
    /// The peers' launcher [default: ../shared/peers/run-peer beside the workspace].
    #[arg(long)]
    pub peers_script: Option<PathBuf>,
    /// Where weir-echo and weir-dataplane are [default: beside this binary].
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
}

/// A benchmark scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// Weir vs HAProxy vs NGINX, medians over rounds.
    Throughput,
    /// The seed's stress plan (wrk -t12 -c400 -d30s) with pass/fail bars.
    Stress,
    /// One of three backends SIGKILLed at 1/4 of the run and restarted at 1/2; success rates.
    Failover,
    /// Malformed and ambiguous HTTP/1.1 requests: what each proxy refuses or lets through.
    Battery,
    /// HTTP/2 from clients (h2load, h2c prior knowledge), HTTP/1.1 to the targets; medians
    /// over rounds.
    H2,
    /// Memory per idle keep-alive connection and per idle WebSocket tunnel (`--connections`
    /// of each, 3,000 by default).
    Conns,
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Throughput => "throughput",
            Self::Stress => "stress",
            Self::Failover => "failover",
            Self::Battery => "battery",
            Self::H2 => "h2",
            Self::Conns => "conns",
        })
    }
}

/// A proxy under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Proxy {
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
    pub fn is_weir(self) -> bool {
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

/// `10`, `10s`, `2m`: whole seconds, as wrk's `-d` takes them.
pub fn parse_secs(text: &str) -> Result<u64, String> {
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
pub struct Plan {
    pub scenario: Scenario,
    pub proxies: Vec<Proxy>,
    pub workers: u16,
    pub rounds: u32,
    pub threads: u32,
    pub connections: u32,
    pub streams: u32,
    pub duration_secs: u64,
    pub warmup_secs: u64,
    pub backend_workers: u16,
}

impl Plan {
    /// The proxies in the order round `round` measures them: rotated by one each round, so
    /// that slow drifts of the machine spread over every proxy.
    pub fn round_order(&self, round: u32) -> Vec<Proxy> {
        let mut order = self.proxies.clone();
        let shift = round as usize % order.len().max(1);
        order.rotate_left(shift);
        order
    }

    pub fn new(args: &Args) -> anyhow::Result<Self> {
        let stress = args.scenario == Scenario::Stress;
        let failover = args.scenario == Scenario::Failover;
        let h2 = args.scenario == Scenario::H2;
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
            rounds: if matches!(args.scenario, Scenario::Throughput | Scenario::H2) {
                args.rounds
            } else {
                1
            },
            threads: args.threads.unwrap_or(if stress {
                12
            } else if h2 {
                1
            } else {
                2
            }),
            connections: args.connections.unwrap_or(match args.scenario {
                Scenario::Stress => 400,
                Scenario::H2 => 16,
                Scenario::Conns => 3_000,
                _ => 64,
            }),
            streams: args.streams,
            duration_secs: args.duration.unwrap_or(match args.scenario {
                Scenario::Throughput | Scenario::H2 => 10,
                Scenario::Stress => 30,
                Scenario::Failover => 20,
                // Unused: the battery generates no load.
                Scenario::Battery | Scenario::Conns => 1,
            }),
            warmup_secs: args.warmup,
            backend_workers: args.backend_workers,
        };
        if plan.proxies.is_empty() {
            bail!("--proxies names no proxy");
        }
        if plan.threads == 0 || plan.connections < plan.threads {
            bail!(
                "wrk and h2load need at least one thread and at least as many connections as \
                 threads"
            );
        }
        if plan.duration_secs == 0 {
            bail!("--duration must be at least 1s");
        }
        if failover && plan.duration_secs < FAILOVER_MIN_DURATION_SECS {
            bail!(
                "failover needs --duration of at least {}s: a backend is killed at 1/4 of it and \
                 restarted at 1/2",
                FAILOVER_MIN_DURATION_SECS
            );
        }
        Ok(plan)
    }

    /// The command line that runs this exact benchmark again.
    pub fn command_line(&self) -> String {
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
        if scenario == Scenario::Conns {
            // No wrk: the connection count, workers and backends are what matter.
            return format!(
                "bench/run conns --proxies {} --workers {} --connections {} --backend-workers {}",
                proxies.join(","),
                self.workers,
                self.connections,
                self.backend_workers
            );
        }
        let rounds = match self.scenario {
            Scenario::Throughput | Scenario::H2 => format!(" --rounds {}", self.rounds),
            Scenario::Stress | Scenario::Failover | Scenario::Battery | Scenario::Conns => {
                String::new()
            }
        };
        let streams = if scenario == Scenario::H2 {
            format!(" --streams {}", self.streams)
        } else {
            String::new()
        };
        format!(
            "bench/run {scenario} --proxies {} --workers {}{rounds} --threads {} --connections {}\
             {streams} --duration {}s --warmup {}s --backend-workers {}",
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

        let h2 = Plan::new(&Args::parse_from(["weir-bench", "h2"])).unwrap();
        assert_eq!(
            h2.command_line(),
            "bench/run h2 --proxies weir,haproxy,nginx --workers 1 --rounds 3 --threads 1 \
             --connections 16 --streams 100 --duration 10s --warmup 2s --backend-workers 1"
        );
        let again: Vec<String> = h2
            .command_line()
            .split_whitespace()
            .skip(1)
            .map(str::to_owned)
            .collect();
        let reparsed = Plan::new(&Args::parse_from(
            std::iter::once("weir-bench".to_owned()).chain(again),
        ))
        .unwrap();
        assert_eq!(reparsed.command_line(), h2.command_line());
        let no_streams = Args::parse_from(["weir-bench", "h2", "--streams", "5"]);
        assert_eq!(Plan::new(&no_streams).unwrap().streams, 5);
        assert!(Args::try_parse_from(["weir-bench", "h2", "--streams", "0"]).is_err());

        let conns = Plan::new(&Args::parse_from(["weir-bench", "conns"])).unwrap();
        assert_eq!(conns.connections, 3_000);
        assert_eq!(
            conns.command_line(),
            "bench/run conns --proxies weir,haproxy,nginx --workers 1 --connections 3000 \
             --backend-workers 1"
        );
    }
}
