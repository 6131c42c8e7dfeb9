//! Kubernetes mode: pools arrive from the controller over the JSON channel (see
//! `weir_api::channel`), and reports go back.
//!
//! The data plane needs no Kubernetes client: one long-lived HTTP request brings
//! newline-delimited updates, and a small POST every second (when something changed, else
//! every ten) reports what was applied and how the targets look. When the controller is
//! unreachable the data plane keeps serving its last good configuration and reconnects with
//! capped, jittered backoff, naming the last revision it applied so it gets only what it missed.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::{Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use weir_api::channel::{
    AppliedPool, ChannelPool, PoolHealth, REPORT_PATH, RejectedPool, Report, STREAM_PATH, Update,
    encode_query_value,
};
use weir_api::{Pool, PoolsFile};

use crate::state::State;

/// Longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// First wait after a failed connection.
const BASE_BACKOFF: Duration = Duration::from_millis(100);
/// Silence after which the stream counts as dead; the controller sends heartbeats more often.
const STREAM_SILENCE: Duration = Duration::from_secs(45);
/// Longest update line accepted, so a broken peer cannot grow the buffer without end.
const MAX_LINE: usize = 64 * 1024 * 1024;
/// How often a changed report is sent, and how often an unchanged one is repeated.
const REPORT_EVERY: Duration = Duration::from_secs(1);
const REPORT_REPEAT: Duration = Duration::from_secs(10);

/// Where the controller is and how to talk to it.
#[derive(Clone, Debug)]
pub struct ChannelSettings {
    /// The controller's base URL (`http://host:port`).
    pub controller: Uri,
    /// The bearer token, read anew for every connection (projected tokens rotate).
    pub token: Token,
    /// This data plane's identity in reports (its pod name).
    pub data_plane: String,
    /// Label selector limiting the pools this data plane serves, passed to the controller.
    pub selector: Option<String>,
}

/// Where the bearer token comes from.
#[derive(Clone, Debug)]
pub enum Token {
    /// A file, such as a projected ServiceAccount token.
    File(PathBuf),
    /// A fixed token, for standalone setups.
    Static(String),
    /// No authentication.
    None,
}

/// The pools received from the controller, as this data plane holds them.
#[derive(Debug, Default)]
pub struct Received {
    /// Last revision applied.
    pub revision: u64,
    /// Pools in force by name, with the generation they came from.
    pub pools: BTreeMap<String, ReceivedPool>,
    /// Pools refused, by name; the last good version of each, if any, stays in `pools`.
    pub rejected: BTreeMap<String, RejectedPool>,
}

/// A pool in force, as received from the controller.
#[derive(Clone, Debug, PartialEq)]
pub struct ReceivedPool {
    /// `metadata.generation` of the `LoadBalancerPool` it was compiled from.
    pub generation: i64,
    /// The pool, shared with the configuration compiled from it: while it stays the same
    /// `Arc`, its compiled state (balancer position, hash tables) is kept without comparing
    /// it to anything.
    pub pool: Arc<Pool>,
}

/// Why the stream must be reopened.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// The controller could not be reached.
    #[error("cannot reach the controller at {0}: {1}")]
    Connect(String, std::io::Error),
    /// The HTTP exchange failed.
    #[error("HTTP exchange with the controller failed: {0}")]
    Http(#[from] hyper::Error),
    /// The controller refused the stream.
    #[error("the controller answered {0}: {1}")]
    Refused(StatusCode, String),
    /// The token file could not be read.
    #[error("cannot read the token file {0}: {1}")]
    Token(PathBuf, std::io::Error),
    /// A line was not an update.
    #[error("invalid update from the controller: {0}")]
    Invalid(#[from] serde_json::Error),
    /// An update skipped a revision: something was missed.
    #[error("update for revision {got} after revision {had}: reconnecting to catch up")]
    Gap {
        /// Revision held.
        had: u64,
        /// Revision received.
        got: u64,
    },
    /// Nothing arrived for too long.
    #[error("no update or heartbeat for {0:?}")]
    Silent(Duration),
    /// The controller closed the stream.
    #[error("the controller closed the stream")]
    Closed,
    /// The controller URL is unusable.
    #[error("invalid controller URL {0}: it needs http://host:port")]
    Url(String),
}

impl Received {
    /// Applies one update. Returns whether the pools in force changed. A pool that fails
    /// validation, or claims a route another pool has, is refused: recorded with its reason
    /// for the report, while its last good version (if any) keeps serving.
    pub fn apply(&mut self, update: Update) -> Result<bool, ChannelError> {
        let revision = update.revision();
        match update {
            Update::Heartbeat { .. } => Ok(false),
            Update::Snapshot { pools, .. } => {
                let previous = std::mem::take(&mut self.pools);
                self.rejected.clear();
                for incoming in pools {
                    let name = incoming.pool.name.clone();
                    let keep = previous.get(&name).cloned();
                    self.upsert(incoming, keep);
                }
                self.revision = revision;
                Ok(true)
            }
            Update::Pool { pool, .. } => {
                self.check_order(revision)?;
                let keep = self.pools.get(&pool.pool.name).cloned();
                let changed = self.upsert(*pool, keep);
                self.revision = revision;
                Ok(changed)
            }
            Update::Removed { name, .. } => {
                self.check_order(revision)?;
                self.rejected.remove(&name);
                let changed = self.pools.remove(&name).is_some();
                self.revision = revision;
                Ok(changed)
            }
        }
    }

    fn check_order(&self, revision: u64) -> Result<(), ChannelError> {
        if revision != self.revision + 1 {
            return Err(ChannelError::Gap {
                had: self.revision,
                got: revision,
            });
        }
        Ok(())
    }

    /// Puts `incoming` in force unless it is invalid, in which case `keep` (its last good
    /// version) stays. Returns whether the pools in force changed.
    fn upsert(&mut self, incoming: ChannelPool, keep: Option<ReceivedPool>) -> bool {
        let name = incoming.pool.name.clone();
        let problem = incoming
            .pool
            .validate()
            .err()
            .map(|e| e.to_string())
            .or_else(|| self.route_conflict(&incoming.pool));
        match problem {
            None => {
                self.rejected.remove(&name);
                // A pool sent again as it was (a snapshot after a reconnect, a new generation
                // that compiles the same) stays the Arc in force: one comparison here, of
                // this pool alone, spares recompiling it.
                let pool = match keep {
                    Some(kept) if *kept.pool == incoming.pool => kept.pool,
                    _ => Arc::new(incoming.pool),
                };
                let generation = incoming.generation;
                self.pools.insert(name, ReceivedPool { generation, pool });
                true
            }
            Some(reason) => {
                tracing::warn!(pool = %name, generation = incoming.generation, %reason, "pool refused; keeping its last good version");
                self.rejected.insert(
                    name.clone(),
                    RejectedPool {
                        name: name.clone(),
                        generation: incoming.generation,
                        reason,
                    },
                );
                match keep {
                    Some(good) => {
                        self.pools.insert(name, good);
                        false
                    }
                    None => false,
                }
            }
        }
    }

    fn route_conflict(&self, pool: &Pool) -> Option<String> {
        self.pools
            .values()
            .filter(|other| other.pool.name != pool.name)
            .find_map(|other| {
                let clash = pool.routes.iter().find(|r| other.pool.routes.contains(r))?;
                Some(format!(
                    "host {:?} with pathPrefix {:?} is already routed to pool {}",
                    clash.host, clash.path_prefix, other.pool.name
                ))
            })
    }

    /// The pools in force, shared with the configuration compiled from them.
    pub fn pools(&self) -> Vec<Arc<Pool>> {
        self.pools.values().map(|p| p.pool.clone()).collect()
    }

    /// A copy of the pools in force as a pools file, to check them as one.
    pub fn pools_file(&self) -> PoolsFile {
        PoolsFile {
            pools: self.pools.values().map(|p| Pool::clone(&p.pool)).collect(),
        }
    }

    /// What this data plane reports: revision, generations in force, refusals, health.
    pub fn report(&self, settings: &ChannelSettings, state: &State) -> Report {
        let now = tokio::time::Instant::now();
        let snapshot = state.snapshot.load();
        let health = snapshot
            .pools
            .iter()
            .map(|p| {
                let (mut healthy, mut unhealthy) = (Vec::new(), Vec::new());
                for t in &p.targets {
                    match t.state(now) {
                        "healthy" | "slow-start" => healthy.push(t.stats.address),
                        _ => unhealthy.push(t.stats.address),
                    }
                }
                PoolHealth {
                    name: p.config.name.clone(),
                    healthy,
                    unhealthy,
                }
            })
            .collect();
        Report {
            data_plane: settings.data_plane.clone(),
            selector: settings.selector.clone().unwrap_or_default(),
            revision: self.revision,
            applied: self
                .pools
                .values()
                .map(|p| AppliedPool {
                    name: p.pool.name.clone(),
                    generation: p.generation,
                })
                .collect(),
            rejected: self.rejected.values().cloned().collect(),
            health,
        }
    }
}

/// Follows the controller's stream for as long as the process runs: applies what arrives,
/// reconnects after failures with capped full-jitter backoff, and marks the data plane ready
/// once the first state is in force.
pub async fn follow(settings: ChannelSettings, state: Arc<State>, received: Arc<Mutex<Received>>) {
    let mut failures = 0u32;
    loop {
        match stream_once(&settings, &state, &received).await {
            Ok(()) => failures = 0,
            Err(e) => {
                failures = failures.saturating_add(1);
                let revision = lock(&received).revision;
                tracing::warn!(error = %e, revision, "controller stream lost; serving the last good configuration");
            }
        }
        let ceiling = BASE_BACKOFF
            .saturating_mul(1 << failures.min(8))
            .min(MAX_BACKOFF);
        tokio::time::sleep(ceiling.mul_f64(fastrand::f64())).await;
    }
}

/// One connection: open the stream, apply updates until it breaks.
async fn stream_once(
    settings: &ChannelSettings,
    state: &State,
    received: &Mutex<Received>,
) -> Result<(), ChannelError> {
    let since = lock(received).revision;
    let mut query = format!(
        "{STREAM_PATH}?dataPlane={}",
        encode_query_value(&settings.data_plane)
    );
    if since > 0 {
        query.push_str(&format!("&since={since}"));
    }
    if let Some(selector) = &settings.selector {
        query.push_str(&format!("&selector={}", encode_query_value(selector)));
    }
    let response = exchange(settings, Method::GET, &query, Bytes::new()).await?;
    if response.status() != StatusCode::OK {
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        return Err(ChannelError::Refused(
            status,
            String::from_utf8_lossy(&body).trim().to_owned(),
        ));
    }
    tracing::info!(controller = %settings.controller, since, "following the controller");
    let mut body = response.into_body();
    let mut buffer = BytesMut::new();
    loop {
        let frame = match tokio::time::timeout(STREAM_SILENCE, body.frame()).await {
            Err(_) => return Err(ChannelError::Silent(STREAM_SILENCE)),
            Ok(None) => return Err(ChannelError::Closed),
            Ok(Some(frame)) => frame?,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        buffer.extend_from_slice(&data);
        if buffer.len() > MAX_LINE {
            return Err(ChannelError::Refused(
                StatusCode::PAYLOAD_TOO_LARGE,
                "an update line is too long".into(),
            ));
        }
        // Everything complete in this chunk is applied as one configuration change.
        let mut changed = false;
        while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
            let line = buffer.split_to(end + 1);
            let line = line.chunk().trim_ascii();
            if line.is_empty() {
                continue;
            }
            let update: Update = serde_json::from_slice(line)?;
            changed |= lock(received).apply(update)?;
        }
        if changed {
            let (pools, revision) = {
                let r = lock(received);
                (r.pools(), r.revision)
            };
            let count = pools.len();
            state.apply(&pools);
            tracing::info!(
                revision,
                pools = count,
                "configuration from the controller applied"
            );
        }
        if lock(received).revision > 0 || changed {
            state.set_ready();
        }
    }
}

/// Posts reports to the controller: at most every second when something changed, and every
/// ten seconds regardless, as a heartbeat.
pub async fn report(settings: ChannelSettings, state: Arc<State>, received: Arc<Mutex<Received>>) {
    let mut last: Option<(Report, tokio::time::Instant)> = None;
    let mut tick = tokio::time::interval(REPORT_EVERY);
    loop {
        tick.tick().await;
        let report = lock(&received).report(&settings, &state);
        let due = match &last {
            None => true,
            Some((previous, at)) => *previous != report || at.elapsed() >= REPORT_REPEAT,
        };
        if !due {
            continue;
        }
        let body = Bytes::from(serde_json::to_vec(&report).expect("a report serializes"));
        match exchange(&settings, Method::POST, REPORT_PATH, body).await {
            Ok(r) if r.status().is_success() => last = Some((report, tokio::time::Instant::now())),
            Ok(r) => tracing::warn!(status = %r.status(), "the controller refused a report"),
            Err(e) => tracing::debug!(error = %e, "cannot report to the controller"),
        }
    }
}

/// One request to the controller on a fresh connection; the stream keeps its connection
/// for hours, and reports are too rare to be worth pooling.
async fn exchange(
    settings: &ChannelSettings,
    method: Method,
    path_and_query: &str,
    body: Bytes,
) -> Result<http::Response<hyper::body::Incoming>, ChannelError> {
    let url = &settings.controller;
    let host = url
        .host()
        .ok_or_else(|| ChannelError::Url(url.to_string()))?;
    if url.scheme_str() != Some("http") {
        return Err(ChannelError::Url(url.to_string()));
    }
    let port = url.port_u16().unwrap_or(80);
    let authority = url
        .authority()
        .map(|a| a.as_str().to_owned())
        .unwrap_or_default();
    let stream = TcpStream::connect((host.trim_matches(['[', ']']), port))
        .await
        .map_err(|e| ChannelError::Connect(authority.clone(), e))?;
    let _ = stream.set_nodelay(true);
    let (mut sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let mut request = Request::builder()
        .method(method)
        .uri(path_and_query)
        .header(header::HOST, authority)
        .header(
            header::USER_AGENT,
            concat!("weir-dataplane/", env!("CARGO_PKG_VERSION")),
        )
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(token) = token(&settings.token)? {
        request = request.header(header::AUTHORIZATION, format!("Bearer {}", token.trim()));
    }
    let request = request
        .body(Full::new(body))
        .map_err(|_| ChannelError::Url(url.to_string()))?;
    Ok(sender.send_request(request).await?)
}

fn token(source: &Token) -> Result<Option<String>, ChannelError> {
    match source {
        Token::None => Ok(None),
        Token::Static(t) => Ok(Some(t.clone())),
        Token::File(path) => std::fs::read_to_string(path)
            .map(Some)
            .map_err(|e| ChannelError::Token(path.clone(), e)),
    }
}

fn lock(received: &Mutex<Received>) -> MutexGuard<'_, Received> {
    received.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests;
