//! Active health checks: one task per target probing `GET path` on a fresh connection.
//!
//! A fresh connection per probe (as HAProxy does by default) tests what a new request would
//! meet, accept queue included, and keeps probes out of the request pool's accounting.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, header};
use http_body_util::Empty;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use weir_api::HealthCheck;

use crate::health::TargetHealth;

/// A running checker; dropping it stops the checks.
#[derive(Debug)]
pub struct Checker {
    /// The configuration it runs with.
    pub config: HealthCheck,
    task: JoinHandle<()>,
}

impl Checker {
    /// Starts checking `address` under `config`, reporting into `health`. The first probe
    /// waits a random part of the interval, so a pool's targets are not probed all at once.
    pub fn spawn(address: SocketAddr, config: HealthCheck, health: Arc<TargetHealth>) -> Self {
        let check = config.clone();
        let task = tokio::spawn(async move {
            let interval = check.interval.get();
            tokio::time::sleep(interval.mul_f64(fastrand::f64())).await;
            loop {
                let passed = probe(address, &check).await;
                health.probe(passed, Instant::now());
                tokio::time::sleep(jittered(interval)).await;
            }
        });
        Self { config, task }
    }
}

impl Drop for Checker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `interval` give or take 10%, so probes of many targets drift apart instead of bunching.
fn jittered(interval: Duration) -> Duration {
    interval.mul_f64(0.9 + 0.2 * fastrand::f64())
}

/// One probe: passes when `GET path` answers an expected status within the timeout.
pub async fn probe(address: SocketAddr, check: &HealthCheck) -> bool {
    let exchange = async {
        let stream = TcpStream::connect(address).await.ok()?;
        let _ = stream.set_nodelay(true);
        let (mut sender, connection) = http1::handshake(TokioIo::new(stream)).await.ok()?;
        tokio::spawn(connection);
        let request = Request::get(check.path.as_str())
            .header(header::HOST, address.to_string())
            .header(header::USER_AGENT, "weir-health-check")
            .header(header::CONNECTION, "close")
            .body(Empty::<Bytes>::new())
            .ok()?;
        let response = sender.send_request(request).await.ok()?;
        Some(response.status().as_u16())
    };
    match tokio::time::timeout(check.timeout.get(), exchange).await {
        Ok(Some(status)) => check.expected_statuses.iter().any(|r| r.contains(status)),
        _ => false,
    }
}
