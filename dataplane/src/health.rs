//! Whether a target may take requests: active health checks, passive outlier ejection and
//! the per-target circuit breaker, as one small state machine per target.
//!
//! Time is tokio's, so tests drive it with a paused clock. The request path only reads an
//! atomic flag while a target is clean (healthy, not ejected, breaker closed, no failures
//! counted); the lock is taken only once something has gone wrong.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::time::Instant;
use weir_api::{CircuitBreaker, HealthCheck, OutlierDetection, SlowStart};

/// What one try against a target came to, as health sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A response that is not a server error.
    Success,
    /// A 5xx response other than the gateway ones.
    ServerError,
    /// No usable response: connect failure, reset, timeout, or 502, 503 or 504.
    GatewayFailure,
}

impl Outcome {
    /// How health counts a response of `status`: 502, 503 and 504 are gateway failures, as
    /// Envoy counts them, other 5xx server errors, the rest successes.
    pub fn of_status(status: u16) -> Self {
        match status {
            502..=504 => Self::GatewayFailure,
            500..=599 => Self::ServerError,
            _ => Self::Success,
        }
    }
}

/// The rules a pool sets for its targets' health.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// Active checks, if any.
    pub check: Option<HealthCheck>,
    /// Passive ejection, if any.
    pub outlier: Option<OutlierDetection>,
    /// The per-target breaker.
    pub breaker: CircuitBreaker,
    /// Weight ramp after a target joins or returns.
    pub slow_start: Option<SlowStart>,
}

/// A target's condition, for `/status` and `/metrics`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Condition {
    /// Taking traffic.
    Healthy,
    /// Failed its active checks.
    Unhealthy,
    /// Ejected by outlier detection until the instant.
    Ejected(Instant),
    /// Its breaker is open until the instant.
    BreakerOpen(Instant),
    /// Its breaker lets trial requests through.
    BreakerHalfOpen,
    /// Taking a growing share of its weight, until the instant.
    SlowStart(Instant),
}

impl Condition {
    /// The condition's name in `/status` and the `weir_target_state` metric.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Healthy => "healthy",
            Self::Unhealthy => "unhealthy",
            Self::Ejected(_) => "ejected",
            Self::BreakerOpen(_) => "breaker-open",
            Self::BreakerHalfOpen => "breaker-half-open",
            Self::SlowStart(_) => "slow-start",
        }
    }

    /// Every name [`Condition::name`] gives, plus `drained` for weight 0.
    pub const NAMES: [&'static str; 7] = [
        "healthy",
        "unhealthy",
        "ejected",
        "breaker-open",
        "breaker-half-open",
        "slow-start",
        "drained",
    ];

    /// When the condition ends by itself, if it does.
    pub fn until(&self) -> Option<Instant> {
        match self {
            Self::Ejected(t) | Self::BreakerOpen(t) | Self::SlowStart(t) => Some(*t),
            _ => None,
        }
    }
}

/// The health of one target, kept across configuration changes.
#[derive(Debug)]
pub struct TargetHealth {
    /// Shared by the pool's targets, as is the policy: with 100,000 targets a copy each
    /// cost 20 MB.
    pool: Arc<str>,
    address: SocketAddr,
    /// True while nothing is wrong and nothing is counted: the request path reads only this.
    clean: AtomicBool,
    inner: Mutex<Inner>,
    /// Times the target was ejected by outlier detection.
    pub ejections: AtomicU64,
    /// Times the target's breaker opened.
    pub breaker_opens: AtomicU64,
    /// Active checks that passed.
    pub checks_passed: AtomicU64,
    /// Active checks that failed.
    pub checks_failed: AtomicU64,
}

#[derive(Debug)]
struct Inner {
    policy: Arc<Policy>,
    healthy: bool,
    /// Consecutive probes disagreeing with `healthy`.
    streak: u32,
    consecutive_5xx: u32,
    consecutive_gateway: u32,
    ejected_until: Option<Instant>,
    /// Ejections counted towards the next ejection's length; forgiven after a quiet spell.
    ejection_multiplier: u32,
    breaker: Breaker,
    /// When the target last became usable, for slow start.
    usable_since: Instant,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Breaker {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { trials: u32 },
}

impl TargetHealth {
    /// A target of `pool` that joins now under `policy`; it is usable at once unless the
    /// policy's checks start it unhealthy.
    pub fn new(
        pool: impl Into<Arc<str>>,
        address: SocketAddr,
        policy: impl Into<Arc<Policy>>,
    ) -> Self {
        let policy = policy.into();
        let healthy = !policy.check.as_ref().is_some_and(|c| c.start_unhealthy);
        let inner = Inner {
            healthy,
            streak: 0,
            consecutive_5xx: 0,
            consecutive_gateway: 0,
            ejected_until: None,
            ejection_multiplier: 0,
            breaker: Breaker::Closed { failures: 0 },
            usable_since: Instant::now(),
            policy,
        };
        let health = Self {
            pool: pool.into(),
            address,
            clean: AtomicBool::new(false),
            inner: Mutex::new(inner),
            ejections: AtomicU64::new(0),
            breaker_opens: AtomicU64::new(0),
            checks_passed: AtomicU64::new(0),
            checks_failed: AtomicU64::new(0),
        };
        health.refresh(&health.lock(), Instant::now());
        health
    }

    /// Applies a pool's new rules; the target's history is kept.
    pub fn configure(&self, policy: &Arc<Policy>) {
        let mut inner = self.lock();
        if Arc::ptr_eq(&inner.policy, policy) {
            return;
        }
        let changed = *inner.policy != **policy;
        // Even when equal, take the new one, so the pool's targets share one copy again.
        inner.policy = policy.clone();
        if changed {
            self.refresh(&inner, Instant::now());
        }
    }

    /// Whether the target may take a request at `now` (a half-open breaker counts as usable
    /// while it has trial slots; [`TargetHealth::admit`] takes one).
    pub fn is_usable(&self, now: Instant) -> bool {
        if self.clean.load(Ordering::Acquire) {
            return true;
        }
        let inner = self.lock();
        inner.healthy
            && inner.ejected_until.is_none_or(|until| now >= until)
            && match inner.breaker {
                Breaker::Closed { .. } => true,
                Breaker::Open { until } => now >= until,
                Breaker::HalfOpen { trials } => trials < inner.policy.breaker.half_open_requests,
            }
    }

    /// Takes the target for one request picked at `now`: always granted while the breaker is
    /// closed; a half-open breaker grants its trial slots and refuses the rest.
    pub fn admit(&self, now: Instant) -> bool {
        if self.clean.load(Ordering::Acquire) {
            return true;
        }
        let mut inner = self.lock();
        if let Breaker::Open { until } = inner.breaker {
            if now < until {
                return false;
            }
            tracing::info!(pool = %self.pool, target = %self.address, "breaker half-open: letting trial requests through");
            inner.breaker = Breaker::HalfOpen { trials: 0 };
        }
        if let Breaker::HalfOpen { trials } = inner.breaker {
            if trials >= inner.policy.breaker.half_open_requests {
                return false;
            }
            inner.breaker = Breaker::HalfOpen { trials: trials + 1 };
        }
        true
    }

    /// Counts the outcome of one try at `now`. `may_eject` says whether the pool can spare
    /// one more ejected target (max ejection percent); it is asked only when needed, and
    /// without this target's lock held, since it looks at every target of the pool.
    pub fn record(&self, outcome: Outcome, now: Instant, may_eject: impl FnOnce() -> bool) {
        if outcome == Outcome::Success && self.clean.load(Ordering::Acquire) {
            return;
        }
        let due = {
            let mut inner = self.lock();
            let due = match outcome {
                Outcome::Success => {
                    self.count_success(&mut inner, now);
                    None
                }
                Outcome::ServerError | Outcome::GatewayFailure => {
                    inner.consecutive_5xx += 1;
                    if outcome == Outcome::GatewayFailure {
                        inner.consecutive_gateway += 1;
                    }
                    self.count_breaker_failure(&mut inner, now);
                    ejection_due(&mut inner, now)
                }
            };
            self.refresh(&inner, now);
            due
        };
        let Some(reason) = due else { return };
        if !may_eject() {
            tracing::warn!(pool = %self.pool, target = %self.address, reason, "not ejected: the pool's maxEjectionPercent is reached");
            return;
        }
        let mut inner = self.lock();
        let Some(od) = inner.policy.outlier.clone() else {
            return;
        };
        if inner.ejected_until.is_some_and(|until| now < until) {
            return;
        }
        inner.ejection_multiplier += 1;
        let length = (od.base_ejection_time.get() * inner.ejection_multiplier)
            .min(od.max_ejection_time.get());
        inner.ejected_until = Some(now + length);
        inner.usable_since = now + length;
        self.ejections.fetch_add(1, Ordering::Relaxed);
        self.refresh(&inner, now);
        tracing::warn!(pool = %self.pool, target = %self.address, reason, ejected_for = ?length, times = inner.ejection_multiplier, "target ejected");
    }

    fn count_success(&self, inner: &mut Inner, now: Instant) {
        inner.consecutive_5xx = 0;
        inner.consecutive_gateway = 0;
        match inner.breaker {
            Breaker::HalfOpen { .. } => {
                tracing::info!(pool = %self.pool, target = %self.address, "breaker closed: a trial request succeeded");
                inner.breaker = Breaker::Closed { failures: 0 };
                inner.usable_since = now;
            }
            Breaker::Closed { .. } => inner.breaker = Breaker::Closed { failures: 0 },
            Breaker::Open { .. } => {}
        }
        // An ejection is forgiven once the target has served without one for the longest
        // ejection time.
        if let (Some(od), Some(until)) = (&inner.policy.outlier, inner.ejected_until) {
            if now >= until + od.max_ejection_time.get() {
                inner.ejected_until = None;
                inner.ejection_multiplier = 0;
            }
        }
    }

    fn count_breaker_failure(&self, inner: &mut Inner, now: Instant) {
        let reset = inner.policy.breaker.reset_timeout.get();
        match inner.breaker {
            Breaker::Closed { failures } => {
                let failures = failures + 1;
                if failures >= inner.policy.breaker.failure_threshold {
                    inner.breaker = Breaker::Open { until: now + reset };
                    inner.usable_since = now + reset;
                    self.breaker_opens.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(pool = %self.pool, target = %self.address, failures, reopens_in = ?reset, "breaker open");
                } else {
                    inner.breaker = Breaker::Closed { failures };
                }
            }
            Breaker::HalfOpen { .. } => {
                inner.breaker = Breaker::Open { until: now + reset };
                inner.usable_since = now + reset;
                self.breaker_opens.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(pool = %self.pool, target = %self.address, reopens_in = ?reset, "breaker open again: a trial request failed");
            }
            Breaker::Open { .. } => {}
        }
    }

    /// Counts an active check's result at `now`.
    pub fn probe(&self, passed: bool, now: Instant) {
        let counter = if passed {
            &self.checks_passed
        } else {
            &self.checks_failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if passed && self.clean.load(Ordering::Acquire) {
            return;
        }
        let mut inner = self.lock();
        let Some(check) = inner.policy.check.clone() else {
            return;
        };
        if passed == inner.healthy {
            inner.streak = 0;
        } else {
            inner.streak += 1;
            let threshold = if passed {
                check.healthy_threshold
            } else {
                check.unhealthy_threshold
            };
            if inner.streak >= threshold {
                inner.healthy = passed;
                inner.streak = 0;
                if passed {
                    inner.usable_since = now;
                    tracing::info!(pool = %self.pool, target = %self.address, checks = threshold, "target healthy: active checks pass");
                } else {
                    tracing::warn!(pool = %self.pool, target = %self.address, checks = threshold, "target unhealthy: active checks fail");
                }
            }
        }
        if passed && matches!(inner.breaker, Breaker::Open { .. }) {
            // The target answers its checks again: let trial requests find out whether it
            // serves, rather than sit out the whole reset timeout.
            inner.breaker = Breaker::HalfOpen { trials: 0 };
            tracing::info!(pool = %self.pool, target = %self.address, "breaker half-open: an active check passed");
        }
        if passed && inner.ejected_until.is_some_and(|until| now < until) {
            // The target answers its checks again: it need not sit out the ejection.
            inner.ejected_until = Some(now);
            inner.usable_since = now;
            tracing::info!(pool = %self.pool, target = %self.address, "ejection ended early: an active check passed");
        }
        self.refresh(&inner, now);
    }

    /// The share of its weight the target takes at `now`: 1 unless slow start is ramping it
    /// up, from a tenth at the start of the window to all of it at the end.
    pub fn weight_factor(&self, now: Instant) -> f64 {
        if self.clean.load(Ordering::Acquire) {
            return 1.0;
        }
        let inner = self.lock();
        ramp(&inner, now)
    }

    /// The target's condition at `now`.
    pub fn condition(&self, now: Instant) -> Condition {
        let inner = self.lock();
        if !inner.healthy {
            return Condition::Unhealthy;
        }
        if let Some(until) = inner.ejected_until.filter(|until| now < *until) {
            return Condition::Ejected(until);
        }
        match inner.breaker {
            Breaker::Open { until } if now < until => return Condition::BreakerOpen(until),
            Breaker::Open { .. } | Breaker::HalfOpen { .. } => return Condition::BreakerHalfOpen,
            Breaker::Closed { .. } => {}
        }
        match &inner.policy.slow_start {
            Some(s) if ramp(&inner, now) < 1.0 => {
                Condition::SlowStart(inner.usable_since + s.window.get())
            }
            _ => Condition::Healthy,
        }
    }

    /// Recomputes the fast-path flag: clean only when no state could change a verdict.
    fn refresh(&self, inner: &Inner, now: Instant) {
        let clean = inner.healthy
            && inner.streak == 0
            && inner.consecutive_5xx == 0
            && inner.consecutive_gateway == 0
            && inner.ejected_until.is_none()
            && inner.breaker == Breaker::Closed { failures: 0 }
            && ramp(inner, now) >= 1.0;
        self.clean.store(clean, Ordering::Release);
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Whether the failures counted call for an ejection, and why; the counts restart either way.
fn ejection_due(inner: &mut Inner, now: Instant) -> Option<&'static str> {
    let od = inner.policy.outlier.as_ref()?;
    let reason = if od.consecutive_gateway_failures > 0
        && inner.consecutive_gateway >= od.consecutive_gateway_failures
    {
        "consecutive gateway failures"
    } else if od.consecutive_5xx > 0 && inner.consecutive_5xx >= od.consecutive_5xx {
        "consecutive 5xx responses"
    } else {
        return None;
    };
    if inner.ejected_until.is_some_and(|until| now < until) {
        return None;
    }
    inner.consecutive_5xx = 0;
    inner.consecutive_gateway = 0;
    Some(reason)
}

fn ramp(inner: &Inner, now: Instant) -> f64 {
    let Some(s) = &inner.policy.slow_start else {
        return 1.0;
    };
    let window = s.window.get();
    let elapsed = now.saturating_duration_since(inner.usable_since);
    if elapsed >= window || window.is_zero() {
        1.0
    } else {
        (elapsed.as_secs_f64() / window.as_secs_f64()).max(0.1)
    }
}

/// Whether a pool with `usable` of `total` targets usable is in panic mode under
/// `threshold` percent: then it balances across all targets, as Envoy does, rather than
/// piling everything onto the few that are left.
///
/// With no usable target at all there is nothing to spread the load off: requests are
/// answered 503 at once instead of being sent to targets known to be down.
pub fn in_panic(usable: usize, total: usize, threshold: u32) -> bool {
    threshold > 0 && usable > 0 && (usable * 100) < total * threshold as usize
}

/// Most targets of a pool of `total` that may be ejected at once under `percent`; at least
/// one, so a single bad target of a small pool can still go.
pub fn max_ejected(total: usize, percent: u32) -> usize {
    (total * percent as usize / 100).max(1)
}

#[cfg(test)]
mod tests;
