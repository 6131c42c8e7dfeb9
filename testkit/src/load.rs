//! Bounded load: closed-loop clients and an open-loop rate.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Method;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::http::{connector, http1, send};
use crate::tally::Tally;

/// When a load run stops.
#[derive(Clone, Copy, Debug)]
pub enum Stop {
    /// After this many requests in all.
    After(usize),
    /// When this instant passes.
    At(Instant),
}

/// GETs `url` from `clients` concurrent clients, each on its own kept-alive connection, until
/// `stop`, and tallies the answers.
pub async fn load(url: String, clients: usize, stop: Stop) -> Tally {
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..clients {
        let url = url.clone();
        let share = match stop {
            Stop::After(total) => total / clients + usize::from(i < total % clients),
            Stop::At(_) => usize::MAX,
        };
        tasks.spawn(async move {
            let client = http1();
            let mut tally = Tally::default();
            for _ in 0..share {
                if let Stop::At(end) = stop {
                    if Instant::now() >= end {
                        break;
                    }
                }
                let sent = Instant::now();
                let result = send(&client, Method::GET, &url, &[], "").await;
                tally.record_sent(result, sent);
            }
            tally
        });
    }
    let mut total = Tally::default();
    while let Some(tally) = tasks.join_next().await {
        total.merge(tally.expect("a load client panicked"));
    }
    total
}

/// GETs `url` at a fixed `rate` per second for `duration`, whatever the answers take (up to
/// `max_in_flight` at once), as an open-loop load generator does, and tallies the answers.
pub async fn load_at_rate(
    url: String,
    rate: u32,
    duration: Duration,
    max_in_flight: usize,
) -> Tally {
    let client = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(max_in_flight)
        .build(connector());
    let limit = Arc::new(tokio::sync::Semaphore::new(max_in_flight));
    let mut tick = tokio::time::interval(Duration::from_secs(1) / rate);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let end = Instant::now() + duration;
    let mut tasks = tokio::task::JoinSet::new();
    while Instant::now() < end {
        tick.tick().await;
        let permit = limit
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let (client, url) = (client.clone(), url.clone());
        tasks.spawn(async move {
            let sent = Instant::now();
            let result = send(&client, Method::GET, &url, &[], "").await;
            drop(permit);
            (result, sent)
        });
    }
    let mut tally = Tally::default();
    while let Some(done) = tasks.join_next().await {
        let (result, sent) = done.expect("a load request panicked");
        tally.record_sent(result, sent);
    }
    tally
}
