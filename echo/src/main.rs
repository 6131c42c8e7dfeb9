//! `weir-echo`: a real HTTP backend for Weir's tests, demo and benchmarks.
//!
//! It serves HTTP/1.1 (keep-alive, upgrades) and prior-knowledge h2c on one listener and
//! answers a handful of routes that let a test see what the proxy did to a request: which
//! backend answered, the headers it forwarded, streamed bodies, slow answers, WebSockets and
//! per-backend counters. In benchmarks it sits behind the proxies under test, so the hot path
//! (the default route) only clones preallocated bytes.

mod body;

use std::convert::Infallible;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use clap::Parser;
use futures_util::{SinkExt as _, StreamExt as _};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

use crate::body::EchoBody;

/// Command line of `weir-echo`.
#[derive(Debug, Parser)]
#[command(name = "weir-echo", version, about)]
struct Args {
    /// Address to listen on, e.g. 127.0.0.1:9001 (port 0 picks a free port; the bound
    /// address is printed as `listening on ADDR`).
    #[arg(long)]
    listen: SocketAddr,
    /// Name reported in bodies and the `x-backend` header (default: the listen address).
    #[arg(long)]
    name: Option<String>,
    /// Tokio worker threads.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    workers: u16,
    /// While this file exists, `/health` answers 503.
    #[arg(long)]
    unhealthy_file: Option<PathBuf>,
}

/// Everything a request handler needs, built once so the hot path only clones `Bytes`.
struct State {
    name: String,
    name_header: HeaderValue,
    name_line: Bytes,
    unhealthy_file: Option<PathBuf>,
    requests: AtomicU64,
    health_checks: AtomicU64,
}

static TEXT_PLAIN: HeaderValue = HeaderValue::from_static("text/plain");
static APPLICATION_JSON: HeaderValue = HeaderValue::from_static("application/json");
static X_BACKEND: header::HeaderName = header::HeaderName::from_static("x-backend");

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // One worker is the benchmark setting: a current-thread runtime then avoids the
    // cross-thread wakeups a one-worker multi-thread runtime would pay for.
    let runtime = if args.workers == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(usize::from(args.workers))
            .enable_all()
            .build()?
    };
    runtime.block_on(serve(args))
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let local = listener.local_addr()?;
    let name = args.name.unwrap_or_else(|| local.to_string());
    let state = Arc::new(State {
        name_header: HeaderValue::from_str(&name).context("--name must be a valid header value")?,
        name_line: Bytes::from(format!("{name}\n")),
        name,
        unhealthy_file: args.unhealthy_file,
        requests: AtomicU64::new(0),
        health_checks: AtomicU64::new(0),
    });

    let mut builder = auto::Builder::new(TokioExecutor::new());
    // Without a timer hyper can't enforce the header read timeout anyway; saying so
    // explicitly keeps a future default from arming a timer on every request.
    builder.http1().header_read_timeout(None);
    let builder = Arc::new(builder);

    // Handlers go in before the announcement: whoever waits for that line may signal at
    // once, and an uninstalled handler means death by the default action, not a clean exit.
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {local}")?;
        out.flush()?;
    }

    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(err) => {
                    // Usually EMFILE under a stress test: back off instead of spinning.
                    eprintln!("weir-echo: accept: {err}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
        };
        let _ = stream.set_nodelay(true);
        let builder = Arc::clone(&builder);
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(Arc::clone(&state), req));
            // Connection errors (resets, clients going away mid-request) are normal under load.
            let _ = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .await;
        });
    }
    Ok(())
}

async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<EchoBody>, Infallible> {
    let path = req.uri().path();
    match path {
        "/health" => {
            state.health_checks.fetch_add(1, Ordering::Relaxed);
            return Ok(health(&state));
        }
        "/_stats" => return Ok(stats(&state)),
        _ => {}
    }
    state.requests.fetch_add(1, Ordering::Relaxed);
    let response = match path {
        "/headers" => headers(&state, &req),
        "/echo" => {
            let mut resp = Response::new(EchoBody::Stream(req.into_body()));
            resp.headers_mut()
                .insert(X_BACKEND.clone(), state.name_header.clone());
            resp
        }
        // Answers only once the whole body is in, as most application servers do, so a
        // proxy's own answer to a broken body cannot lose a race with the target's.
        "/collect" => match http_body_util::BodyExt::collect(req.into_body()).await {
            Ok(body) => {
                let mut resp = Response::new(EchoBody::Full(Some(body.to_bytes())));
                resp.headers_mut()
                    .insert(X_BACKEND.clone(), state.name_header.clone());
                resp
            }
            Err(_) => bad_request(&state, "the request body broke off\n"),
        },
        "/ws" => websocket(&state, req),
        _ => {
            if let Some(ms) = path.strip_prefix("/delay/") {
                match ms.parse::<u64>() {
                    Ok(ms) => {
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                        named(&state, StatusCode::OK)
                    }
                    Err(_) => bad_request(&state, "delay wants milliseconds\n"),
                }
            } else if let Some(code) = path.strip_prefix("/status/") {
                match code.parse::<u16>().map(StatusCode::from_u16) {
                    Ok(Ok(code)) if code.as_u16() >= 200 => named(&state, code),
                    _ => bad_request(&state, "status wants a code from 200 to 999\n"),
                }
            } else if let Some(ms) = path.strip_prefix("/slow-body/") {
                match ms.parse::<u64>() {
                    Ok(ms) => {
                        let mut resp = named(&state, StatusCode::OK);
                        *resp.body_mut() =
                            EchoBody::slow(state.name_line.clone(), 3, Duration::from_millis(ms));
                        resp
                    }
                    Err(_) => bad_request(&state, "slow-body wants milliseconds\n"),
                }
            } else {
                named(&state, StatusCode::OK)
            }
        }
    };
    Ok(response)
}

/// The default answer: the backend's name as plain text.
fn named(state: &State, status: StatusCode) -> Response<EchoBody> {
    let body = if status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        EchoBody::empty()
    } else {
        EchoBody::full(state.name_line.clone())
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, TEXT_PLAIN.clone());
    headers.insert(X_BACKEND.clone(), state.name_header.clone());
    resp
}

fn text(state: &State, status: StatusCode, body: &'static str) -> Response<EchoBody> {
    let mut resp = named(state, status);
    *resp.body_mut() = EchoBody::full(Bytes::from_static(body.as_bytes()));
    resp
}

fn bad_request(state: &State, why: &'static str) -> Response<EchoBody> {
    text(state, StatusCode::BAD_REQUEST, why)
}

fn json(state: &State, value: &impl serde::Serialize) -> Response<EchoBody> {
    let mut resp = named(state, StatusCode::OK);
    let mut body = serde_json::to_vec(value).unwrap_or_default();
    body.push(b'\n');
    *resp.body_mut() = EchoBody::full(Bytes::from(body));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, APPLICATION_JSON.clone());
    resp
}

fn health(state: &State) -> Response<EchoBody> {
    let unhealthy = state
        .unhealthy_file
        .as_deref()
        .is_some_and(|file| file.exists());
    if unhealthy {
        text(state, StatusCode::SERVICE_UNAVAILABLE, "unhealthy\n")
    } else {
        text(state, StatusCode::OK, "ok\n")
    }
}

fn stats(state: &State) -> Response<EchoBody> {
    #[derive(serde::Serialize)]
    struct Stats<'a> {
        backend: &'a str,
        requests: u64,
        health_checks: u64,
    }
    json(
        state,
        &Stats {
            backend: &state.name,
            requests: state.requests.load(Ordering::Relaxed),
            health_checks: state.health_checks.load(Ordering::Relaxed),
        },
    )
}

fn version_name(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "unknown",
    }
}

fn headers(state: &State, req: &Request<Incoming>) -> Response<EchoBody> {
    // hyper exposes no raw header list: `HeaderMap` keeps names in order of first appearance
    // with repeated names grouped, lower-cased. That is as close to the wire as hyper allows.
    let headers: Vec<(&str, String)> = req
        .headers()
        .iter()
        .map(|(name, value)| {
            (
                name.as_str(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect();
    #[derive(serde::Serialize)]
    struct Report<'a> {
        backend: &'a str,
        method: &'a str,
        uri: String,
        version: &'static str,
        headers: Vec<(&'a str, String)>,
    }
    json(
        state,
        &Report {
            backend: &state.name,
            method: req.method().as_str(),
            uri: req.uri().to_string(),
            version: version_name(req.version()),
            headers,
        },
    )
}

fn websocket(state: &Arc<State>, mut req: Request<Incoming>) -> Response<EchoBody> {
    let wants_upgrade = req.method() == Method::GET
        && req.version() == Version::HTTP_11
        && header_has_token(&req, header::CONNECTION, "upgrade")
        && header_has_token(&req, header::UPGRADE, "websocket");
    let Some(key) = req.headers().get(header::SEC_WEBSOCKET_KEY) else {
        return bad_request(state, "expected a WebSocket upgrade\n");
    };
    if !wants_upgrade {
        return bad_request(state, "expected a WebSocket upgrade\n");
    }
    let accept = derive_accept_key(key.as_bytes());
    let upgrade = hyper::upgrade::on(&mut req);
    let state = Arc::clone(state);
    let name = state.name.clone();
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let mut ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        while let Some(Ok(msg)) = ws.next().await {
            let reply = match msg {
                Message::Text(text) => Message::text(format!("{name}: {}", text.as_str())),
                Message::Binary(data) => Message::Binary(data),
                // tungstenite answers pings and closes by itself on the next read or flush.
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
                Message::Close(_) => break,
            };
            if ws.send(reply).await.is_err() {
                break;
            }
        }
    });

    let mut resp = Response::new(EchoBody::empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = resp.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(accept) = HeaderValue::from_str(&accept) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    headers.insert(X_BACKEND.clone(), state.name_header.clone());
    resp
}

fn header_has_token(req: &Request<Incoming>, name: header::HeaderName, token: &str) -> bool {
    req.headers().get_all(name).iter().any(|value| {
        value.to_str().is_ok_and(|value| {
            value
                .split(',')
                .any(|part| part.trim().eq_ignore_ascii_case(token))
        })
    })
}
