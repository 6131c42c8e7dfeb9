//! One request through the proxy: check, route, pick, rewrite, forward, answer.

use http_body_util::BodyExt;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use tokio::time::Instant;

use http::header::{self, HeaderMap, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use weir_api::{RetryOn, UpstreamProtocol};

use crate::access_log;
use crate::affinity;
use crate::balance::{Load, Pick};
use crate::body::{BodyEnded, ClientBody, RequestBody, ResponseBody};
use crate::error::{Counted, Fault, ProxyError, Retry};
use crate::hash::stable_hash;
use crate::headers::{self, X_REQUEST_ID};
use crate::health::Outcome;
use crate::retry::{self, Failure, is_idempotent};
use crate::settings::ProxySettings;
use crate::state::{Affinity, Candidates, PoolState, State};
use crate::stats::InFlight;
use crate::upstream::{Checkout, ConnectionLimits, Limit, SendError, UpstreamError};
use crate::validate;

/// The downstream connection a request arrived on.
#[derive(Clone, Debug)]
pub struct Peer {
    /// The client's address.
    pub addr: SocketAddr,
    /// The client's IP as a header value, for `X-Forwarded-For`.
    pub ip_header: HeaderValue,
}

impl Peer {
    /// The connection from `addr`.
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            ip_header: headers::peer_value(addr.ip()),
        }
    }
}

/// Serves one downstream request from `peer`. Never fails: every error becomes a response.
pub async fn serve(
    state: &State,
    mut req: Request<Incoming>,
    peer: &Peer,
) -> Response<ResponseBody> {
    let arrived = Instant::now();
    let request_id = headers::ensure_request_id(req.headers_mut());
    // Until the request ends otherwise, it is one whose client left: dropped with this
    // future, the entry says so.
    let mut log = state
        .access_log
        .as_ref()
        .map(|log| access_log::Pending::new(log.clone(), arrived, entry(&req, &request_id, peer)));
    if let Err(e) = validate::check(&state.settings, &req) {
        state.listener.rejected.fetch_add(1, Ordering::Relaxed);
        return answer(e, &request_id, log);
    }
    let snapshot = state.snapshot.load_full();
    let routed = snapshot
        .router
        .find(request_host(&req).unwrap_or(""), req.uri().path());
    let Some(pool) = routed.map(|i| &snapshot.pools[i]) else {
        state.listener.unrouted.fetch_add(1, Ordering::Relaxed);
        return answer(ProxyError::NoRoute, &request_id, log);
    };
    pool.stats.requests.fetch_add(1, Ordering::Relaxed);
    if let Some(log) = &mut log {
        log.entry().pool = Some(pool.config.name.clone());
    }
    let mut trail = Trail {
        traceparent: log.is_some(),
        ..Trail::default()
    };
    let forwarded = forward(
        &state.settings,
        pool,
        req,
        peer,
        &request_id,
        arrived,
        &mut trail,
    )
    .await;
    if let Some(log) = &mut log {
        let e = log.entry();
        (e.target, e.attempts, e.upstream) = (trail.target, trail.attempts, trail.upstream);
        e.traceparent = trail.traceparent_value.take();
        e.bytes_in = trail.bytes_in();
    }
    match forwarded {
        Ok(mut response) => {
            let failed = response.status().is_server_error();
            if failed {
                pool.stats.failed.fetch_add(1, Ordering::Relaxed);
            }
            if let Some(mut log) = log {
                log.entry().status = response.status().as_u16();
                log.entry().error = None;
                if !failed && !sampled(pool) {
                    log.discard();
                } else if response.body().is_end_stream() {
                    // No body (204, HEAD, a tunnel's 101): the request has ended.
                    log.finish(true);
                } else if let ResponseBody::Upstream { log: slot, .. } = response.body_mut() {
                    *slot = Some(log.streaming());
                } else {
                    log.finish(true);
                }
            }
            response
        }
        Err(e) => {
            let errors = &pool.stats.proxy_errors;
            let counter = match e.counted() {
                Counted::BadGateway => &errors.bad_gateway,
                Counted::Unavailable => &errors.unavailable,
                Counted::Timeout => &errors.timeout,
                Counted::Client => &errors.client,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            if e.fault() != Fault::Client {
                pool.stats.failed.fetch_add(1, Ordering::Relaxed);
            } else if e.status() != crate::error::CLIENT_CLOSED_REQUEST {
                tracing::debug!(pool = %pool.config.name, error = %e, "refused a client's request");
            }
            pool.stats.latency.observe(arrived.elapsed());
            answer(e, &request_id, log)
        }
    }
}

/// The proxy's own answer to a request, logged whatever the pool's sampling: it is a
/// failure, or a refusal, that someone will want to find.
fn answer(
    e: ProxyError,
    request_id: &HeaderValue,
    log: Option<access_log::Pending>,
) -> Response<ResponseBody> {
    let reason = e.reason();
    let response = e.into_response(Some(request_id));
    if let Some(mut log) = log {
        let entry = log.entry();
        entry.status = response.status().as_u16();
        entry.error = Some(reason);
        entry.bytes_out = response.body().size_hint().exact().unwrap_or(0);
        log.finish(true);
    }
    response
}

/// Whether a pool's request that did not fail goes to the access log.
fn sampled(pool: &PoolState) -> bool {
    match &pool.config.access_log {
        None => true,
        Some(log) => log.sample_percent >= 100 || fastrand::u32(0..100) < log.sample_percent,
    }
}

/// The access-log entry of a request as it arrived.
fn entry(req: &Request<Incoming>, request_id: &HeaderValue, peer: &Peer) -> access_log::Entry {
    access_log::Entry {
        time: std::time::SystemTime::now(),
        request_id: request_id.clone(),
        traceparent: None,
        client: peer.addr,
        method: req.method().clone(),
        host: match req.uri().authority() {
            Some(a) => HeaderValue::from_str(a.as_str()).ok(),
            None => req.headers().get(header::HOST).cloned(),
        },
        uri: req.uri().clone(),
        status: crate::error::CLIENT_CLOSED_REQUEST.as_u16(),
        pool: None,
        target: None,
        attempts: 0,
        bytes_in: 0,
        bytes_out: 0,
        duration: std::time::Duration::ZERO,
        upstream: None,
        error: Some(ProxyError::ClientGone.reason()),
    }
}

/// What [`forward`] leaves behind for the access log: tries, the last target and how long it
/// took, the body bytes read from the client.
#[derive(Debug, Default)]
struct Trail {
    attempts: u32,
    target: Option<SocketAddr>,
    upstream: Option<std::time::Duration>,
    buffered: u64,
    streamed: Option<std::sync::Arc<BodyEnded>>,
    /// Whether to keep the `traceparent` sent (only when there is a log to write it to).
    traceparent: bool,
    traceparent_value: Option<HeaderValue>,
}

impl Trail {
    fn bytes_in(&self) -> u64 {
        self.streamed
            .as_ref()
            .map_or(self.buffered, |b| b.bytes.load(Ordering::Relaxed))
    }
}

/// The host a request is for: the URI's authority (HTTP/2, absolute-form) or `Host`.
fn request_host<B>(req: &Request<B>) -> Option<&str> {
    match req.uri().authority() {
        Some(a) => Some(a.as_str()),
        None => req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok()),
    }
}

async fn forward(
    settings: &ProxySettings,
    pool: &PoolState,
    mut req: Request<Incoming>,
    peer: &Peer,
    request_id: &HeaderValue,
    arrived: Instant,
    trail: &mut Trail,
) -> Result<Response<ResponseBody>, ProxyError> {
    let breaker = &pool.config.circuit_breaker;
    let pool_request = pool
        .stats
        .enter(breaker.max_requests)
        .ok_or(ProxyError::Overflow(Limit::MaxRequests))?;
    let limits = ConnectionLimits {
        max_connections: u64::from(breaker.max_connections),
        max_pending: u64::from(breaker.max_pending_requests),
    };
    let upgrade = is_upgrade(&req);
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();

    let host = match parts.uri.authority() {
        Some(a) => HeaderValue::from_str(a.as_str()).ok(),
        None => parts.headers.get(header::HOST).cloned(),
    };
    let headers = &mut parts.headers;
    headers::strip_hop_by_hop(headers, upgrade);
    headers::set_forwarded(
        headers,
        &peer.ip_header,
        settings.trusted_hops,
        "http",
        host.as_ref(),
    );
    headers::ensure_trace(headers);
    if trail.traceparent {
        trail.traceparent_value = headers.get(&headers::TRACEPARENT).cloned();
    }
    let protocol = pool.config.upstream.protocol;
    // HTTP/2 targets read the host from :authority; the connection is already chosen, so it
    // carries the client's host (or, without one, the target's address).
    let h2_authority = match protocol {
        UpstreamProtocol::Http1 => None,
        UpstreamProtocol::Http2 => host
            .as_ref()
            .and_then(|h| Authority::try_from(h.as_bytes()).ok()),
    };
    // An absolute-form (or HTTP/2) request was routed by its URI's authority, which also
    // replaces any Host the client sent (RFC 9112 §3.2.2), so the target sees that host too.
    if parts.uri.authority().is_some() || !headers.contains_key(header::HOST) {
        if let Some(h) = host {
            headers.insert(header::HOST, h);
        }
    }
    let version = match protocol {
        UpstreamProtocol::Http1 => Version::HTTP_11,
        UpstreamProtocol::Http2 => Version::HTTP_2,
    };

    let policy = &pool.config.retries;
    if policy.attempts > 1 {
        pool.stats.retry_budget.deposit(arrived);
    }
    // A request that never left can always go to another target; one that may have reached
    // its target is replayed only if the policy retries such failures, the method allows it,
    // and its body is buffered.
    let replay_after_send = policy.attempts > 1
        && !upgrade
        && policy
            .retry_on
            .iter()
            .any(|on| *on != RetryOn::ConnectFailure)
        && (is_idempotent(&parts.method) || policy.non_idempotent);
    let mut client_body = ClientBody::new(
        body,
        settings.max_body_bytes,
        settings.body_read_timeout.get(),
    );
    let mut body_ended = None;
    let mut body = match client_body.size_hint().upper() {
        Some(len) if replay_after_send && len <= policy.max_buffer_bytes => Pending::Buffered(
            client_body
                .collect()
                .await
                .map_err(|e| ProxyError::from_client_body(&e))?
                .to_bytes(),
        ),
        _ if client_body.is_end_stream() => Pending::Buffered(bytes::Bytes::new()),
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
    let started = Instant::now();
    let deadline = started + pool.config.timeouts.request.get();
    let mut tried = Tried::default();
    let mut unsent: Option<Request<RequestBody>> = None;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let now = Instant::now();
        let (index, set_cookie) =
            select(pool, &parts.headers, peer.addr.ip(), now, tried.as_slice())?;
        tried.push(index);
        let target = &pool.targets[index];
        (trail.attempts, trail.target) = (attempt, Some(target.stats.address));
        let last_try = attempt >= policy.attempts;
        let request = match unsent.take() {
            Some(request) => {
                let (head, body) = request.into_parts();
                Request::from_parts(head, body.retarget(target.stats.clone()))
            }
            None => {
                let body = match std::mem::replace(&mut body, Pending::Sent) {
                    Pending::Buffered(bytes) => {
                        body = Pending::Buffered(bytes.clone());
                        RequestBody::buffered(bytes, target.stats.clone())
                    }
                    Pending::Stream(client) => RequestBody::stream(client, target.stats.clone()),
                    Pending::Sent => unreachable!("a sent streamed body is never retried"),
                };
                let mut request = Request::new(body);
                *request.method_mut() = parts.method.clone();
                *request.uri_mut() = upstream_uri(
                    h2_authority.clone().or_else(|| {
                        (protocol == UpstreamProtocol::Http2).then(|| target.authority.clone())
                    }),
                    &parts.uri,
                );
                *request.version_mut() = version;
                *request.headers_mut() = if replay_after_send && !last_try {
                    parts.headers.clone()
                } else {
                    std::mem::take(&mut parts.headers)
                };
                request
            }
        };

        let in_flight = InFlight::start(target.stats.clone());
        let per_try = deadline.saturating_duration_since(now);
        let per_try = pool
            .config
            .timeouts
            .per_try
            .map_or(per_try, |p| p.get().min(per_try));
        let sent = within(
            per_try,
            body_ended.as_deref(),
            target.client.send(request, limits),
        )
        .await;
        let done = Instant::now();
        trail.upstream = Some(done.saturating_duration_since(now));
        let (failure, error) = match sent {
            Ok(Ok((response, checkout))) => {
                let status = response.status().as_u16();
                target.stats.record_status(status);
                target
                    .health
                    .record(Outcome::of_status(status), done, || pool.may_eject(done));
                let failure = Failure::Status(status);
                let again =
                    !last_try && failure.listed_in(policy) && matches!(body, Pending::Buffered(_));
                if !again {
                    pool.stats.latency.observe(arrived.elapsed());
                    let in_flight = in_flight.hold(pool_request);
                    return Ok(respond(
                        response,
                        checkout,
                        in_flight,
                        set_cookie,
                        request_id,
                        client_upgrade,
                    ));
                }
                (
                    failure,
                    ProxyError::Upstream {
                        target: target.stats.address,
                        reason: format!("answered {status}"),
                    },
                )
            }
            Ok(Err(SendError {
                error,
                unsent: back,
            })) => {
                if let UpstreamError::Overflow(limit) = error {
                    pool.stats.overflowed(limit);
                    return Err(ProxyError::Overflow(limit));
                }
                let error = ProxyError::from_upstream(target.stats.address, &error);
                if error.fault() != Fault::Target {
                    // The client broke its own request: the target keeps a clean record.
                    return Err(error);
                }
                target.stats.failures.fetch_add(1, Ordering::Relaxed);
                target
                    .health
                    .record(Outcome::GatewayFailure, done, || pool.may_eject(done));
                let failure = if back.is_some() {
                    Failure::ConnectFailure
                } else {
                    Failure::Reset
                };
                if let Some(back) = back {
                    unsent = Some(back);
                } else if matches!(body, Pending::Sent) {
                    // The streamed body is gone with the try: nothing to send again.
                    return Err(error);
                }
                (failure, error)
            }
            Err(_) => {
                target.stats.failures.fetch_add(1, Ordering::Relaxed);
                target
                    .health
                    .record(Outcome::GatewayFailure, done, || pool.may_eject(done));
                (
                    Failure::PerTryTimeout,
                    ProxyError::Timeout(target.stats.address),
                )
            }
        };
        drop(in_flight);
        let resendable = unsent.is_some() || matches!(body, Pending::Buffered(_));
        if last_try
            || !resendable
            || error.retry() == Retry::Never
            || !retry::retryable(policy, failure, &parts.method)
            || done >= deadline
        {
            return Err(if done >= deadline {
                ProxyError::Timeout(target.stats.address)
            } else {
                error
            });
        }
        let granted = pool.stats.retry_budget.try_withdraw(
            done,
            policy.budget_percent,
            policy.min_retries_per_second,
        );
        if !granted {
            pool.stats.retries_refused.fetch_add(1, Ordering::Relaxed);
            return Err(error);
        }
        pool.stats.retries.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(pool = %pool.config.name, target = %target.stats.address, ?failure, attempt, "retrying on another target");
        let wait = retry::backoff(attempt, policy.backoff_base.get(), policy.backoff_max.get());
        tokio::time::sleep(wait.min(deadline.saturating_duration_since(Instant::now()))).await;
    }
}

/// Runs `send` for at most `limit`; with a streamed client body, the clock starts when the
/// client has sent all of it.
async fn within<F: Future>(
    limit: std::time::Duration,
    body_ended: Option<&BodyEnded>,
    send: F,
) -> Result<F::Output, ()> {
    let Some(ended) = body_ended else {
        return tokio::time::timeout(limit, send).await.map_err(drop);
    };
    tokio::pin!(send);
    tokio::select! {
        out = &mut send => Ok(out),
        () = async { ended.wait().await; tokio::time::sleep(limit).await } => Err(()),
    }
}

/// What is left of the request body for the next try.
enum Pending {
    /// Not read yet: goes with the first try.
    Stream(ClientBody),
    /// Read whole: every try sends it.
    Buffered(bytes::Bytes),
    /// Streamed to a target already.
    Sent,
}

/// Targets tried so far; at most `retries.attempts` (10), so a fixed array saves an
/// allocation on every request.
#[derive(Default)]
struct Tried {
    items: [usize; 10],
    len: usize,
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

/// The target's response, turned into the client's: affinity cookie, request id, hop-by-hop
/// fields removed, and either a tunnel (101) or the body streamed through.
fn respond(
    mut response: Response<Incoming>,
    checkout: Option<Checkout<RequestBody>>,
    in_flight: InFlight,
    set_cookie: Option<&HeaderValue>,
    request_id: &HeaderValue,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
) -> Response<ResponseBody> {
    let headers = response.headers_mut();
    if let Some(cookie) = set_cookie {
        headers.append(header::SET_COOKIE, cookie.clone());
    }
    headers.insert(&X_REQUEST_ID, request_id.clone());
    match client_upgrade {
        Some(client_upgrade) if response.status() == StatusCode::SWITCHING_PROTOCOLS => {
            headers::strip_hop_by_hop(response.headers_mut(), true);
            // The connection now belongs to the tunnel; it never returns to its client.
            drop(checkout);
            let target_upgrade = hyper::upgrade::on(&mut response);
            tokio::spawn(async move {
                // The request stays in flight for as long as the tunnel is open.
                let _in_flight = in_flight;
                if let (Ok(client), Ok(upstream)) = (client_upgrade.await, target_upgrade.await) {
                    let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                }
            });
            response.map(|_| ResponseBody::empty())
        }
        _ => {
            headers::strip_hop_by_hop(response.headers_mut(), false);
            let mut checkout = checkout;
            if response.body().is_end_stream() {
                // No body to wait for (204, 304, HEAD, Content-Length: 0): hyper may never
                // poll it, so the connection goes back now.
                if let Some(c) = checkout.take() {
                    c.release();
                }
            }
            response.map(|inner| ResponseBody::Upstream {
                inner,
                in_flight,
                checkout,
                log: None,
            })
        }
    }
}

/// Picks the target for one try and, with cookie affinity, the cookie to set: by affinity
/// first, then by the balancer; never one in `tried` while another is usable; admitted by
/// its breaker (a half-open breaker lets only its trial requests through).
fn select<'p>(
    pool: &'p PoolState,
    headers: &HeaderMap,
    client: IpAddr,
    now: Instant,
    tried: &[usize],
) -> Result<(usize, Option<&'p HeaderValue>), ProxyError> {
    let mut refused: Vec<usize> = Vec::new();
    let mut allow_repeats = false;
    for _ in 0..=pool.targets.len() + 2 {
        let excluded: Vec<usize>;
        let exclude: &[usize] = match (refused.is_empty(), allow_repeats) {
            (true, false) => tried,
            (true, true) => &[],
            (false, false) => {
                excluded = [tried, &refused].concat();
                &excluded
            }
            (false, true) => &refused,
        };
        let candidates = Candidates { pool, now, exclude };
        let Some((i, set_cookie)) = pick(pool, &candidates, headers, client) else {
            if !allow_repeats && !tried.is_empty() {
                // Every other target is tried or unusable: a target may take a second try.
                allow_repeats = true;
                continue;
            }
            break;
        };
        if !pool.targets[i].health.admit(now) {
            refused.push(i);
            continue;
        }
        return Ok((i, set_cookie));
    }
    Err(ProxyError::NoTarget(pool.config.name.clone()))
}

/// One pick among `candidates`, honouring session affinity.
fn pick<'p>(
    pool: &'p PoolState,
    candidates: &Candidates<'_>,
    headers: &HeaderMap,
    client: IpAddr,
) -> Option<(usize, Option<&'p HeaderValue>)> {
    let client_key = || match client {
        IpAddr::V4(ip) => stable_hash(&ip.octets(), 0),
        IpAddr::V6(ip) => stable_hash(&ip.octets(), 0),
    };
    let balancer = pool.balancer.load();
    match &pool.affinity {
        Affinity::None => balancer.pick(candidates, client_key).map(|i| (i, None)),
        Affinity::Cookie { name, by_id } => {
            let pinned = affinity::pinned_id(headers, name)
                .and_then(|id| by_id.get(&id).copied())
                .filter(|i| candidates.usable(*i));
            if let Some(i) = pinned {
                return Some((i, None));
            }
            let i = balancer.pick(candidates, client_key)?;
            Some((i, pool.targets[i].set_cookie.as_ref()))
        }
        Affinity::Header { name, table } => match headers.get(name) {
            Some(v) => table.pick(candidates, || stable_hash(v.as_bytes(), 0)),
            None => balancer.pick(candidates, client_key),
        }
        .map(|i| (i, None)),
        Affinity::ClientIp { table } => table.pick(candidates, client_key).map(|i| (i, None)),
    }
}

/// An HTTP/1.1 protocol upgrade (WebSocket): `Connection: upgrade` with an `Upgrade` field.
fn is_upgrade<B>(req: &Request<B>) -> bool {
    req.version() == Version::HTTP_11
        && req.headers().contains_key(header::UPGRADE)
        && !validate::is_h2c_upgrade(req)
        && req.headers().get_all(header::CONNECTION).iter().any(|v| {
            v.as_bytes()
                .split(|b| *b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"upgrade"))
        })
}

/// The request target sent upstream: origin-form (`/path?query`) on HTTP/1.1, as RFC 9112
/// asks of requests to an origin server, and with scheme and authority on HTTP/2, where they
/// become the `:scheme` and `:authority` pseudo-headers.
fn upstream_uri(authority: Option<Authority>, original: &Uri) -> Uri {
    let path = match original.path_and_query() {
        Some(p) if p.as_str().starts_with('/') => p.clone(),
        // `OPTIONS *` and authority-form targets have no path to forward.
        _ => PathAndQuery::from_static("/"),
    };
    let mut parts = http::uri::Parts::default();
    if let Some(authority) = authority {
        parts.scheme = Some(Scheme::HTTP);
        parts.authority = Some(authority);
    }
    parts.path_and_query = Some(path);
    Uri::from_parts(parts).expect("a path, with or without scheme and authority, is a URI")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upgrades_need_both_connection_and_upgrade() {
        let req = |conn: &str| {
            Request::builder()
                .header("connection", conn)
                .header("upgrade", "websocket")
                .body(())
                .unwrap()
        };
        assert!(is_upgrade(&req("keep-alive, Upgrade")));
        assert!(!is_upgrade(&req("keep-alive")));
    }

    #[test]
    fn http1_targets_get_origin_form_and_http2_targets_an_authority() {
        let absolute: Uri = "http://example.com/a/b?c=d".parse().unwrap();
        assert_eq!(upstream_uri(None, &absolute), "/a/b?c=d");
        assert_eq!(upstream_uri(None, &"*".parse().unwrap()), "/");
        let a = Authority::from_static("shop.example:8080");
        assert_eq!(
            upstream_uri(Some(a), &absolute),
            "http://shop.example:8080/a/b?c=d"
        );
    }
}
