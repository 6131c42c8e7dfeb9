//! Bounded waits for what happens in another process.

use std::future::Future;
use std::time::{Duration, Instant};

/// Polls `check` every 50 ms until it gives a value, for at most `bound`; returns the value
/// and how long it took.
///
/// # Panics
/// After `bound`, with `what` and the last thing `check` said.
pub async fn eventually<T, F, Fut>(what: &str, bound: Duration, mut check: F) -> (T, Duration)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let started = Instant::now();
    loop {
        match check().await {
            Ok(value) => return (value, started.elapsed()),
            Err(last) if started.elapsed() >= bound => {
                panic!("{what}: not within {bound:?}; last: {last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}
