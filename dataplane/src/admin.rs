//! The admin listener: metrics, status, probes, and the standalone target API.
//!
//! | route | answer |
//! |---|---|
//! | `GET /metrics` | Prometheus text |
//! | `GET /status` | JSON: totals, success rate, pools and targets, process RSS |
//! | `GET /ready` | 200 once a configuration is in place, 503 before and while draining |
//! | `GET /live` | 200 while the process serves |
//! | `GET /pools` | JSON: the pools in force, admin changes included |
//! | `GET /pools/{pool}` | JSON: one of them (a controller's pools are named `namespace/name`) → 404 if none |
//! | `POST /pools/{pool}/targets` | add `{"address": "ip:port", "weight": n}` → 201 |
//! | `PUT /pools/{pool}/targets/{address}` | set `{"weight": n}` → 200 |
//! | `DELETE /pools/{pool}/targets/{address}` | remove → 204 |
//!
//! Target changes take effect at once and last until the pools file next changes: a reload
//! replaces the whole configuration with the file's, so the file stays the one source of
//! truth. Edit the file to make a change permanent.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use prometheus_client::registry::Registry;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use weir_api::{Pool, Target};

use crate::body::ResponseBody;
use crate::state::{ChangeError, State};
use crate::stats::{STATUS_CLASSES, rss_bytes};
use crate::upstream::Limit;

/// Largest admin request body accepted.
const MAX_ADMIN_BODY: usize = 64 * 1024;

/// Serves the admin API on `listener` until the task is dropped.
pub async fn run(listener: TcpListener, state: Arc<State>) {
    let registry = Arc::new(crate::metrics::registry(state.clone()));
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let (state, registry, builder) = (state.clone(), registry.clone(), builder.clone());
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let (state, registry) = (state.clone(), registry.clone());
                async move { Ok::<_, Infallible>(handle(&state, &registry, req).await) }
            });
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn handle(
    state: &State,
    registry: &Registry,
    req: Request<Incoming>,
) -> Response<ResponseBody> {
    let path = req.uri().path().to_owned();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (req.method(), segments.as_slice()) {
        (&Method::GET, ["metrics"]) => {
            let mut r = text(StatusCode::OK, crate::metrics::render(registry));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            r
        }
        (&Method::GET, ["status"]) => json_response(StatusCode::OK, &status(state)),
        (&Method::GET, ["live"]) => text(StatusCode::OK, "live\n"),
        (&Method::GET, ["ready"]) => {
            if state.is_ready() {
                text(StatusCode::OK, "ready\n")
            } else if state.is_draining() {
                text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "no configuration yet\n")
            }
        }
        (&Method::GET, ["pools"]) => {
            let pools = state.pools();
            let pools: Vec<&Pool> = pools.iter().map(|p| &**p).collect();
            json_response(StatusCode::OK, &json!({ "pools": pools }))
        }
        (&Method::GET, ["pools", name @ ..]) if !name.is_empty() => {
            let name = name.join("/");
            match state.pool(&name) {
                Some(pool) => json_response(
                    StatusCode::OK,
                    &serde_json::to_value(&*pool).unwrap_or_default(),
                ),
                None => text(StatusCode::NOT_FOUND, format!("no pool named {name:?}\n")),
            }
        }
        (&Method::POST, ["pools", pool, "targets"]) => {
            let pool = (*pool).to_owned();
            match read_json::<Target>(req).await {
                Ok(target) => {
                    let address = target.address;
                    changed(
                        state.add_target(&pool, target),
                        StatusCode::CREATED,
                        &pool,
                        address,
                    )
                }
                Err(r) => r,
            }
        }
        (&Method::PUT | &Method::PATCH, ["pools", pool, "targets", address]) => {
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct Weight {
                weight: u32,
            }
            let (pool, address) = ((*pool).to_owned(), parse_address(address));
            let address = match address {
                Ok(a) => a,
                Err(r) => return *r,
            };
            match read_json::<Weight>(req).await {
                Ok(w) => changed(
                    state.set_weight(&pool, address, w.weight),
                    StatusCode::OK,
                    &pool,
                    address,
                ),
                Err(r) => r,
            }
        }
        (&Method::DELETE, ["pools", pool, "targets", address]) => match parse_address(address) {
            Ok(address) => changed(
                state.remove_target(pool, address),
                StatusCode::NO_CONTENT,
                pool,
                address,
            ),
            Err(r) => *r,
        },
        (_, ["metrics" | "status" | "live" | "ready" | "pools"])
        | (_, ["pools", _, "targets", ..]) => {
            text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: see /status, /metrics, /ready, /live, /pools\n",
        ),
    }
}

fn changed(
    result: Result<(), ChangeError>,
    ok: StatusCode,
    pool: &str,
    address: SocketAddr,
) -> Response<ResponseBody> {
    match result {
        Ok(()) => {
            tracing::info!(pool, %address, "target changed through the admin API; the next pools-file reload replaces it");
            if ok == StatusCode::NO_CONTENT {
                text(ok, "")
            } else {
                json_response(ok, &json!({"pool": pool, "address": address}))
            }
        }
        Err(e) => {
            let status = match e {
                ChangeError::NoSuchPool(_) | ChangeError::NoSuchTarget { .. } => {
                    StatusCode::NOT_FOUND
                }
                ChangeError::TargetExists { .. } | ChangeError::Managed => StatusCode::CONFLICT,
                ChangeError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            };
            json_response(status, &json!({"error": e.to_string()}))
        }
    }
}

fn parse_address(s: &str) -> Result<SocketAddr, Box<Response<ResponseBody>>> {
    // IPv6 addresses arrive percent-encoded in a path segment: [::1]:80 as %5B::1%5D:80.
    let decoded = s
        .replace("%5B", "[")
        .replace("%5b", "[")
        .replace("%5D", "]")
        .replace("%5d", "]")
        .replace("%3A", ":")
        .replace("%3a", ":");
    decoded.parse().map_err(|_| {
        Box::new(json_response(
            StatusCode::BAD_REQUEST,
            &json!({"error": format!("{decoded:?} is not an ip:port address")}),
        ))
    })
}

async fn read_json<T: serde::de::DeserializeOwned>(
    req: Request<Incoming>,
) -> Result<T, Response<ResponseBody>> {
    let body = Limited::new(req.into_body(), MAX_ADMIN_BODY)
        .collect()
        .await
        .map_err(|e| {
            json_response(
                StatusCode::BAD_REQUEST,
                &json!({"error": format!("cannot read body: {e}")}),
            )
        })?
        .to_bytes();
    serde_json::from_slice(&body).map_err(|e| {
        json_response(
            StatusCode::BAD_REQUEST,
            &json!({"error": format!("invalid JSON body: {e}")}),
        )
    })
}

/// The `/status` document.
pub fn status(state: &State) -> Value {
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let snapshot = state.snapshot.load();
    let (mut total, mut failed) = (0u64, 0u64);
    let now = tokio::time::Instant::now();
    let pools: Vec<Value> = snapshot
        .pools
        .iter()
        .map(|p| {
            let errors = &p.stats.proxy_errors;
            let targets: Vec<Value> = p
                .targets
                .iter()
                .map(|t| {
                    let s = &t.stats;
                    let responses: serde_json::Map<String, Value> = STATUS_CLASSES
                        .iter()
                        .zip(&s.responses)
                        .map(|(c, n)| ((*c).to_owned(), load(n).into()))
                        .collect();
                    let condition = t.health.condition(now);
                    json!({
                        "address": s.address,
                        "weight": t.weight,
                        "state": t.state(now),
                        "state_ends_in_seconds": condition.until().map(|u| u.saturating_duration_since(now).as_secs_f64()),
                        "active_requests": load(&s.active_requests),
                        "active_connections": load(&s.active_connections),
                        "requests": load(&s.requests),
                        "responses": responses,
                        "failures": load(&s.failures),
                        "ejections": load(&t.health.ejections),
                        "breaker_opens": load(&t.health.breaker_opens),
                        "health_checks": {
                            "passed": load(&t.health.checks_passed),
                            "failed": load(&t.health.checks_failed),
                        },
                        "bytes_sent": load(&s.bytes_sent),
                        "bytes_received": load(&s.bytes_received),
                    })
                })
                .collect();
            let requests = load(&p.stats.requests);
            let pool_failed = load(&p.stats.failed);
            total += requests;
            failed += pool_failed;
            let overflows: serde_json::Map<String, Value> = [Limit::MaxConnections, Limit::MaxPendingRequests, Limit::MaxRequests]
                .iter()
                .zip(&p.stats.overflows)
                .map(|(l, n)| (l.as_str().to_owned(), load(n).into()))
                .collect();
            json!({
                "name": p.config.name,
                "algorithm": p.config.algorithm,
                "routes": p.config.routes,
                "requests": requests,
                "in_flight": load(&p.stats.in_flight),
                "success_rate": success_rate(requests, pool_failed),
                "panic": p.stats.panic.load(Ordering::Relaxed),
                "panics": load(&p.stats.panics),
                "retries": load(&p.stats.retries),
                "retries_refused": load(&p.stats.retries_refused),
                "overflows": overflows,
                "proxy_errors": {
                    "4xx": load(&errors.client),
                    "502": load(&errors.bad_gateway),
                    "503": load(&errors.unavailable),
                    "504": load(&errors.timeout),
                },
                "targets": targets,
            })
        })
        .collect();
    let l = &state.listener;
    json!({
        "uptime_seconds": state.started.elapsed().as_secs(),
        "ready": state.is_ready(),
        "generation": snapshot.generation,
        "requests": {
            "total": total,
            "failed": failed,
            "success_rate": success_rate(total, failed),
            "unrouted": load(&l.unrouted),
            "rejected": load(&l.rejected),
        },
        "connections": { "active": load(&l.active_connections), "total": load(&l.connections) },
        "reloads": { "success": load(&l.reloads), "failure": load(&l.reload_failures) },
        "memory": { "rss_bytes": rss_bytes() },
        "pools": pools,
    })
}

/// Share of requests not answered 5xx; 1 when there were none.
fn success_rate(total: u64, failed: u64) -> f64 {
    if total == 0 {
        1.0
    } else {
        (total.saturating_sub(failed)) as f64 / total as f64
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<ResponseBody> {
    let mut r = Response::new(ResponseBody::full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn json_response(status: StatusCode, v: &Value) -> Response<ResponseBody> {
    let mut body = serde_json::to_vec_pretty(v).unwrap_or_default();
    body.push(b'\n');
    let mut r = Response::new(ResponseBody::full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn success_rate_counts_5xx_as_failures() {
        assert_eq!(success_rate(0, 0), 1.0);
        assert_eq!(success_rate(1000, 1), 0.999);
    }

    #[test]
    fn ipv6_targets_can_be_named_in_a_path() {
        assert_eq!(
            parse_address("%5B::1%5D:9001").unwrap(),
            "[::1]:9001".parse().unwrap()
        );
        assert!(parse_address("nope").is_err());
    }
}
