//! One request through the proxy: check, route, pick, rewrite, forward, answer.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::time::Instant;

use http::header::{self, HeaderMap, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use weir_api::UpstreamProtocol;

use crate::balance::{Load, Pick};
use crate::body::{RequestBody, ResponseBody};
use crate::error::ProxyError;
use crate::hash::stable_hash;
use crate::headers::{self, X_REQUEST_ID};
use crate::settings::ProxySettings;
use crate::state::{Affinity, PoolState, State};
use crate::stats::InFlight;

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
    if let Err(e) = check(&state.settings, &req) {
        state.listener.rejected.fetch_add(1, Ordering::Relaxed);
        return e.into_response(Some(&request_id));
    }
    let snapshot = state.snapshot.load_full();
    let routed = snapshot
        .router
        .find(request_host(&req).unwrap_or(""), req.uri().path());
    let Some(pool) = routed.map(|i| &snapshot.pools[i]) else {
        state.listener.unrouted.fetch_add(1, Ordering::Relaxed);
        return ProxyError::NoRoute.into_response(Some(&request_id));
    };
    pool.stats.requests.fetch_add(1, Ordering::Relaxed);
    match forward(&state.settings, pool, req, peer, &request_id, arrived).await {
        Ok(response) => response,
        Err(e) => {
            let errors = &pool.stats.proxy_errors;
            let counter = match e.status() {
                StatusCode::BAD_GATEWAY => &errors.bad_gateway,
                StatusCode::SERVICE_UNAVAILABLE => &errors.unavailable,
                StatusCode::GATEWAY_TIMEOUT => &errors.timeout,
                _ => &errors.client,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            pool.stats.latency.observe(arrived.elapsed());
            e.into_response(Some(&request_id))
        }
    }
}

/// Refuses what must not reach a target. hyper has already answered what it cannot parse
/// (400), header blocks over the limit (431) and conflicting lengths; this covers the limits
/// and rules that are ours.
fn check(settings: &ProxySettings, req: &Request<Incoming>) -> Result<(), ProxyError> {
    if req.method() == Method::CONNECT {
        return Err(ProxyError::MethodNotAllowed(Method::CONNECT));
    }
    let target_len = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if target_len > settings.max_uri_bytes {
        return Err(ProxyError::UriTooLong(settings.max_uri_bytes));
    }
    let headers = req.headers();
    if let Some(len) = headers.get(header::CONTENT_LENGTH) {
        let len: u64 = len
            .to_str()
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or(ProxyError::BadRequest("invalid Content-Length"))?;
        if len > settings.max_body_bytes {
            return Err(ProxyError::PayloadTooLarge(settings.max_body_bytes));
        }
    }
    let mut hosts = headers.get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (_, Some(_)) => return Err(ProxyError::BadRequest("more than one Host header")),
        (None, None) if req.version() == Version::HTTP_11 && req.uri().authority().is_none() => {
            return Err(ProxyError::BadRequest("missing Host header"));
        }
        (Some(h), None) if h.to_str().is_err() || h.is_empty() => {
            return Err(ProxyError::BadRequest("invalid Host header"));
        }
        _ => {}
    }
    Ok(())
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
) -> Result<Response<ResponseBody>, ProxyError> {
    let (index, set_cookie) = choose(pool, &req, peer.addr.ip())?;
    let target = &pool.targets[index];
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
    let protocol = pool.config.upstream.protocol;
    let authority = match protocol {
        UpstreamProtocol::Http1 => None,
        // HTTP/2 targets read the host from :authority; the connection is already chosen,
        // so it carries the client's host, falling back to the target's address.
        UpstreamProtocol::Http2 => Some(
            host.as_ref()
                .and_then(|h| Authority::try_from(h.as_bytes()).ok())
                .unwrap_or_else(|| target.authority.clone()),
        ),
    };
    // An absolute-form (or HTTP/2) request was routed by its URI's authority, which also
    // replaces any Host the client sent (RFC 9112 §3.2.2), so the target sees that host too.
    if parts.uri.authority().is_some() || !headers.contains_key(header::HOST) {
        if let Some(h) = host {
            headers.insert(header::HOST, h);
        }
    }
    parts.uri = upstream_uri(authority, &parts.uri);
    parts.version = match protocol {
        UpstreamProtocol::Http1 => Version::HTTP_11,
        UpstreamProtocol::Http2 => Version::HTTP_2,
    };

    let in_flight = InFlight::start(target.stats.clone());
    let body = RequestBody::new(body, target.stats.clone(), settings.max_body_bytes);
    let request = target.pool.send(Request::from_parts(parts, body));
    let timeout = pool.config.timeouts.request.get();
    let (mut response, checkout) = match tokio::time::timeout(timeout, request).await {
        Ok(Ok(exchanged)) => exchanged,
        Ok(Err(e)) => {
            let e = ProxyError::from_upstream(target.stats.address, &e);
            if !matches!(e, ProxyError::PayloadTooLarge(_)) {
                target.stats.failures.fetch_add(1, Ordering::Relaxed);
            }
            return Err(e);
        }
        Err(_) => {
            target.stats.failures.fetch_add(1, Ordering::Relaxed);
            return Err(ProxyError::Timeout(target.stats.address));
        }
    };
    target.stats.record_status(response.status().as_u16());
    pool.stats.latency.observe(arrived.elapsed());

    let headers = response.headers_mut();
    if let Some(cookie) = set_cookie {
        headers.append(header::SET_COOKIE, cookie.clone());
    }
    headers.insert(&X_REQUEST_ID, request_id.clone());
    match client_upgrade {
        Some(client_upgrade) if response.status() == StatusCode::SWITCHING_PROTOCOLS => {
            headers::strip_hop_by_hop(response.headers_mut(), true);
            // The connection now belongs to the tunnel; it never returns to the pool.
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
            Ok(response.map(|_| ResponseBody::empty()))
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
            Ok(response.map(|inner| ResponseBody::Upstream {
                inner,
                in_flight,
                checkout,
            }))
        }
    }
}

/// Picks the target for a request and, with cookie affinity, the cookie to set.
fn choose<'p>(
    pool: &'p PoolState,
    req: &Request<Incoming>,
    client: IpAddr,
) -> Result<(usize, Option<&'p HeaderValue>), ProxyError> {
    let client_key = || match client {
        IpAddr::V4(ip) => stable_hash(&ip.octets(), 0),
        IpAddr::V6(ip) => stable_hash(&ip.octets(), 0),
    };
    let picked = match &pool.affinity {
        Affinity::None => pool.balancer.pick(pool, client_key),
        Affinity::Cookie { name, by_id } => {
            let pinned = cookie(req.headers(), name)
                .and_then(|v| u64::from_str_radix(v, 16).ok())
                .and_then(|id| by_id.get(&id).copied())
                .filter(|i| pool.usable(*i));
            if let Some(i) = pinned {
                return Ok((i, None));
            }
            let i = pool
                .balancer
                .pick(pool, client_key)
                .ok_or_else(|| ProxyError::NoTarget(pool.config.name.clone()))?;
            return Ok((i, pool.targets[i].set_cookie.as_ref()));
        }
        Affinity::Header { name, table } => match req.headers().get(name) {
            Some(v) => table.pick(pool, || stable_hash(v.as_bytes(), 0)),
            None => pool.balancer.pick(pool, client_key),
        },
        Affinity::ClientIp { table } => table.pick(pool, client_key),
    };
    picked
        .map(|i| (i, None))
        .ok_or_else(|| ProxyError::NoTarget(pool.config.name.clone()))
}

/// The value of cookie `name` among the request's `Cookie` headers.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"'))
}

/// An HTTP/1.1 protocol upgrade (WebSocket): `Connection: upgrade` with an `Upgrade` field.
fn is_upgrade<B>(req: &Request<B>) -> bool {
    req.version() == Version::HTTP_11
        && req.headers().contains_key(header::UPGRADE)
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
    fn the_named_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; weir-session=00ff"),
        );
        h.append(header::COOKIE, HeaderValue::from_static("b=2"));
        assert_eq!(cookie(&h, "weir-session"), Some("00ff"));
        assert_eq!(cookie(&h, "b"), Some("2"));
        assert_eq!(cookie(&h, "weir"), None);
    }

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
