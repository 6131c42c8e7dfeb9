//! Reading what `wrk --latency` prints.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::process::Command;

use crate::plan::Plan;

/// The numbers of one wrk run that the benchmark reports.
#[derive(Debug, Clone, PartialEq)]
pub struct WrkReport {
    /// Completed requests (any status).
    pub requests: u64,
    /// Wall time of the run, seconds.
    pub duration_secs: f64,
    /// `Requests/sec` as wrk computed it.
    pub requests_per_sec: f64,
    /// Median latency, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile latency, milliseconds.
    pub p99_ms: f64,
    /// Responses whose status was neither 2xx nor 3xx.
    pub non_2xx_3xx: u64,
    /// Socket errors of every kind: connect, read, write and timeout.
    pub socket_errors: u64,
}

impl WrkReport {
    /// Requests that got a 2xx/3xx answer, as a percentage of all requests wrk counted.
    ///
    /// wrk counts timed-out requests only as socket errors, so they are subtracted too; a run
    /// without any request has no success.
    pub fn success_percent(&self) -> f64 {
        if self.requests == 0 {
            return 0.0;
        }
        let failed = self.non_2xx_3xx.saturating_add(self.socket_errors);
        let ok = self.requests.saturating_sub(failed);
        ok as f64 * 100.0 / self.requests as f64
    }
}

/// Parses the standard output of `wrk --latency`.
pub fn parse(output: &str) -> anyhow::Result<WrkReport> {
    let mut requests = None;
    let mut duration_secs = None;
    let mut requests_per_sec = None;
    let mut p50_ms = None;
    let mut p99_ms = None;
    let mut non_2xx_3xx = 0;
    let mut socket_errors = 0;
    let mut in_distribution = false;

    for line in output.lines() {
        let line = line.trim();
        if line == "Latency Distribution" {
            in_distribution = true;
            continue;
        }
        if in_distribution {
            if let Some((percent, value)) = line.split_once('%') {
                let value = parse_time_ms(value.trim())
                    .with_context(|| format!("latency percentile line {line:?}"))?;
                match percent.trim() {
                    "50" => p50_ms = Some(value),
                    "99" => p99_ms = Some(value),
                    _ => {}
                }
                continue;
            }
            in_distribution = false;
        }
        if let Some(rest) = line.strip_prefix("Requests/sec:") {
            requests_per_sec = Some(
                rest.trim()
                    .parse::<f64>()
                    .with_context(|| format!("requests/sec line {line:?}"))?,
            );
        } else if let Some((count, rest)) = line.split_once(" requests in ") {
            requests = Some(
                count
                    .trim()
                    .parse::<u64>()
                    .with_context(|| format!("request count line {line:?}"))?,
            );
            let took = rest.split(',').next().unwrap_or_default();
            duration_secs = Some(parse_time_ms(took.trim())? / 1000.0);
        } else if let Some(rest) = line.strip_prefix("Socket errors:") {
            socket_errors = parse_socket_errors(rest)
                .with_context(|| format!("socket errors line {line:?}"))?;
        } else if let Some(rest) = line.strip_prefix("Non-2xx or 3xx responses:") {
            non_2xx_3xx = rest
                .trim()
                .parse()
                .with_context(|| format!("non-2xx line {line:?}"))?;
        }
    }

    let Some(requests) = requests else {
        bail!("no \"N requests in\" line in wrk output:\n{output}");
    };
    let Some(requests_per_sec) = requests_per_sec else {
        bail!("no Requests/sec line in wrk output:\n{output}");
    };
    let (Some(p50_ms), Some(p99_ms)) = (p50_ms, p99_ms) else {
        bail!("no latency distribution (was wrk run with --latency?) in:\n{output}");
    };
    Ok(WrkReport {
        requests,
        duration_secs: duration_secs.unwrap_or_default(),
        requests_per_sec,
        p50_ms,
        p99_ms,
        non_2xx_3xx,
        socket_errors,
    })
}

/// Parses one of wrk's human times (`436.00us`, `1.29ms`, `2.10s`, `1.50m`, `1.00h`) into
/// milliseconds.
pub fn parse_time_ms(text: &str) -> anyhow::Result<f64> {
    // Longest suffixes first: "ms" and "us" also end in "s".
    const UNITS: [(&str, f64); 5] = [
        ("us", 0.001),
        ("ms", 1.0),
        ("s", 1_000.0),
        ("m", 60_000.0),
        ("h", 3_600_000.0),
    ];
    for (suffix, scale) in UNITS {
        if let Some(number) = text.strip_suffix(suffix) {
            let value: f64 = number
                .trim()
                .parse()
                .with_context(|| format!("bad time {text:?}"))?;
            return Ok(value * scale);
        }
    }
    bail!("time {text:?} has no unit wrk uses (us, ms, s, m, h)")
}

/// Sums `connect 0, read 1, write 0, timeout 12`.
fn parse_socket_errors(text: &str) -> anyhow::Result<u64> {
    let mut total = 0u64;
    for part in text.split(',') {
        let Some((_, count)) = part.trim().rsplit_once(' ') else {
            bail!("bad socket error count {part:?}");
        };
        total += count.parse::<u64>()?;
    }
    Ok(total)
}

/// Runs wrk against `url` for `secs` seconds and parses its report.
pub async fn run(plan: &Plan, url: &str, secs: u64) -> anyhow::Result<WrkReport> {
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
    parse(&stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_clean_run() {
        let report = parse(include_str!("../testdata/wrk-ok.txt")).unwrap();
        assert_eq!(
            report,
            WrkReport {
                requests: 98_981,
                duration_secs: 2.1,
                requests_per_sec: 47_157.64,
                p50_ms: 1.29,
                p99_ms: 2.58,
                non_2xx_3xx: 0,
                socket_errors: 0,
            }
        );
        assert_eq!(report.success_percent(), 100.0);
    }

    #[test]
    fn counts_non_2xx_and_microsecond_latencies() {
        let report = parse(include_str!("../testdata/wrk-non2xx.txt")).unwrap();
        assert_eq!(report.requests, 76_812);
        assert_eq!(report.non_2xx_3xx, 76_812);
        assert!((report.p50_ms - 0.094).abs() < 1e-9);
        assert!((report.p99_ms - 0.279).abs() < 1e-9);
        assert_eq!(report.success_percent(), 0.0);
    }

    #[test]
    fn counts_timeouts_as_socket_errors() {
        let report = parse(include_str!("../testdata/wrk-timeouts.txt")).unwrap();
        assert_eq!(report.requests, 4);
        assert_eq!(report.socket_errors, 4);
        assert_eq!(report.success_percent(), 0.0);
        assert!((report.duration_secs - 3.01).abs() < 1e-9);
    }

    #[test]
    fn parses_second_latencies_and_every_socket_error_kind() {
        let output = "\
Running 30s test @ http://127.0.0.1:8080/
  12 threads and 400 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   120.00ms  300.00ms   1.99s    95.00%
    Req/Sec     1.20k   200.00     2.00k    70.00%
  Latency Distribution
     50%   10.50ms
     75%   20.00ms
     90%   80.00ms
     99%    1.02s
  400000 requests in 30.10s, 50.00MB read
  Socket errors: connect 3, read 10, write 0, timeout 7
  Non-2xx or 3xx responses: 80
Requests/sec:  13289.04
Transfer/sec:      1.66MB
";
        let report = parse(output).unwrap();
        assert_eq!(report.requests, 400_000);
        assert_eq!(report.p50_ms, 10.5);
        assert_eq!(report.p99_ms, 1020.0);
        assert_eq!(report.socket_errors, 20);
        assert_eq!(report.non_2xx_3xx, 80);
        assert!((report.success_percent() - 99.975).abs() < 1e-9);
    }

    #[test]
    fn rejects_output_without_latency_distribution() {
        let output = "  10 requests in 1.00s, 1.00KB read\nRequests/sec:     10.00\n";
        let err = parse(output).unwrap_err().to_string();
        assert!(err.contains("--latency"), "{err}");
    }

    #[test]
    fn time_units() {
        assert_eq!(parse_time_ms("436.00us").unwrap(), 0.436);
        assert_eq!(parse_time_ms("1.29ms").unwrap(), 1.29);
        assert_eq!(parse_time_ms("2.00s").unwrap(), 2000.0);
        assert_eq!(parse_time_ms("1.50m").unwrap(), 90_000.0);
        assert_eq!(parse_time_ms("1.00h").unwrap(), 3_600_000.0);
        assert!(parse_time_ms("12").is_err());
        assert!(parse_time_ms("fast").is_err());
    }
}
