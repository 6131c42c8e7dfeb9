//! One request through the proxy: check, route, pick, rewrite, forward, answer.
//!
//! [`serve`] checks and routes the request and turns every failure into its answer;
//! `forward` takes a routed request through its pool's limits and its tries (`attempts`), each
//! to a target chosen by `select`, with the head rewritten by `head`; `respond` turns the
//! target's response into the client's. Dependencies run that way only.

mod attempts;
mod forward;
mod head;
mod respond;
mod select;

use std::sync::atomic::Ordering;

use bytes::Bytes;

use http::header::{self, HeaderValue};
use http::{Request, Response};
use http_body::Body;
use tokio::time::Instant;

pub use head::Peer;

use self::forward::{Trail, forward};
use crate::access_log;
use crate::body::{BoxError, ResponseBody};
use crate::error::{Fault, ProxyError};
use crate::headers;
use crate::state::{PoolState, State};
use crate::validate;

/// Serves one downstream request from `peer`. Never fails: every error becomes a response.
///
/// The listener hands it hyper's [`Incoming`](hyper::body::Incoming) bodies; any other body
/// serves too, so the request path can be called in-process (`tests/service.rs`).
pub async fn serve<B>(state: &State, mut req: Request<B>, peer: &Peer) -> Response<ResponseBody>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
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
    let mut trail = Trail::new(log.is_some());
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
            e.count(&pool.stats.proxy_errors);
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
fn entry<B>(req: &Request<B>, request_id: &HeaderValue, peer: &Peer) -> access_log::Entry {
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

#[cfg(test)]
mod tests;
