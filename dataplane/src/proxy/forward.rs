//! Forwarding one routed request: the pool's request limit, the head rewritten, the body
//! read or streamed, then tries until one answers or the request fails ([`Attempts`]).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::header::HeaderValue;
use http::{Request, Response};
use http_body::Body;
use http_body_util::BodyExt;
use tokio::time::Instant;

use super::attempts::{self, Attempts, Next, Pending, Sent};
use super::head::{self, Head, Peer};
use super::respond::respond;
use super::select::select;
use crate::body::{BodyEnded, BoxError, ClientBody, ResponseBody};
use crate::error::ProxyError;
use crate::headers;
use crate::settings::ProxySettings;
use crate::state::PoolState;
use crate::stats::InFlight;
use crate::upstream::{ConnectionLimits, Limit};

/// What [`forward`] leaves behind for the access log: tries, the last target and how long it
/// took, the body bytes read from the client.
#[derive(Debug, Default)]
pub struct Trail {
    /// Tries made.
    pub attempts: u32,
    /// The last try's target.
    pub target: Option<SocketAddr>,
    /// How long the last try took.
    pub upstream: Option<std::time::Duration>,
    buffered: u64,
    streamed: Option<Arc<BodyEnded>>,
    /// Whether to keep the `traceparent` sent (only when there is a log to write it to).
    traceparent: bool,
    /// The `traceparent` sent, when kept.
    pub traceparent_value: Option<HeaderValue>,
}

impl Trail {
    /// An empty trail; `traceparent` keeps the `traceparent` sent.
    pub fn new(traceparent: bool) -> Self {
        Self {
            traceparent,
            ..Self::default()
        }
    }

    /// Body bytes read from the client.
    pub fn bytes_in(&self) -> u64 {
        self.streamed
            .as_ref()
            .map_or(self.buffered, |b| b.bytes.load(Ordering::Relaxed))
    }
}

/// Forwards `req`, routed to `pool`, that arrived at `arrived`: the target's response, or
/// why there is none.
pub async fn forward<B>(
    settings: &ProxySettings,
    pool: &PoolState,
    mut req: Request<B>,
    peer: &Peer,
    request_id: &HeaderValue,
    arrived: Instant,
    trail: &mut Trail,
) -> Result<Response<ResponseBody>, ProxyError>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let breaker = &pool.config.circuit_breaker;
    let pool_request = pool
        .stats
        .enter(breaker.max_requests)
        .ok_or(ProxyError::Overflow(Limit::MaxRequests))?;
    let limits = ConnectionLimits {
        max_connections: u64::from(breaker.max_connections),
        max_pending: u64::from(breaker.max_pending_requests),
    };
    let upgrade = head::is_upgrade(&req);
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (parts, body) = req.into_parts();
    let head = Head::new(
        parts,
        peer,
        settings,
        pool.config.upstream.protocol,
        upgrade,
    );
    if trail.traceparent {
        trail.traceparent_value = head.parts.headers.get(&headers::TRACEPARENT).cloned();
    }

    let policy = &pool.config.retries;
    if policy.attempts > 1 {
        pool.stats.retry_budget.deposit(arrived);
    }
    let replay_after_send = attempts::replays_after_send(policy, &head.parts.method, upgrade);
    let mut client_body = ClientBody::new(
        body,
        settings.max_body_bytes,
        settings.body_read_timeout.get(),
    );
    let mut body_ended = None;
    let body = match client_body.size_hint().upper() {
        Some(len) if replay_after_send && len <= policy.max_buffer_bytes => Pending::Buffered(
            client_body
                .collect()
                .await
                .map_err(|e| ProxyError::from_client_body(&e))?
                .to_bytes(),
        ),
        _ if client_body.is_end_stream() => Pending::Buffered(Bytes::new()),
        _ => {
            let ended = client_body.watch_end();
            trail.streamed = Some(ended.clone());
            body_ended = Some(ended);
            Pending::Stream(client_body)
        }
    };
    if let Pending::Buffered(bytes) = &body {
        trail.buffered = bytes.len() as u64;
    }
    let mut attempts = Attempts::new(pool, head, body, replay_after_send, Instant::now());
    loop {
        let now = Instant::now();
        let offer = select(
            pool,
            attempts.headers(),
            peer.addr.ip(),
            now,
            attempts.tried(),
        )?;
        let (request, per_try) = attempts.start(offer.index, now);
        let target = &pool.targets[offer.index];
        (trail.attempts, trail.target) = (attempts.count(), Some(target.stats.address));
        let in_flight = InFlight::start(target.stats.clone());
        // Pinned here and raced by reference: moved into `within`, the send future would be
        // laid out twice in this one (once as the argument, once in the timer), and this
        // future is copied whole once per request.
        let send = std::pin::pin!(target.client.send(request, limits));
        let sent = match within(per_try, body_ended.as_deref(), send).await {
            Ok(Ok((response, checkout))) => Sent::Answered {
                status: response.status().as_u16(),
                response: (response, checkout),
            },
            Ok(Err(e)) => Sent::Failed(e),
            Err(()) => Sent::TimedOut,
        };
        let done = Instant::now();
        trail.upstream = Some(done.saturating_duration_since(now));
        match attempts.settle(offer.index, done, sent) {
            Next::Respond((response, checkout)) => {
                pool.stats.latency.observe(arrived.elapsed());
                let in_flight = in_flight.hold(pool_request);
                return Ok(respond(
                    response,
                    checkout,
                    in_flight,
                    offer.set_cookie,
                    request_id,
                    client_upgrade,
                ));
            }
            Next::Fail(e) => return Err(e),
            Next::RetryAfter(wait) => {
                drop(in_flight);
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// Runs `send` for at most `limit`; with a streamed client body, the clock starts when the
/// client has sent all of it.
async fn within<F: Future>(
    limit: std::time::Duration,
    body_ended: Option<&BodyEnded>,
    mut send: Pin<&mut F>,
) -> Result<F::Output, ()> {
    let Some(ended) = body_ended else {
        return tokio::time::timeout(limit, send).await.map_err(drop);
    };
    tokio::select! {
        out = &mut send => Ok(out),
        () = async { ended.wait().await; tokio::time::sleep(limit).await } => Err(()),
    }
}
