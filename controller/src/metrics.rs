//! The controller's Prometheus metrics and its small HTTP listener: `/metrics`, `/ready` (200
//! once the caches are synced and every pool compiled, 503 before) and `/live`.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Every metric the controller exports, prefixed `weir_controller_`.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Reconciles run.
    pub reconciles: Counter,
    /// Reconciles that failed, by what failed.
    pub reconcile_errors: Family<ErrorLabels, Counter>,
    /// Status writes.
    pub status_writes: Counter,
    /// 1 while this replica leads (holds the Lease, or runs without election).
    pub leader: Gauge,
    /// Data planes connected.
    pub data_planes: Gauge,
    /// Streams open.
    pub streams: Gauge,
    /// Current revision of the pools served.
    pub revision: Gauge<u64, AtomicU64>,
    /// Pools served.
    pub pools: Gauge,
    /// Time from a change being staged to every streaming data plane reporting its revision.
    pub convergence: Histogram,
}

/// The label of `reconcile_errors`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// What failed.
    pub error: &'static str,
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("weir_controller");
        let reconciles = Counter::default();
        registry.register("reconciles", "Reconciles run.", reconciles.clone());
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Reconciles that failed, by what failed.",
            reconcile_errors.clone(),
        );
        let status_writes = Counter::default();
        registry.register(
            "status_writes",
            "Status subresource writes (only when the status changes).",
            status_writes.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica leads: it holds the Lease (or runs without election) and \
             writes status once warmed up.",
            leader.clone(),
        );
        let data_planes = Gauge::default();
        registry.register(
            "data_planes",
            "Data planes connected: with a stream open, or reporting within the last 30 s.",
            data_planes.clone(),
        );
        let streams = Gauge::default();
        registry.register("streams", "Channel streams open.", streams.clone());
        let revision = Gauge::<u64, AtomicU64>::default();
        registry.register(
            "revision",
            "Revision of the pools served (random base, +1 per change).",
            revision.clone(),
        );
        let pools = Gauge::default();
        registry.register("pools", "Pools served.", pools.clone());
        let convergence = Histogram::new(exponential_buckets(0.005, 2.0, 12));
        registry.register_with_unit(
            "convergence",
            "Time from a pool change to every streaming data plane reporting its revision \
             (reports come at most once a second).",
            Unit::Seconds,
            convergence.clone(),
        );
        Self {
            registry,
            reconciles,
            reconcile_errors,
            status_writes,
            leader,
            data_planes,
            streams,
            revision,
            pools,
            convergence,
        }
    }

    /// The metrics in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Serves `/metrics`, `/ready` and `/live` on `listener` for as long as the task runs.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, ready: watch::Receiver<bool>) {
    crate::serve::serve(listener, "metrics", move |req: Request<Incoming>| {
        let response = answer(&req, &metrics, *ready.borrow());
        std::future::ready(response)
    })
    .await;
}

fn answer(req: &Request<Incoming>, metrics: &Metrics, ready: bool) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => (
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.render(),
        ),
        (&Method::GET, "/ready") if ready => (StatusCode::OK, "text/plain", "ready\n".into()),
        (&Method::GET, "/ready") => (
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "caches not synced yet\n".into(),
        ),
        (&Method::GET, "/live") => (StatusCode::OK, "text/plain", "live\n".into()),
        _ => (StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    };
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("a valid response")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_metrics_render_with_their_prefix() {
        let m = Metrics::new();
        m.reconciles.inc();
        m.reconcile_errors
            .get_or_create(&ErrorLabels { error: "status" })
            .inc();
        m.convergence.observe(0.03);
        m.revision.set(7 << 39);
        let text = m.render();
        for line in [
            "weir_controller_reconciles_total 1",
            "weir_controller_reconcile_errors_total{error=\"status\"} 1",
            "weir_controller_convergence_seconds_count 1",
            "weir_controller_revision 3848290697216",
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
    }
}
