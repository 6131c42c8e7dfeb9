//! Running h2load (nghttp2's HTTP/2 load generator) and reading what it prints.
//!
//! h2load gives no latency percentiles, only the minimum, maximum, mean and deviation of the
//! time per request, so the h2 scenario reports the mean and the maximum where the wrk ones
//! report p50 and p99.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::process::Command;

use crate::wrk::parse_time_ms;

/// What one h2load run reported.
#[derive(Debug, Clone, PartialEq)]
pub struct H2Report {
    /// The protocol it spoke (`h2c` for HTTP/2 over clear text with prior knowledge).
    pub protocol: String,
    /// Requests h2load counted in all.
    pub requests: u64,
    /// Requests answered 2xx or 3xx.
    pub succeeded: u64,
    /// Responses with a 5xx status.
    pub status_5xx: u64,
    /// Length of the measured run, seconds.
    pub duration_secs: f64,
    /// Requests per second over the run.
    pub requests_per_sec: f64,
    /// Mean time per request, ms.
    pub mean_ms: f64,
    /// Longest time for one request, ms.
    pub max_ms: f64,
}

impl H2Report {
    /// Requests not served with 2xx or 3xx: failed statuses, resets, errors, timeouts.
    pub fn unserved(&self) -> u64 {
        self.requests.saturating_sub(self.succeeded)
    }
}

/// Parses the standard output of h2load.
pub fn parse(output: &str) -> anyhow::Result<H2Report> {
    let mut protocol = None;
    let mut finished = None;
    let mut counts = None;
    let mut status_5xx = 0;
    let mut times = None;
    for line in output.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("Application protocol:") {
            protocol = Some(rest.trim().to_owned());
        } else if let Some(rest) = line.strip_prefix("finished in ") {
            // `finished in 10.00s, 47393.66 req/s, 1.54MB/s`
            let mut parts = rest.split(',').map(str::trim);
            let took = parse_time_ms(parts.next().unwrap_or_default())
                .with_context(|| format!("finished line {line:?}"))?;
            let rate = parts
                .next()
                .and_then(|p| p.strip_suffix(" req/s"))
                .with_context(|| format!("no req/s in {line:?}"))?
                .parse::<f64>()
                .with_context(|| format!("finished line {line:?}"))?;
            finished = Some((took / 1000.0, rate));
        } else if let Some(rest) = line.strip_prefix("requests:") {
            // `100000 total, 100000 started, 100000 done, 99000 succeeded, 1000 failed, ...`
            let total = counted(rest, "total").with_context(|| format!("line {line:?}"))?;
            let ok = counted(rest, "succeeded").with_context(|| format!("line {line:?}"))?;
            counts = Some((total, ok));
        } else if let Some(rest) = line.strip_prefix("status codes:") {
            status_5xx = counted(rest, "5xx").with_context(|| format!("line {line:?}"))?;
        } else if let Some(rest) = line.strip_prefix("time for request:") {
            // min, max, mean, sd, +/- sd
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let (Some(max), Some(mean)) = (fields.get(1), fields.get(2)) else {
                bail!("time for request line {line:?} has too few fields");
            };
            times = Some((parse_time_ms(mean)?, parse_time_ms(max)?));
        }
    }
    let Some((requests, succeeded)) = counts else {
        bail!("no \"requests:\" line in h2load output:\n{output}");
    };
    let Some((duration_secs, requests_per_sec)) = finished else {
        bail!("no \"finished in\" line in h2load output:\n{output}");
    };
    let Some((mean_ms, max_ms)) = times else {
        bail!("no \"time for request\" line in h2load output:\n{output}");
    };
    Ok(H2Report {
        protocol: protocol.unwrap_or_default(),
        requests,
        succeeded,
        status_5xx,
        duration_secs,
        requests_per_sec,
        mean_ms,
        max_ms,
    })
}

/// The count before `word` in `100 total, 90 succeeded, ...`.
fn counted(list: &str, word: &str) -> anyhow::Result<u64> {
    list.split(',')
        .map(str::trim)
        .find_map(|part| part.strip_suffix(word))
        .with_context(|| format!("no {word:?} count"))?
        .trim()
        .parse()
        .with_context(|| format!("bad {word:?} count"))
}

/// How one h2load run loads a proxy.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    /// Client threads (`-t`).
    pub threads: u32,
    /// Client connections (`-c`).
    pub connections: u32,
    /// Streams in flight on each connection (`-m`).
    pub streams: u32,
}

/// Runs h2load over clear-text HTTP/2 (prior knowledge, h2load's default for `http://`)
/// against `url` for `secs` seconds, or for `requests` requests when given, and parses its
/// report; a run that did not speak h2c is an error.
pub async fn run(
    load: Load,
    url: &str,
    secs: u64,
    requests: Option<u64>,
) -> anyhow::Result<H2Report> {
    let mut cmd = Command::new("h2load");
    cmd.args(["-t", &load.threads.to_string()])
        .args(["-c", &load.connections.to_string()])
        .args(["-m", &load.streams.to_string()]);
    match requests {
        Some(n) => cmd.args(["-n", &n.to_string()]),
        None => cmd.args(["-D", &secs.to_string()]),
    };
    cmd.arg(url).stdin(Stdio::null()).kill_on_drop(true);
    // h2load stops by itself; the margin covers start-up and a loaded machine.
    let limit = Duration::from_secs(secs + 30);
    let output = tokio::time::timeout(limit, cmd.output())
        .await
        .with_context(|| format!("h2load did not finish within {limit:?}"))?
        .context("running h2load")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "h2load failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr),
            stdout
        );
    }
    let report = parse(&stdout)?;
    if report.protocol != "h2c" {
        bail!(
            "h2load spoke {:?}, not h2c, to {url}:\n{stdout}",
            report.protocol
        );
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLEAN: &str = "\
starting benchmark...
spawning thread #0: 16 total client(s). Timing-based test with 0s of warm-up time and 10s of main duration for measurements.
Application protocol: h2c
Warm-up phase is over for thread #0.
Main benchmark duration is started for thread #0.
Main benchmark duration is over for thread #0. Stopping all clients.
Stopped all clients for thread #0

finished in 10.00s, 47393.66 req/s, 1.54MB/s
requests: 473937 total, 475537 started, 473937 done, 473937 succeeded, 0 failed, 0 errored, 0 timeout
status codes: 473937 2xx, 0 3xx, 0 4xx, 0 5xx
traffic: 15.41MB (16157504) total, 5.21MB (5461296) headers (space savings 95.48%), 1.81MB (1895748) data
                     min         max         mean         sd        +/- sd
time for request:      523us     56.98ms     31.44ms      6.98ms    82.37%
time for connect:      233us      1.91ms      1.09ms       521us    62.50%
time to 1st byte:     2.33ms     10.87ms      6.22ms      2.76ms    62.50%
req/s           :    2962.66     3045.02     2995.93       27.08    62.50%
";

    #[test]
    fn a_clean_run_reads_as_every_request_served() {
        let report = parse(CLEAN).unwrap();
        assert_eq!(
            report,
            H2Report {
                protocol: "h2c".to_owned(),
                requests: 473_937,
                succeeded: 473_937,
                status_5xx: 0,
                duration_secs: 10.0,
                requests_per_sec: 47_393.66,
                mean_ms: 31.44,
                max_ms: 56.98,
            }
        );
        assert_eq!(report.unserved(), 0);
    }

    #[test]
    fn refused_and_errored_requests_count_as_unserved() {
        // What h2load printed for 20 requests through a proxy whose target was down, and for
        // a server that did not speak HTTP/2 at all.
        let refused = "\
Application protocol: h2c
finished in 6.05s, 3.31 req/s, 525B/s
requests: 20 total, 20 started, 20 done, 0 succeeded, 20 failed, 0 errored, 0 timeout
status codes: 0 2xx, 0 3xx, 0 4xx, 20 5xx
                     min         max         mean         sd        +/- sd
time for request:      3.01s       3.03s       3.02s      6.45ms    75.00%
";
        let report = parse(refused).unwrap();
        assert_eq!((report.unserved(), report.status_5xx), (20, 20));
        assert_eq!((report.mean_ms, report.max_ms), (3020.0, 3030.0));

        let errored = "\
Application protocol: h2c
finished in 27.53ms, 0.00 req/s, 21.93KB/s
requests: 20 total, 10 started, 0 done, 0 succeeded, 20 failed, 20 errored, 0 timeout
status codes: 0 2xx, 0 3xx, 0 4xx, 0 5xx
time for request:        0us         0us         0us         0us     0.00%
";
        let report = parse(errored).unwrap();
        assert_eq!((report.unserved(), report.status_5xx), (20, 0));
        assert!((report.duration_secs - 0.02753).abs() < 1e-9);
    }

    #[test]
    fn output_without_the_summary_is_an_error() {
        let err = parse("starting benchmark...\n").unwrap_err().to_string();
        assert!(err.contains("requests:"), "{err}");
        let no_times = "finished in 1.00s, 10.00 req/s, 1KB/s\n\
                        requests: 10 total, 10 started, 10 done, 10 succeeded, 0 failed\n";
        let err = parse(no_times).unwrap_err().to_string();
        assert!(err.contains("time for request"), "{err}");
        let bad_count = "requests: many total, 10 succeeded\n";
        assert!(parse(bad_count).is_err());
    }
}
