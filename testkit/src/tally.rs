//! Counting answers by the backend that gave them.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use http::StatusCode;

use crate::http::Reply;

/// What a [`Tally`] reads of an answer: a harness's own answer type implements it.
pub trait Answer {
    /// Its status.
    fn status(&self) -> StatusCode;
    /// The backend that gave it (`x-backend`), if it says.
    fn backend(&self) -> Option<&str>;
    /// Its body, as text.
    fn body(&self) -> &str;
    /// How long it took, when it was timed.
    fn elapsed(&self) -> Option<Duration> {
        None
    }
}

impl Answer for Reply {
    fn status(&self) -> StatusCode {
        self.status
    }
    fn backend(&self) -> Option<&str> {
        Reply::backend(self)
    }
    fn body(&self) -> &str {
        &self.body
    }
    fn elapsed(&self) -> Option<Duration> {
        Some(self.elapsed)
    }
}

/// What a run of requests saw: 200 answers by backend, and the failures.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    /// Requests sent.
    pub requests: u64,
    /// Requests without a 200 answer.
    pub failures: u64,
    /// The first few failures, described.
    pub failed: Vec<String>,
    /// 200 answers by backend.
    pub by_backend: BTreeMap<String, u64>,
    /// When each backend first answered.
    pub first_seen: BTreeMap<String, Instant>,
    /// Slowest timed answer.
    pub worst: Duration,
    /// When the last failed request was sent.
    pub last_failure: Option<Instant>,
}

impl Tally {
    /// Counts one answer (or the error that came instead) to a request sent now.
    pub fn record(&mut self, result: Result<impl Answer, String>) {
        self.record_sent(result, Instant::now());
    }

    /// Counts one answer (or the error that came instead) to a request sent at `sent`.
    pub fn record_sent(&mut self, result: Result<impl Answer, String>, sent: Instant) {
        self.requests += 1;
        if let Ok(answer) = &result {
            self.worst = self.worst.max(answer.elapsed().unwrap_or_default());
        }
        match result {
            Ok(answer) if answer.status() == StatusCode::OK => {
                let backend = answer.backend().unwrap_or("(no x-backend)").to_owned();
                self.first_seen.entry(backend.clone()).or_insert(sent);
                *self.by_backend.entry(backend).or_default() += 1;
            }
            other => {
                self.failures += 1;
                self.last_failure = self.last_failure.max(Some(sent));
                if self.failed.len() < 5 {
                    self.failed.push(match other {
                        Ok(answer) => format!("{} {}", answer.status(), answer.body().trim()),
                        Err(e) => e,
                    });
                }
            }
        }
    }

    /// Adds `other`'s counts to these.
    pub fn merge(&mut self, other: Self) {
        self.requests += other.requests;
        self.failures += other.failures;
        self.failed.extend(other.failed);
        self.failed.truncate(5);
        for (backend, n) in other.by_backend {
            *self.by_backend.entry(backend).or_default() += n;
        }
        for (backend, at) in other.first_seen {
            let first = self.first_seen.entry(backend).or_insert(at);
            *first = (*first).min(at);
        }
        self.worst = self.worst.max(other.worst);
        self.last_failure = self.last_failure.max(other.last_failure);
    }

    /// 200 answers from `backend`.
    pub fn count(&self, backend: &str) -> u64 {
        self.by_backend.get(backend).copied().unwrap_or(0)
    }

    /// `backend`'s share of the 200 answers, in percent.
    pub fn share(&self, backend: &str) -> f64 {
        let ok: u64 = self.by_backend.values().sum();
        if ok == 0 {
            0.0
        } else {
            self.count(backend) as f64 * 100.0 / ok as f64
        }
    }
}

impl fmt::Display for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} requests, {} failed", self.requests, self.failures)?;
        if !self.worst.is_zero() {
            write!(
                f,
                ", worst latency {:.1} ms",
                self.worst.as_secs_f64() * 1e3
            )?;
        }
        f.write_str(";")?;
        for (backend, n) in &self.by_backend {
            write!(f, " {backend} {n} ({:.1}%)", self.share(backend))?;
        }
        if !self.failed.is_empty() {
            write!(f, "; first failures: {:?}", self.failed)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Said(StatusCode, Option<&'static str>);

    impl Answer for Said {
        fn status(&self) -> StatusCode {
            self.0
        }
        fn backend(&self) -> Option<&str> {
            self.1
        }
        fn body(&self) -> &str {
            "busy\n"
        }
    }

    #[test]
    fn oks_count_by_backend_and_everything_else_as_a_failure() {
        let mut tally = Tally::default();
        tally.record(Ok(Said(StatusCode::OK, Some("a"))));
        tally.record(Ok(Said(StatusCode::OK, Some("a"))));
        tally.record(Ok(Said(StatusCode::OK, Some("b"))));
        tally.record(Ok(Said(StatusCode::OK, None)));
        tally.record(Ok(Said(StatusCode::SERVICE_UNAVAILABLE, Some("a"))));
        tally.record(Err::<Said, _>("connection reset".to_owned()));
        assert_eq!((tally.requests, tally.failures), (6, 2));
        assert_eq!(tally.count("a"), 2);
        assert_eq!(tally.count("(no x-backend)"), 1);
        assert_eq!(tally.share("b"), 25.0);
        assert_eq!(
            tally.failed,
            ["503 Service Unavailable busy", "connection reset"]
        );
        assert_eq!(
            tally.to_string(),
            "6 requests, 2 failed; (no x-backend) 1 (25.0%) a 2 (50.0%) b 1 (25.0%); \
             first failures: [\"503 Service Unavailable busy\", \"connection reset\"]"
        );
    }

    #[test]
    fn merged_tallies_keep_the_earliest_first_answer_and_at_most_five_failures() {
        let start = Instant::now();
        let later = start + Duration::from_secs(1);
        let (mut one, mut two) = (Tally::default(), Tally::default());
        one.record_sent(Ok(Said(StatusCode::OK, Some("a"))), later);
        two.record_sent(Ok(Said(StatusCode::OK, Some("a"))), start);
        for _ in 0..4 {
            one.record_sent(Err::<Said, _>("one".to_owned()), start);
            two.record_sent(Err::<Said, _>("two".to_owned()), later);
        }
        one.merge(two);
        assert_eq!((one.requests, one.failures), (10, 8));
        assert_eq!(one.first_seen["a"], start);
        assert_eq!(one.last_failure, Some(later));
        assert_eq!(one.failed.len(), 5);
        assert_eq!(one.share("a"), 100.0);
    }

    #[test]
    fn nothing_answered_is_no_share() {
        assert_eq!(Tally::default().share("a"), 0.0);
    }
}
