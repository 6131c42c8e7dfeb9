//! Retry rules: which failures are retried, the budget that keeps retries from multiplying
//! load on a struggling pool, and full-jitter backoff.
//!
//! The budget is Linkerd's and Finagle's: retries may be a share of the requests of the last
//! ten seconds, plus a floor of retries per second. An earlier budget counted retries in flight
//! against a share of requests in flight; when one of three targets died under 64 connections,
//! the third of the requests in flight that failed at the same instant was more than that share
//! and a few were answered 502 (24 of 745,189 in `bench/run failover`). Over a window, that
//! burst is a small part of ten seconds of requests, while a pool that fails as a whole still
//! sees at most `1 + percent` times its load.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use http::Method;
use weir_api::{Retries, RetryOn};

/// Why a try failed, in the terms retry conditions use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The connection could not be made; the target saw nothing.
    ConnectFailure,
    /// The connection broke before a response arrived.
    Reset,
    /// The try exceeded the per-try timeout.
    PerTryTimeout,
    /// The target answered this status.
    Status(u16),
}

/// A pool's retry budget: requests and retries counted per second over a sliding window.
#[derive(Debug)]
pub struct Budget {
    origin: Instant,
    seconds: [Second; WINDOW_SECS as usize],
}

/// The budget's window.
pub const WINDOW_SECS: u64 = 10;

/// One second of the window, reused every `WINDOW_SECS` seconds.
#[derive(Debug, Default)]
struct Second {
    /// Which second since the budget's origin this slot counts, plus one (0: never used).
    epoch: AtomicU64,
    requests: AtomicU64,
    retries: AtomicU64,
}

impl Failure {
    /// Whether `policy` lists this failure.
    pub fn listed_in(self, policy: &Retries) -> bool {
        policy.retry_on.iter().any(|on| match (on, self) {
            (RetryOn::ConnectFailure, Failure::ConnectFailure) => true,
            (RetryOn::Reset, Failure::Reset) => true,
            (RetryOn::PerTryTimeout, Failure::PerTryTimeout) => true,
            (RetryOn::Status(want), Failure::Status(got)) => *want == got,
            _ => false,
        })
    }

    /// Whether the target may have acted on the request, so that retrying a non-idempotent
    /// request could do its work twice.
    pub fn may_have_reached_target(self) -> bool {
        self != Failure::ConnectFailure
    }
}

/// Whether `failure` of a `method` request may be retried under `policy`, as far as the
/// failure and the method go (the budget and the body are checked separately).
pub fn retryable(policy: &Retries, failure: Failure, method: &Method) -> bool {
    failure.listed_in(policy)
        && (!failure.may_have_reached_target() || policy.non_idempotent || is_idempotent(method))
}

/// RFC 9110 §9.2.2's idempotent methods.
pub fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

impl Default for Budget {
    fn default() -> Self {
        Self {
            origin: Instant::now(),
            seconds: Default::default(),
        }
    }
}

impl Budget {
    /// Counts a request that arrived at `now`: it adds `percent`% of a retry to the budget.
    pub fn deposit(&self, now: Instant) {
        self.slot(now).requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes one retry at `now` if the window's retries stay within `percent`% of its requests
    /// plus `min_per_second` for each second of the window.
    pub fn try_withdraw(&self, now: Instant, percent: u32, min_per_second: u32) -> bool {
        let current = self.epoch(now);
        let (mut requests, mut retries) = (0, 0);
        for s in &self.seconds {
            let epoch = s.epoch.load(Ordering::Acquire);
            if epoch != 0 && epoch + WINDOW_SECS > current {
                requests += s.requests.load(Ordering::Relaxed);
                retries += s.retries.load(Ordering::Relaxed);
            }
        }
        let allowed = requests * u64::from(percent) / 100 + u64::from(min_per_second) * WINDOW_SECS;
        if retries >= allowed {
            return false;
        }
        self.slot(now).retries.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Retries counted in the window ending at `now`.
    pub fn retries(&self, now: Instant) -> u64 {
        let current = self.epoch(now);
        self.seconds
            .iter()
            .filter(|s| {
                let epoch = s.epoch.load(Ordering::Acquire);
                epoch != 0 && epoch + WINDOW_SECS > current
            })
            .map(|s| s.retries.load(Ordering::Relaxed))
            .sum()
    }

    fn epoch(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.origin).as_secs() + 1
    }

    /// The slot of `now`'s second, cleared first if it still holds a second that left the
    /// window. Two requests racing at a second's turn may lose a count or two: the budget is
    /// a rate, not a ledger, and the request path takes no lock for it.
    fn slot(&self, now: Instant) -> &Second {
        let epoch = self.epoch(now);
        let slot = &self.seconds[(epoch % WINDOW_SECS) as usize];
        let seen = slot.epoch.load(Ordering::Acquire);
        if seen != epoch
            && seen < epoch
            && slot
                .epoch
                .compare_exchange(seen, epoch, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            slot.requests.store(0, Ordering::Relaxed);
            slot.retries.store(0, Ordering::Relaxed);
        }
        slot
    }
}

/// The wait before retry number `retry` (1 for the first): a random time up to
/// `base × 2^(retry-1)`, capped at `max` (AWS's "full jitter", which spreads retries of
/// many clients instead of synchronising them).
pub fn backoff(retry: u32, base: Duration, max: Duration) -> Duration {
    let ceiling = base
        .saturating_mul(1 << retry.saturating_sub(1).min(16))
        .min(max);
    ceiling.mul_f64(fastrand::f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(on: &[RetryOn]) -> Retries {
        Retries {
            retry_on: on.to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn only_listed_failures_are_retried() {
        let p = policy(&[RetryOn::ConnectFailure, RetryOn::Status(503)]);
        assert!(retryable(&p, Failure::ConnectFailure, &Method::GET));
        assert!(retryable(&p, Failure::Status(503), &Method::GET));
        assert!(!retryable(&p, Failure::Status(502), &Method::GET));
        assert!(!retryable(&p, Failure::Reset, &Method::GET));
    }

    #[test]
    fn non_idempotent_requests_are_retried_only_when_the_target_saw_nothing() {
        let p = policy(&[RetryOn::ConnectFailure, RetryOn::Reset]);
        assert!(retryable(&p, Failure::ConnectFailure, &Method::POST));
        assert!(!retryable(&p, Failure::Reset, &Method::POST));
        assert!(retryable(&p, Failure::Reset, &Method::PUT));
        let p = Retries {
            non_idempotent: true,
            ..policy(&[RetryOn::Reset])
        };
        assert!(retryable(&p, Failure::Reset, &Method::POST));
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_of_failures_is_retried_whole_thanks_to_the_floor() {
        let b = Budget::default();
        // A quiet pool: 30 requests in the last seconds, then all 30 fail at once.
        for _ in 0..30 {
            b.deposit(Instant::now());
        }
        let now = Instant::now();
        let granted = (0..30).filter(|_| b.try_withdraw(now, 20, 10)).count();
        assert_eq!(
            granted, 30,
            "the floor of 10/s over 10 s covers a burst of 30"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_pool_failing_as_a_whole_gets_at_most_its_share_of_retries() {
        let b = Budget::default();
        let (mut requests, mut retries) = (0u64, 0u64);
        // 1,000 requests a second for a minute, every one failing and asking for a retry.
        for _ in 0..60 {
            for _ in 0..1000 {
                b.deposit(Instant::now());
                requests += 1;
                if b.try_withdraw(Instant::now(), 20, 10) {
                    retries += 1;
                }
            }
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        let ratio = retries as f64 / requests as f64;
        println!("retry storm: {requests} failing requests, {retries} retries ({ratio:.3})");
        // 20% plus the 10/s floor (1% at this rate), with a little slack for the window's
        // first seconds, when the floor is a larger share of what was deposited.
        assert!(ratio <= 0.22, "{retries} retries for {requests} requests");
        assert!(
            ratio >= 0.19,
            "the budget refused more than it should: {ratio}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn retries_leave_the_budget_as_the_window_slides() {
        let b = Budget::default();
        let now = Instant::now();
        let granted = (0..200).filter(|_| b.try_withdraw(now, 20, 10)).count();
        assert_eq!(granted, 100, "no requests: the floor alone, 10/s over 10 s");
        assert!(!b.try_withdraw(now, 20, 10));
        tokio::time::advance(Duration::from_secs(WINDOW_SECS)).await;
        assert_eq!(b.retries(Instant::now()), 0);
        assert!(
            b.try_withdraw(Instant::now(), 20, 10),
            "the window slid past them"
        );
    }

    #[test]
    fn backoff_is_full_jitter_under_a_doubling_cap() {
        let (base, max) = (Duration::from_millis(25), Duration::from_millis(250));
        for _ in 0..1000 {
            assert!(backoff(1, base, max) <= Duration::from_millis(25));
            assert!(backoff(3, base, max) <= Duration::from_millis(100));
            assert!(backoff(10, base, max) <= max);
        }
    }
}
