//! Retry rules: which failures are retried, the budget that keeps retries from multiplying
//! load on a struggling pool, and full-jitter backoff.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

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

/// Counts retries in flight against a pool's budget.
#[derive(Debug, Default)]
pub struct Budget {
    in_flight: AtomicU64,
}

/// One retry in flight; returns its budget share when dropped.
#[derive(Debug)]
pub struct BudgetGuard<'a>(&'a Budget);

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

impl Budget {
    /// Takes a retry slot if retries in flight stay within `percent` of `requests_in_flight`,
    /// or under `min` whatever the load.
    pub fn try_acquire(
        &self,
        requests_in_flight: u64,
        percent: u32,
        min: u32,
    ) -> Option<BudgetGuard<'_>> {
        let allowed = (requests_in_flight * u64::from(percent) / 100).max(u64::from(min));
        let mut current = self.in_flight.load(Ordering::Relaxed);
        loop {
            if current >= allowed {
                return None;
            }
            match self.in_flight.compare_exchange_weak(
                current,
                current + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(BudgetGuard(self)),
                Err(now) => current = now,
            }
        }
    }

    /// Retries in flight now.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }
}

impl Drop for BudgetGuard<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
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

    #[test]
    fn the_budget_is_a_share_of_requests_with_a_floor() {
        let b = Budget::default();
        let held: Vec<_> = (0..3).map_while(|_| b.try_acquire(0, 20, 3)).collect();
        assert_eq!(held.len(), 3, "the floor allows 3 with nothing in flight");
        assert!(b.try_acquire(0, 20, 3).is_none());
        assert!(
            b.try_acquire(100, 20, 3).is_some(),
            "20% of 100 in flight allows more"
        );
        drop(held);
        assert_eq!(b.in_flight(), 0);
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
