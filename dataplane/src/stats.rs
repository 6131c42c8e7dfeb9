//! Counters the request path bumps with plain atomics; `/metrics` and `/status` read them.
//!
//! Counters live outside the configuration and are looked up by pool name and target address
//! when a configuration is built, so they survive reloads and admin changes. The request path
//! never hashes a label set or takes a lock to count.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::retry::Budget;
use crate::upstream::{ConnectionCounters, Limit};

/// Upper bounds of the latency histogram buckets, in seconds.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Status classes counted per target: 1xx to 5xx.
pub const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// What one target has seen, across configurations.
#[derive(Debug)]
pub struct TargetStats {
    /// The target.
    pub address: SocketAddr,
    /// Requests sent and not yet finished (response body done or abandoned).
    pub active_requests: AtomicU64,
    /// Open TCP connections to the target, shared with the target's client.
    pub active_connections: Arc<AtomicU64>,
    /// Requests sent.
    pub requests: AtomicU64,
    /// Responses received, by status class.
    pub responses: [AtomicU64; 5],
    /// Requests that got no response: refused, reset or timed out.
    pub failures: AtomicU64,
    /// Request body bytes sent to the target.
    pub bytes_sent: AtomicU64,
    /// Response body bytes received from the target.
    pub bytes_received: AtomicU64,
}

/// What one pool has seen, across configurations.
#[derive(Debug, Default)]
pub struct PoolStats {
    /// Requests routed to the pool.
    pub requests: AtomicU64,
    /// Requests answered 5xx to the client, by a target or by the proxy.
    pub failed: AtomicU64,
    /// Requests in flight in the pool (`circuitBreaker.maxRequests`, the retry budget).
    pub in_flight: AtomicU64,
    /// Retries sent.
    pub retries: AtomicU64,
    /// Retries not sent because the budget was spent.
    pub retries_refused: AtomicU64,
    /// Retries in flight, against the budget.
    pub retry_budget: Budget,
    /// Requests refused by each pool limit: max-connections, max-pending-requests,
    /// max-requests.
    pub overflows: [AtomicU64; 3],
    /// Whether the pool is in panic mode (too few usable targets: balancing across all).
    pub panic: AtomicBool,
    /// Times the pool entered panic mode.
    pub panics: AtomicU64,
    /// Connection counters shared by the pool's targets.
    pub connections: Arc<ConnectionCounters>,
    /// Answers by the proxy itself (no usable target, timeouts, upstream failures), by status.
    pub proxy_errors: ErrorCounts,
    /// Time from the request's arrival to the response head.
    pub latency: Histogram,
}

/// Proxy-made error answers by status.
#[derive(Debug, Default)]
pub struct ErrorCounts {
    /// 502: the target failed.
    pub bad_gateway: AtomicU64,
    /// 503: no usable target.
    pub unavailable: AtomicU64,
    /// 504: the target was too slow.
    pub timeout: AtomicU64,
    /// 4xx: the request was refused before reaching a target.
    pub client: AtomicU64,
}

/// A fixed-bucket histogram of atomics: lock-free to observe.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

/// Process-wide counters.
#[derive(Debug, Default)]
pub struct ListenerStats {
    /// Downstream connections accepted.
    pub connections: AtomicU64,
    /// Downstream connections open.
    pub active_connections: AtomicU64,
    /// Downstream connections refused at the `--max-connections` cap.
    pub refused_connections: AtomicU64,
    /// Downstream connections the proxy closed, by [`Closed`] reason.
    pub closed_connections: [AtomicU64; Closed::ALL.len()],
    /// Requests no route matched (answered 404).
    pub unrouted: AtomicU64,
    /// Requests refused as malformed or too large before routing.
    pub rejected: AtomicU64,
    /// Pools-file reloads applied.
    pub reloads: AtomicU64,
    /// Pools-file reloads refused.
    pub reload_failures: AtomicU64,
}

/// Why the proxy closed a downstream connection (rather than the client, or the end of an
/// error-free exchange).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Closed {
    /// Nothing in flight for the idle timeout.
    IdleTimeout,
    /// A request head (or the first bytes) not received within the header read timeout.
    HeaderTimeout,
    /// HTTP/2: too many streams reset by the client before their answers (rapid reset).
    PrematureResets,
    /// HTTP/2: one of h2's abuse budgets ran out; GOAWAY `ENHANCE_YOUR_CALM` was sent.
    Http2Calm,
    /// HTTP/2: the client broke the protocol; GOAWAY with another error code was sent.
    Http2Error,
}

impl Closed {
    /// Every reason, in the order of [`ListenerStats::closed_connections`].
    pub const ALL: [Self; 5] = [
        Self::IdleTimeout,
        Self::HeaderTimeout,
        Self::PrematureResets,
        Self::Http2Calm,
        Self::Http2Error,
    ];

    /// The `reason` label in `/metrics`.
    pub fn label(self) -> &'static str {
        match self {
            Self::IdleTimeout => "idle_timeout",
            Self::HeaderTimeout => "header_timeout",
            Self::PrematureResets => "premature_resets",
            Self::Http2Calm => "h2_enhance_your_calm",
            Self::Http2Error => "h2_protocol_error",
        }
    }
}

impl ListenerStats {
    /// Counts a connection the proxy closed because of `why`.
    pub fn closed(&self, why: Closed) {
        self.closed_connections[why as usize].fetch_add(1, Ordering::Relaxed);
    }
}

impl TargetStats {
    /// Fresh counters for `address`.
    pub fn new(address: SocketAddr) -> Self {
        Self {
            address,
            active_requests: AtomicU64::new(0),
            active_connections: Arc::default(),
            requests: AtomicU64::new(0),
            responses: Default::default(),
            failures: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            bytes_received: AtomicU64::new(0),
        }
    }

    /// Counts a response of `status`.
    pub fn record_status(&self, status: u16) {
        let class = (usize::from(status / 100)).clamp(1, 5) - 1;
        self.responses[class].fetch_add(1, Ordering::Relaxed);
    }
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    /// Sum in seconds, count, and cumulative buckets as Prometheus wants them.
    pub fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let mut cumulative = 0;
        let mut buckets: Vec<(f64, u64)> = LATENCY_BUCKETS
            .iter()
            .zip(&self.buckets)
            .map(|(le, n)| {
                cumulative += n.load(Ordering::Relaxed);
                (*le, cumulative)
            })
            .collect();
        let count = self.count.load(Ordering::Relaxed);
        buckets.push((f64::INFINITY, count.max(cumulative)));
        (
            self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
            count,
            buckets,
        )
    }
}

impl PoolStats {
    /// Counts a request refused by `limit`.
    pub fn overflowed(&self, limit: Limit) {
        let i = match limit {
            Limit::MaxConnections => 0,
            Limit::MaxPendingRequests => 1,
            Limit::MaxRequests => 2,
        };
        self.overflows[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Enters a request into the pool unless `max` are in flight already.
    pub fn enter(self: &Arc<Self>, max: u32) -> Option<PoolRequest> {
        if self.in_flight.fetch_add(1, Ordering::Relaxed) >= u64::from(max) {
            self.in_flight.fetch_sub(1, Ordering::Relaxed);
            self.overflowed(Limit::MaxRequests);
            return None;
        }
        Some(PoolRequest(self.clone()))
    }
}

/// A request in flight in a pool, from routing to the end of its response body; leaves the
/// pool when dropped.
#[derive(Debug)]
pub struct PoolRequest(Arc<PoolStats>);

impl Drop for PoolRequest {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Decrements a counter when dropped: marks the end of an in-flight request however the
/// request ends (finished, failed, or abandoned by the client).
#[derive(Debug)]
pub struct InFlight {
    target: Arc<TargetStats>,
    pool: Option<PoolRequest>,
}

impl InFlight {
    /// Counts a request to `target` as in flight until the guard drops.
    pub fn start(target: Arc<TargetStats>) -> Self {
        target.active_requests.fetch_add(1, Ordering::Relaxed);
        target.requests.fetch_add(1, Ordering::Relaxed);
        Self { target, pool: None }
    }

    /// Keeps the request counted in its pool for as long as it is in flight to the target.
    pub fn hold(mut self, pool: PoolRequest) -> Self {
        self.pool = Some(pool);
        self
    }

    /// The target this request went to.
    pub fn target(&self) -> &Arc<TargetStats> {
        &self.target
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.target.active_requests.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The process's resident set size, from `/proc/self/status` (Linux only).
pub fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_end_at_infinity() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(300));
        h.observe(Duration::from_millis(20));
        h.observe(Duration::from_secs(60));
        let (sum, count, buckets) = h.snapshot();
        assert_eq!(count, 3);
        assert!((sum - 60.0203).abs() < 1e-6);
        assert_eq!(buckets[0], (0.0005, 1));
        assert_eq!(buckets[5], (0.025, 2));
        assert_eq!(buckets.last(), Some(&(f64::INFINITY, 3)));
    }

    #[test]
    fn in_flight_counts_until_dropped() {
        let t = Arc::new(TargetStats::new("127.0.0.1:1".parse().unwrap()));
        let guard = InFlight::start(t.clone());
        assert_eq!(t.active_requests.load(Ordering::Relaxed), 1);
        drop(guard);
        assert_eq!(t.active_requests.load(Ordering::Relaxed), 0);
        assert_eq!(t.requests.load(Ordering::Relaxed), 1);
    }
}
