//! The tries of one request, as a small state machine: what each try sends, how long it may
//! take, and what its result means for the request ([`Next`]).
//!
//! A request that never left can always go to another target; one that may have reached its
//! target is sent again only if the policy retries such failures, the method allows it, its
//! body is buffered, the retry budget grants it and the request timeout leaves time. Only a
//! failure that is the target's counts against the target.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use tokio::time::Instant;
use weir_api::{Retries, RetryOn};

use super::head::Head;
use crate::body::{ClientBody, RequestBody};
use crate::error::{Fault, ProxyError, Retry};
use crate::health::Outcome;
use crate::retry::{self, Failure, is_idempotent};
use crate::state::PoolState;
use crate::upstream::{SendError, UpstreamError};

/// What is left of the request body for the next try.
#[derive(Debug)]
pub enum Pending {
    /// Not read yet: goes with the first try.
    Stream(ClientBody),
    /// Read whole: every try sends it.
    Buffered(Bytes),
    /// Streamed to a target already.
    Sent,
}

/// What one try came back with; `R` is the target's response.
#[derive(Debug)]
pub enum Sent<R> {
    /// The target answered `status`.
    Answered {
        /// The response's status.
        status: u16,
        /// The response.
        response: R,
    },
    /// The exchange failed; the request comes back if the target saw none of it.
    Failed(SendError<RequestBody>),
    /// The try's time ran out first.
    TimedOut,
}

/// What a try's result means for the request.
#[derive(Debug)]
pub enum Next<R> {
    /// Answer the client with the target's response.
    Respond(R),
    /// Answer the client with this error.
    Fail(ProxyError),
    /// Wait this long, then try another target.
    RetryAfter(Duration),
}

/// The tries of one request to one pool.
#[derive(Debug)]
pub struct Attempts<'p> {
    pool: &'p PoolState,
    head: Head,
    /// The request timeout runs out here; every try and backoff ends by then.
    deadline: Instant,
    /// Tries started.
    count: u32,
    tried: Tried,
    body: Pending,
    /// A request handed back by a try that never sent it: the next try sends it as it is.
    /// Boxed: it is rare (a failed connect), and inline it would grow every request's future.
    unsent: Option<Box<Request<RequestBody>>>,
    /// Whether a try that may have reached its target could be sent again, so each try but
    /// the last keeps a copy of the head.
    replay_after_send: bool,
}

/// Targets tried so far; at most `retries.attempts` (10), so a fixed array saves an
/// allocation on every request.
#[derive(Debug, Default)]
struct Tried {
    items: [usize; 10],
    len: usize,
}

impl<'p> Attempts<'p> {
    /// The tries of a request with `head` and `body`, whose request timeout starts at
    /// `started`; `replay_after_send` is [`replays_after_send`] of the request.
    pub fn new(
        pool: &'p PoolState,
        head: Head,
        body: Pending,
        replay_after_send: bool,
        started: Instant,
    ) -> Self {
        Self {
            pool,
            head,
            deadline: started + pool.config.timeouts.request.get(),
            count: 0,
            tried: Tried::default(),
            body,
            unsent: None,
            replay_after_send,
        }
    }

    /// The request's header block, for the choice of target: the head's, or, when the last
    /// try took it and handed its request back unsent, that request's.
    pub fn headers(&self) -> &http::HeaderMap {
        match &self.unsent {
            Some(request) => request.headers(),
            None => &self.head.parts.headers,
        }
    }

    /// Targets tried so far, in order.
    pub fn tried(&self) -> &[usize] {
        self.tried.as_slice()
    }

    /// Tries started so far.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Starts a try to target `index` at `now`: the request to send, and how long the try
    /// may take (the per-try timeout, cut short by the request timeout).
    pub fn start(&mut self, index: usize, now: Instant) -> (Request<RequestBody>, Duration) {
        self.count += 1;
        self.tried.push(index);
        let target = &self.pool.targets[index];
        let request = match self.unsent.take() {
            Some(request) => {
                let (head, body) = (*request).into_parts();
                Request::from_parts(head, body.retarget(target.stats.clone()))
            }
            None => {
                let body = match std::mem::replace(&mut self.body, Pending::Sent) {
                    Pending::Buffered(bytes) => {
                        self.body = Pending::Buffered(bytes.clone());
                        RequestBody::buffered(bytes, target.stats.clone())
                    }
                    Pending::Stream(client) => RequestBody::stream(client, target.stats.clone()),
                    Pending::Sent => unreachable!("a sent streamed body is never retried"),
                };
                let again = self.replay_after_send && !self.is_last();
                self.head.request(body, target, again)
            }
        };
        let left = self.deadline.saturating_duration_since(now);
        let per_try = self.pool.config.timeouts.per_try;
        (request, per_try.map_or(left, |p| p.get().min(left)))
    }

    /// What the try to target `index` that ended at `done` means for the request; counts
    /// the try against the target when it failed by the target's fault.
    pub fn settle<R>(&mut self, index: usize, done: Instant, sent: Sent<R>) -> Next<R> {
        let pool = self.pool;
        let target = &pool.targets[index];
        let address = target.stats.address;
        let (failure, error) = match sent {
            Sent::Answered { status, response } => {
                target.stats.record_status(status);
                target
                    .health
                    .record(Outcome::of_status(status), done, || pool.may_eject(done));
                let failure = Failure::Status(status);
                let listed = failure.listed_in(&pool.config.retries);
                if !listed || !matches!(self.body, Pending::Buffered(_)) {
                    return Next::Respond(response);
                }
                // A listed status is the target's own answer: when no retry may follow (the
                // last try, the deadline, the method, the budget), the client gets it as it
                // is rather than a 502 or 504 the proxy would make up.
                return match self.retry(index, done, failure) {
                    Some(wait) => Next::RetryAfter(wait),
                    None => Next::Respond(response),
                };
            }
            Sent::Failed(SendError { error, unsent }) => {
                if let UpstreamError::Overflow(limit) = error {
                    pool.stats.overflowed(limit);
                    return Next::Fail(ProxyError::Overflow(limit));
                }
                let error = ProxyError::from_upstream(address, &error);
                if error.fault() != Fault::Target {
                    // The client broke its own request: the target keeps a clean record.
                    return Next::Fail(error);
                }
                self.count_failure(index, done);
                let failure = if unsent.is_some() {
                    Failure::ConnectFailure
                } else {
                    Failure::Reset
                };
                if unsent.is_some() {
                    self.unsent = unsent;
                } else if matches!(self.body, Pending::Sent) {
                    // The streamed body is gone with the try: nothing to send again.
                    return Next::Fail(error);
                }
                (failure, error)
            }
            Sent::TimedOut => {
                self.count_failure(index, done);
                (Failure::PerTryTimeout, ProxyError::Timeout(address))
            }
        };
        self.again(index, done, failure, error)
    }

    /// After a failed try: another, after a backoff, or the error.
    fn again<R>(
        &mut self,
        index: usize,
        done: Instant,
        failure: Failure,
        error: ProxyError,
    ) -> Next<R> {
        let address = self.pool.targets[index].stats.address;
        if done >= self.deadline {
            return Next::Fail(ProxyError::Timeout(address));
        }
        if error.retry() == Retry::Never {
            return Next::Fail(error);
        }
        match self.retry(index, done, failure) {
            Some(wait) => Next::RetryAfter(wait),
            None => Next::Fail(error),
        }
    }

    /// Whether the try to target `index` that ended at `done` with `failure` is followed by
    /// another, and after what backoff: tries and time left, a body to send again, a policy
    /// and method that allow it, and a retry budget that grants it.
    fn retry(&mut self, index: usize, done: Instant, failure: Failure) -> Option<Duration> {
        let pool = self.pool;
        let policy = &pool.config.retries;
        let address = pool.targets[index].stats.address;
        let resendable = self.unsent.is_some() || matches!(self.body, Pending::Buffered(_));
        if done >= self.deadline
            || self.is_last()
            || !resendable
            || !retry::retryable(policy, failure, &self.head.parts.method)
        {
            return None;
        }
        let stats = &pool.stats;
        let granted = stats.retry_budget.try_withdraw(
            done,
            policy.budget_percent,
            policy.min_retries_per_second,
        );
        if !granted {
            stats.retries_refused.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        stats.retries.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(pool = %pool.config.name, target = %address, ?failure, attempt = self.count, "retrying on another target");
        let wait = retry::backoff(
            self.count,
            policy.backoff_base.get(),
            policy.backoff_max.get(),
        );
        Some(wait.min(self.deadline.saturating_duration_since(done)))
    }

    fn is_last(&self) -> bool {
        self.count >= self.pool.config.retries.attempts
    }

    fn count_failure(&self, index: usize, done: Instant) {
        let target = &self.pool.targets[index];
        target.stats.failures.fetch_add(1, Ordering::Relaxed);
        target
            .health
            .record(Outcome::GatewayFailure, done, || self.pool.may_eject(done));
    }
}

/// Whether a `method` request that may have reached its target could be sent again under
/// `policy`: the policy retries more than connect failures, the method allows it, and it is
/// no protocol upgrade. Such a request's body is buffered, if small enough, so that it can be.
pub fn replays_after_send(policy: &Retries, method: &Method, upgrade: bool) -> bool {
    policy.attempts > 1
        && !upgrade
        && policy
            .retry_on
            .iter()
            .any(|on| *on != RetryOn::ConnectFailure)
        && (is_idempotent(method) || policy.non_idempotent)
}

impl Tried {
    fn push(&mut self, i: usize) {
        if self.len < self.items.len() {
            self.items[self.len] = i;
            self.len += 1;
        }
    }

    fn as_slice(&self) -> &[usize] {
        &self.items[..self.len]
    }
}

#[cfg(test)]
mod tests;
