//! Turning runs into the numbers and tables the benchmark prints.

use std::fmt::Write as _;

use crate::wrk::WrkReport;

/// One measured wrk run through one proxy.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    /// Which proxy, as printed (`weir`, `haproxy`, `nginx`).
    pub proxy: String,
    /// What wrk reported.
    pub wrk: WrkReport,
    /// CPU seconds the proxy's processes used during the measured run.
    pub cpu_secs: f64,
    /// Peak RSS of the proxy's processes, summed, KiB.
    pub peak_rss_kib: u64,
    /// Requests each backend answered during the run, in target order.
    pub split: Vec<u64>,
}

impl Run {
    /// Proxy CPU seconds per 100,000 requests: the cost of a request, independent of speed.
    pub fn cpu_per_100k(&self) -> f64 {
        if self.wrk.requests == 0 {
            return f64::NAN;
        }
        self.cpu_secs * 100_000.0 / self.wrk.requests as f64
    }

    /// One line describing this run.
    pub fn line(&self) -> String {
        format!(
            "{:<8} {:>10.0} req/s  p50 {:>8.3} ms  p99 {:>8.3} ms  cpu {:>6.2} s ({:.3} s/100k)  \
             rss {:>6.1} MiB  non-2xx/3xx {}  socket errors {}  split {}",
            self.proxy,
            self.wrk.requests_per_sec,
            self.wrk.p50_ms,
            self.wrk.p99_ms,
            self.cpu_secs,
            self.cpu_per_100k(),
            self.peak_rss_kib as f64 / 1024.0,
            self.wrk.non_2xx_3xx,
            self.wrk.socket_errors,
            split_percent(&self.split),
        )
    }
}

/// `50.0/33.3/16.7%`: how requests spread over the backends.
pub fn split_percent(split: &[u64]) -> String {
    let total: u64 = split.iter().sum();
    if total == 0 {
        return "-".to_owned();
    }
    let parts: Vec<String> = split
        .iter()
        .map(|n| format!("{:.1}", *n as f64 * 100.0 / total as f64))
        .collect();
    format!("{}%", parts.join("/"))
}

/// Requests each backend served between two `/_stats` readings, in target order.
///
/// The backend at index `restarted` was restarted in between, so its counter began again at
/// zero and its second reading alone is what it served since it came back.
pub fn served(before: &[u64], after: &[u64], restarted: Option<usize>) -> Vec<u64> {
    after
        .iter()
        .zip(before)
        .enumerate()
        .map(|(i, (a, b))| {
            if restarted == Some(i) {
                *a
            } else {
                a.saturating_sub(*b)
            }
        })
        .collect()
}

/// The median, or `None` without values; NaNs are ignored.
pub fn median(values: impl IntoIterator<Item = f64>) -> Option<f64> {
    let mut values: Vec<f64> = values.into_iter().filter(|v| !v.is_nan()).collect();
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    })
}

/// `a / b`, or `None` when it means nothing.
pub fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0 && a.is_finite() && b.is_finite()).then(|| a / b)
}

/// Medians over the rounds of one proxy.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// Which proxy.
    pub proxy: String,
    /// Runs summarized.
    pub runs: usize,
    /// Median requests per second.
    pub requests_per_sec: f64,
    /// Median of the runs' median latencies, ms.
    pub p50_ms: f64,
    /// Median of the runs' 99th percentile latencies, ms.
    pub p99_ms: f64,
    /// Median CPU seconds per 100k requests.
    pub cpu_per_100k: f64,
    /// Median peak RSS, MiB.
    pub peak_rss_mib: f64,
    /// Non-2xx/3xx responses plus socket errors, summed over all runs: any is worth seeing.
    pub errors: u64,
}

/// Summarizes the runs of `proxy` among `runs`; `None` if it has none.
pub fn summarize(proxy: &str, runs: &[Run]) -> Option<Summary> {
    let mine: Vec<&Run> = runs.iter().filter(|r| r.proxy == proxy).collect();
    Some(Summary {
        proxy: proxy.to_owned(),
        runs: mine.len(),
        requests_per_sec: median(mine.iter().map(|r| r.wrk.requests_per_sec))?,
        p50_ms: median(mine.iter().map(|r| r.wrk.p50_ms))?,
        p99_ms: median(mine.iter().map(|r| r.wrk.p99_ms))?,
        cpu_per_100k: median(mine.iter().map(|r| r.cpu_per_100k())).unwrap_or(f64::NAN),
        peak_rss_mib: median(mine.iter().map(|r| r.peak_rss_kib as f64 / 1024.0))?,
        errors: mine
            .iter()
            .map(|r| r.wrk.non_2xx_3xx + r.wrk.socket_errors)
            .sum(),
    })
}

/// The table of medians, one row per proxy.
pub fn table(summaries: &[Summary]) -> String {
    let mut out = format!(
        "{:<8} {:>4} {:>11} {:>9} {:>9} {:>11} {:>12} {:>7}\n",
        "proxy", "runs", "req/s", "p50 ms", "p99 ms", "CPU s/100k", "peak RSS MiB", "errors"
    );
    for s in summaries {
        let _ = writeln!(
            out,
            "{:<8} {:>4} {:>11.0} {:>9.3} {:>9.3} {:>11.3} {:>12.1} {:>7}",
            s.proxy,
            s.runs,
            s.requests_per_sec,
            s.p50_ms,
            s.p99_ms,
            s.cpu_per_100k,
            s.peak_rss_mib,
            s.errors
        );
    }
    out
}

/// `Weir/HAProxy  req/s 1.05x  p50 0.95x ...`: above 1 is better for req/s, below 1 for the rest.
pub fn ratio_line(ours: &Summary, theirs: &Summary, label: &str) -> String {
    let show = |r: Option<f64>| r.map_or_else(|| "n/a".to_owned(), |r| format!("{r:.2}x"));
    format!(
        "{label:<13} req/s {}  p50 {}  p99 {}  CPU/100k {}",
        show(ratio(ours.requests_per_sec, theirs.requests_per_sec)),
        show(ratio(ours.p50_ms, theirs.p50_ms)),
        show(ratio(ours.p99_ms, theirs.p99_ms)),
        show(ratio(ours.cpu_per_100k, theirs.cpu_per_100k)),
    )
}

/// The stress scenario's verdicts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StressVerdict {
    /// Successful requests, percent.
    pub success_percent: f64,
    /// The seed's bar: at least 99.9 % success and p99 under 200 ms.
    pub seed_pass: bool,
    /// Ours: every request succeeds.
    pub ours_pass: bool,
}

/// Judges a stress run.
pub fn stress_verdict(wrk: &WrkReport) -> StressVerdict {
    let success_percent = wrk.success_percent();
    StressVerdict {
        success_percent,
        seed_pass: success_percent >= 99.9 && wrk.p99_ms < 200.0,
        ours_pass: wrk.requests > 0 && wrk.non_2xx_3xx == 0 && wrk.socket_errors == 0,
    }
}

/// One failover run: the load through one proxy while a backend was killed and restarted.
#[derive(Debug, Clone, PartialEq)]
pub struct FailoverRun {
    /// Which proxy, as printed.
    pub proxy: String,
    /// What wrk reported.
    pub wrk: WrkReport,
    /// Seconds into the run at which the backend was SIGKILLed.
    pub killed_at_secs: f64,
    /// Seconds into the run at which the backend was listening again.
    pub restarted_at_secs: f64,
    /// Requests each backend served during the run, in target order; the killed one's count
    /// starts at its restart.
    pub served: Vec<u64>,
    /// Index of the killed backend in `served`.
    pub killed: usize,
}

impl FailoverRun {
    /// Requests the killed backend served after it came back.
    pub fn killed_after_restart(&self) -> u64 {
        self.served.get(self.killed).copied().unwrap_or_default()
    }

    /// One line describing this run.
    pub fn line(&self, names: &[String]) -> String {
        let served: Vec<String> = self
            .served
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let name = names.get(i).map_or("?", String::as_str);
                if i == self.killed {
                    format!("{name} {n} (since restart)")
                } else {
                    format!("{name} {n}")
                }
            })
            .collect();
        format!(
            "{:<8} {} requests  success {:.3}%  non-2xx/3xx {}  socket errors {}  p50 {:.3} ms  \
             p99 {:.3} ms  killed at {:.1} s, back at {:.1} s  served: {}",
            self.proxy,
            self.wrk.requests,
            self.wrk.success_percent(),
            self.wrk.non_2xx_3xx,
            self.wrk.socket_errors,
            self.wrk.p50_ms,
            self.wrk.p99_ms,
            self.killed_at_secs,
            self.restarted_at_secs,
            served.join(", "),
        )
    }
}

/// The failover table, one row per proxy; `killed_name` heads the last column.
pub fn failover_table(runs: &[FailoverRun], killed_name: &str) -> String {
    let last = format!("{killed_name} after restart");
    let mut out = format!(
        "{:<8} {:>9} {:>9} {:>8} {:>13} {:>9} {:>9} {:>w$}\n",
        "proxy",
        "requests",
        "success %",
        "non-2xx",
        "socket errors",
        "p50 ms",
        "p99 ms",
        last,
        w = last.len(),
    );
    for r in runs {
        let _ = writeln!(
            out,
            "{:<8} {:>9} {:>9.3} {:>8} {:>13} {:>9.3} {:>9.3} {:>w$}",
            r.proxy,
            r.wrk.requests,
            r.wrk.success_percent(),
            r.wrk.non_2xx_3xx,
            r.wrk.socket_errors,
            r.wrk.p50_ms,
            r.wrk.p99_ms,
            r.killed_after_restart(),
            w = last.len(),
        );
    }
    out
}

/// `PASS` or `FAIL`.
pub fn pass(ok: bool) -> &'static str {
    if ok { "PASS" } else { "FAIL" }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wrk(rps: f64, p50: f64, p99: f64, requests: u64) -> WrkReport {
        WrkReport {
            requests,
            duration_secs: 10.0,
            requests_per_sec: rps,
            p50_ms: p50,
            p99_ms: p99,
            non_2xx_3xx: 0,
            socket_errors: 0,
        }
    }

    fn run(proxy: &str, rps: f64, p50: f64, p99: f64, cpu: f64) -> Run {
        Run {
            proxy: proxy.to_owned(),
            wrk: wrk(rps, p50, p99, (rps * 10.0) as u64),
            cpu_secs: cpu,
            peak_rss_kib: 10 * 1024,
            split: vec![3, 2, 1],
        }
    }

    #[test]
    fn median_odd_even_empty() {
        assert_eq!(median([3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median([4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median([f64::NAN, 5.0]), Some(5.0));
        assert_eq!(median(std::iter::empty()), None);
    }

    #[test]
    fn ratio_guards_against_zero() {
        assert_eq!(ratio(3.0, 2.0), Some(1.5));
        assert_eq!(ratio(3.0, 0.0), None);
        assert_eq!(ratio(f64::NAN, 2.0), None);
    }

    #[test]
    fn cpu_per_100k_requests() {
        let r = run("weir", 50_000.0, 1.0, 2.0, 5.0);
        // 500k requests in 5 CPU seconds: 1 s per 100k.
        assert!((r.cpu_per_100k() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn summaries_take_medians_per_proxy() {
        let runs = [
            run("weir", 100.0, 1.0, 5.0, 1.0),
            run("haproxy", 90.0, 1.1, 6.0, 1.0),
            run("weir", 120.0, 0.9, 4.0, 1.2),
            run("weir", 110.0, 1.2, 9.0, 1.1),
        ];
        let weir = summarize("weir", &runs).unwrap();
        assert_eq!(weir.runs, 3);
        assert_eq!(weir.requests_per_sec, 110.0);
        assert_eq!(weir.p50_ms, 1.0);
        assert_eq!(weir.p99_ms, 5.0);
        assert_eq!(weir.peak_rss_mib, 10.0);
        assert!(summarize("nginx", &runs).is_none());

        let haproxy = summarize("haproxy", &runs).unwrap();
        let line = ratio_line(&weir, &haproxy, "Weir/HAProxy");
        assert!(line.contains("req/s 1.22x"), "{line}");
        assert!(line.contains("p50 0.91x"), "{line}");
        assert!(table(&[weir, haproxy]).lines().count() == 3);
    }

    #[test]
    fn served_between_readings() {
        assert_eq!(served(&[10, 20, 30], &[15, 28, 30], None), [5, 8, 0]);
        // The restarted backend counts from zero again: its reading is what it served since.
        assert_eq!(served(&[10, 20, 30], &[15, 7, 40], Some(1)), [5, 7, 10]);
        // A counter that went backwards without a restart is not a negative count.
        assert_eq!(served(&[10], &[4], None), [0]);
    }

    #[test]
    fn failover_rows() {
        let failing = WrkReport {
            non_2xx_3xx: 150,
            socket_errors: 50,
            ..wrk(1000.0, 1.5, 12.25, 20_000)
        };
        let runs = [
            FailoverRun {
                proxy: "weir".to_owned(),
                wrk: wrk(1000.0, 1.0, 3.0, 20_000),
                killed_at_secs: 5.0,
                restarted_at_secs: 10.02,
                served: vec![8_000, 3_000, 9_000],
                killed: 1,
            },
            FailoverRun {
                proxy: "haproxy".to_owned(),
                wrk: failing,
                killed_at_secs: 5.0,
                restarted_at_secs: 10.0,
                served: vec![7_000, 3_500, 7_000],
                killed: 1,
            },
        ];
        assert_eq!(runs[1].wrk.success_percent(), 99.0);
        assert_eq!(runs[0].killed_after_restart(), 3_000);
        let table = failover_table(&runs, "echo-2");
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].ends_with("echo-2 after restart"), "{table}");
        assert_eq!(
            lines[2].split_whitespace().collect::<Vec<_>>(),
            [
                "haproxy", "20000", "99.000", "150", "50", "1.500", "12.250", "3500"
            ]
        );
        // Columns line up under their headers.
        assert!(lines.iter().all(|l| l.len() == lines[0].len()), "{table}");

        let names = ["echo-1", "echo-2", "echo-3"].map(str::to_owned);
        let line = runs[0].line(&names);
        assert!(line.contains("success 100.000%"), "{line}");
        assert!(line.contains("killed at 5.0 s, back at 10.0 s"), "{line}");
        assert!(
            line.ends_with("served: echo-1 8000, echo-2 3000 (since restart), echo-3 9000"),
            "{line}"
        );
    }

    #[test]
    fn split_in_percent() {
        assert_eq!(split_percent(&[300, 200, 100]), "50.0/33.3/16.7%");
        assert_eq!(split_percent(&[0, 0]), "-");
    }

    #[test]
    fn stress_bars() {
        let clean = wrk(1000.0, 5.0, 150.0, 30_000);
        assert_eq!(
            stress_verdict(&clean),
            StressVerdict {
                success_percent: 100.0,
                seed_pass: true,
                ours_pass: true
            }
        );
        let few_errors = WrkReport {
            non_2xx_3xx: 10,
            socket_errors: 5,
            ..clean.clone()
        };
        let v = stress_verdict(&few_errors);
        assert!(v.seed_pass && !v.ours_pass);
        let slow = WrkReport {
            p99_ms: 250.0,
            ..clean.clone()
        };
        assert!(!stress_verdict(&slow).seed_pass);
        let lossy = WrkReport {
            socket_errors: 100,
            ..clean
        };
        assert!(!stress_verdict(&lossy).seed_pass);
    }
}
