//! `/metrics`: a Prometheus collector that reads the request path's atomics at scrape time.
//!
//! prometheus-client's own metric families hash their label set on every update; the
//! request path here only bumps atomics it already holds, and labels are written once per
//! scrape from the current snapshot.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::health::Condition;
use crate::state::State;
use crate::stats::STATUS_CLASSES;
use crate::upstream::Limit;

/// A Prometheus registry holding Weir's collector.
pub fn registry(state: Arc<State>) -> Registry {
    let mut registry = Registry::with_prefix("weir");
    registry.register_collector(Box::new(WeirCollector(state)));
    registry
}

/// Renders the registry in the Prometheus text format.
pub fn render(registry: &Registry) -> String {
    let mut out = String::with_capacity(16 * 1024);
    prometheus_client::encoding::text::encode(&mut out, registry)
        .expect("writing to a String cannot fail");
    out
}

#[derive(Debug)]
struct WeirCollector(Arc<State>);

fn load(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

impl Collector for WeirCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let state = &self.0;
        let snapshot = state.snapshot.load();
        let l = &state.listener;

        let mut m = e.encode_descriptor(
            "downstream_connections",
            "Downstream connections accepted.",
            None,
            MetricType::Counter,
        )?;
        m.encode_counter::<NoLabelSet, _, u64>(&load(&l.connections), None)?;
        let mut m = e.encode_descriptor(
            "downstream_active_connections",
            "Downstream connections open.",
            None,
            MetricType::Gauge,
        )?;
        m.encode_gauge(&load(&l.active_connections))?;
        let mut m = e.encode_descriptor(
            "downstream_refused_connections",
            "Downstream connections refused at the --max-connections cap (reset at once).",
            None,
            MetricType::Counter,
        )?;
        m.encode_counter::<NoLabelSet, _, u64>(&load(&l.refused_connections), None)?;
        let mut m = e.encode_descriptor(
            "downstream_closed_connections",
            "Downstream connections the proxy closed: timeouts, HTTP/2 abuse and protocol errors.",
            None,
            MetricType::Counter,
        )?;
        for (why, n) in crate::stats::Closed::ALL.iter().zip(&l.closed_connections) {
            m.encode_family(&[("reason", why.label())])?
                .encode_counter::<NoLabelSet, _, u64>(&load(n), None)?;
        }
        let mut m = e.encode_descriptor(
            "unrouted_requests",
            "Requests no route matched (404).",
            None,
            MetricType::Counter,
        )?;
        m.encode_counter::<NoLabelSet, _, u64>(&load(&l.unrouted), None)?;
        let mut m = e.encode_descriptor(
            "rejected_requests",
            "Requests refused before routing (400, 405, 413, 414).",
            None,
            MetricType::Counter,
        )?;
        m.encode_counter::<NoLabelSet, _, u64>(&load(&l.rejected), None)?;
        if let Some(log) = &state.access_log {
            let mut m = e.encode_descriptor(
                "access_log_lines",
                "Access log lines by fate: written, or dropped because the writer was behind.",
                None,
                MetricType::Counter,
            )?;
            m.encode_family(&[("result", "written")])?
                .encode_counter::<NoLabelSet, _, u64>(&load(&log.written), None)?;
            m.encode_family(&[("result", "dropped")])?
                .encode_counter::<NoLabelSet, _, u64>(&load(&log.dropped), None)?;
        }
        let mut m = e.encode_descriptor(
            "config_reloads",
            "Pools-file reloads by result.",
            None,
            MetricType::Counter,
        )?;
        m.encode_family(&[("result", "success")])?
            .encode_counter::<NoLabelSet, _, u64>(&load(&l.reloads), None)?;
        m.encode_family(&[("result", "failure")])?
            .encode_counter::<NoLabelSet, _, u64>(&load(&l.reload_failures), None)?;
        let mut m = e.encode_descriptor(
            "config_generation",
            "Configurations applied since start.",
            None,
            MetricType::Gauge,
        )?;
        m.encode_gauge(&snapshot.generation)?;
        let mut m = e.encode_descriptor(
            "process_resident_memory",
            "Resident set size.",
            Some(&Unit::Bytes),
            MetricType::Gauge,
        )?;
        m.encode_gauge(&crate::stats::rss_bytes().unwrap_or(0))?;

        let mut m = e.encode_descriptor(
            "pool_requests",
            "Requests routed to each pool.",
            None,
            MetricType::Counter,
        )?;
        for p in &snapshot.pools {
            m.encode_family(&[("pool", p.config.name.as_str())])?
                .encode_counter::<NoLabelSet, _, u64>(&load(&p.stats.requests), None)?;
        }
        let mut m = e.encode_descriptor(
            "pool_proxy_errors",
            "Answers made by the proxy itself, by status.",
            None,
            MetricType::Counter,
        )?;
        for p in &snapshot.pools {
            let errors = &p.stats.proxy_errors;
            for (status, n) in [
                ("4xx", &errors.client),
                ("502", &errors.bad_gateway),
                ("503", &errors.unavailable),
                ("504", &errors.timeout),
            ] {
                m.encode_family(&[("pool", p.config.name.as_str()), ("status", status)])?
                    .encode_counter::<NoLabelSet, _, u64>(&load(n), None)?;
            }
        }
        let mut m = e.encode_descriptor(
            "request_duration",
            "Time from a request's arrival to its response head.",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for p in &snapshot.pools {
            let (sum, count, buckets) = p.stats.latency.snapshot();
            m.encode_family(&[("pool", p.config.name.as_str())])?
                .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
        }

        let targets: Vec<_> = snapshot
            .pools
            .iter()
            .flat_map(|p| {
                p.targets.iter().enumerate().map(move |(i, t)| {
                    (
                        p,
                        i,
                        t,
                        [
                            ("pool", p.config.name.clone()),
                            ("target", t.stats.address.to_string()),
                        ],
                    )
                })
            })
            .collect();
        let mut m = e.encode_descriptor(
            "target_responses",
            "Responses from each target, by status class.",
            None,
            MetricType::Counter,
        )?;
        for (_, _, t, labels) in &targets {
            for (class, n) in STATUS_CLASSES.iter().zip(&t.stats.responses) {
                let labels = [
                    labels[0].clone(),
                    labels[1].clone(),
                    ("class", (*class).to_owned()),
                ];
                m.encode_family(&labels)?
                    .encode_counter::<NoLabelSet, _, u64>(&load(n), None)?;
            }
        }
        type Read = fn(&crate::state::TargetState) -> u64;
        let per_target: [(&str, &str, MetricType, Read); 7] = [
            (
                "target_requests",
                "Requests sent to each target.",
                MetricType::Counter,
                |t| load(&t.stats.requests),
            ),
            (
                "target_failures",
                "Requests a target failed without a response (refused, reset, timeout).",
                MetricType::Counter,
                |t| load(&t.stats.failures),
            ),
            (
                "target_active_requests",
                "Requests in flight to each target.",
                MetricType::Gauge,
                |t| load(&t.stats.active_requests),
            ),
            (
                "target_active_connections",
                "Open connections to each target.",
                MetricType::Gauge,
                |t| load(&t.stats.active_connections),
            ),
            (
                "target_weight",
                "Configured weight of each target.",
                MetricType::Gauge,
                |t| u64::from(t.weight),
            ),
            (
                "target_bytes_sent",
                "Request body bytes sent to each target.",
                MetricType::Counter,
                |t| load(&t.stats.bytes_sent),
            ),
            (
                "target_bytes_received",
                "Response body bytes received from each target.",
                MetricType::Counter,
                |t| load(&t.stats.bytes_received),
            ),
        ];
        for (name, help, kind, read) in per_target {
            let mut m = e.encode_descriptor(name, help, None, kind)?;
            for (_, _, t, labels) in &targets {
                let mut f = m.encode_family(labels)?;
                match kind {
                    MetricType::Counter => {
                        f.encode_counter::<NoLabelSet, _, u64>(&read(t), None)?
                    }
                    _ => f.encode_gauge(&read(t))?,
                }
            }
        }
        let now = tokio::time::Instant::now();
        let mut m = e.encode_descriptor(
            "target_state",
            "1 for the state each target is in (healthy, unhealthy, ejected, breaker-open, breaker-half-open, slow-start, drained), 0 for the others.",
            None,
            MetricType::Gauge,
        )?;
        for (_, _, t, labels) in &targets {
            let current = t.state(now);
            for name in Condition::NAMES {
                let labels = [
                    labels[0].clone(),
                    labels[1].clone(),
                    ("state", name.to_owned()),
                ];
                m.encode_family(&labels)?
                    .encode_gauge(&u64::from(name == current))?;
            }
        }
        type Health = fn(&crate::health::TargetHealth) -> u64;
        let per_health: [(&str, &str, Health); 2] = [
            (
                "target_ejections",
                "Times each target was ejected by outlier detection.",
                |h| load(&h.ejections),
            ),
            (
                "target_breaker_opens",
                "Times each target's circuit breaker opened.",
                |h| load(&h.breaker_opens),
            ),
        ];
        for (name, help, read) in per_health {
            let mut m = e.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (_, _, t, labels) in &targets {
                m.encode_family(labels)?
                    .encode_counter::<NoLabelSet, _, u64>(&read(&t.health), None)?;
            }
        }
        let mut m = e.encode_descriptor(
            "target_health_checks",
            "Active health checks by result.",
            None,
            MetricType::Counter,
        )?;
        for (_, _, t, labels) in &targets {
            for (result, n) in [
                ("passed", &t.health.checks_passed),
                ("failed", &t.health.checks_failed),
            ] {
                let labels = [
                    labels[0].clone(),
                    labels[1].clone(),
                    ("result", result.to_owned()),
                ];
                m.encode_family(&labels)?
                    .encode_counter::<NoLabelSet, _, u64>(&load(n), None)?;
            }
        }
        let mut m = e.encode_descriptor(
            "pool_overflows",
            "Requests refused at once by a pool limit (answered 503).",
            None,
            MetricType::Counter,
        )?;
        for p in &snapshot.pools {
            for (limit, n) in [
                Limit::MaxConnections,
                Limit::MaxPendingRequests,
                Limit::MaxRequests,
            ]
            .iter()
            .zip(&p.stats.overflows)
            {
                m.encode_family(&[("pool", p.config.name.as_str()), ("limit", limit.as_str())])?
                    .encode_counter::<NoLabelSet, _, u64>(&load(n), None)?;
            }
        }
        type Pool = fn(&crate::stats::PoolStats) -> u64;
        let per_pool: [(&str, &str, MetricType, Pool); 5] = [
            ("pool_retries", "Retries sent.", MetricType::Counter, |s| {
                load(&s.retries)
            }),
            (
                "pool_retries_refused",
                "Retries not sent because the retry budget was spent.",
                MetricType::Counter,
                |s| load(&s.retries_refused),
            ),
            (
                "pool_in_flight",
                "Requests in flight in each pool.",
                MetricType::Gauge,
                |s| load(&s.in_flight),
            ),
            (
                "pool_panic",
                "1 while a pool is in panic mode (balancing across all targets, healthy or not).",
                MetricType::Gauge,
                |s| u64::from(s.panic.load(Ordering::Relaxed)),
            ),
            (
                "pool_panics",
                "Times each pool entered panic mode.",
                MetricType::Counter,
                |s| load(&s.panics),
            ),
        ];
        for (name, help, kind, read) in per_pool {
            let mut m = e.encode_descriptor(name, help, None, kind)?;
            for p in &snapshot.pools {
                let labels = [("pool", p.config.name.as_str())];
                let mut f = m.encode_family(&labels)?;
                match kind {
                    MetricType::Counter => {
                        f.encode_counter::<NoLabelSet, _, u64>(&read(&p.stats), None)?
                    }
                    _ => f.encode_gauge(&read(&p.stats))?,
                }
            }
        }
        Ok(())
    }
}
