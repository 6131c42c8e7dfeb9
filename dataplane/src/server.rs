//! The proxy listener: HTTP/1.1 and HTTP/2 (h2c prior knowledge) on one socket, upgrades
//! passed through, and a graceful drain on shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::proxy;
use crate::settings::ProxySettings;
use crate::state::State;
use crate::validate;

/// Smallest read buffer hyper accepts.
const MIN_BUF: usize = 8192;

/// Serves proxied traffic from `listener` until `shutdown` completes, then stops accepting and
/// lets in-flight requests finish for up to the drain timeout: idle keep-alive connections
/// close, busy HTTP/1.1 ones close after their current response, HTTP/2 ones get GOAWAY.
pub async fn serve(listener: TcpListener, state: Arc<State>, shutdown: impl Future<Output = ()>) {
    let builder = Arc::new(connection_builder(&state.settings));
    let graceful = GracefulShutdown::new();
    // Ends the wait for a connection's first byte when the drain starts.
    let (drain_started, draining) = tokio::sync::watch::channel(());
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Usually EMFILE: back off instead of spinning, and keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let conn_state = state.clone();
        let client = Arc::new(proxy::Peer::new(peer));
        // What hyper drops of each HTTP/1 head, read off the wire for validate::check.
        let heads = validate::Heads::default();
        let tapped = heads.clone();
        let service = service_fn(move |mut req| {
            tapped.attach(&mut req);
            let (state, client) = (conn_state.clone(), client.clone());
            async move { Ok::<_, Infallible>(proxy::serve(&state, req, &client).await) }
        });
        let (builder, watcher, mut draining) =
            (builder.clone(), graceful.watcher(), draining.clone());
        state.listener.connections.fetch_add(1, Ordering::Relaxed);
        state
            .listener
            .active_connections
            .fetch_add(1, Ordering::Relaxed);
        let state = state.clone();
        tokio::spawn(async move {
            // hyper-util reads the first bytes to tell HTTP/1.1 from h2c before hyper arms its
            // header read timeout, so a client that connects and sends nothing (or half an
            // HTTP/2 preface) would hold the connection for ever: that wait gets the header
            // read timeout too.
            let spoke = tokio::select! {
                spoke = client_spoke(&stream, state.settings.header_read_timeout.get()) => spoke,
                _ = draining.changed() => false,
            };
            if spoke {
                let limit = state.settings.max_header_bytes.max(MIN_BUF);
                let wire = validate::Wire::new(stream, heads, limit);
                let connection = builder
                    .serve_connection_with_upgrades(TokioIo::new(wire), service)
                    .into_owned();
                if let Err(e) = watcher.watch(connection).await {
                    tracing::debug!(%peer, error = %e, "downstream connection ended with an error");
                }
            }
            state
                .listener
                .active_connections
                .fetch_sub(1, Ordering::Relaxed);
        });
    }
    drop(listener);
    drop(drain_started);
    let open = graceful.count();
    let drain = state.settings.drain_timeout.get();
    tracing::info!(open_connections = open, timeout = ?drain, "draining");
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("drained"),
        () = tokio::time::sleep(drain) => tracing::warn!(
            open_connections = state.listener.active_connections.load(Ordering::Relaxed),
            "drain timeout reached; closing the remaining connections"
        ),
    }
}

/// Waits, up to `timeout`, until the client has sent enough to tell an HTTP/1.1 request from
/// the HTTP/2 preface; false when it sent nothing, closed, or stalled inside the preface.
async fn client_spoke(stream: &tokio::net::TcpStream, timeout: Duration) -> bool {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let sniff = async {
        let mut buf = [0u8; PREFACE.len()];
        loop {
            match stream.peek(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) if n == PREFACE.len() || buf[..n] != PREFACE[..n] => return true,
                // A strict prefix of the preface: peek would return the same bytes at once,
                // so wait a little for the rest. Only stalled clients ever get here.
                Ok(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    };
    tokio::time::timeout(timeout, sniff).await.unwrap_or(false)
}

/// One builder for every connection: limits and timeouts from the settings.
fn connection_builder(settings: &ProxySettings) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // hyper only enforces the header read timeout when it has a timer.
        .header_read_timeout(settings.header_read_timeout.get())
        .max_buf_size(settings.max_header_bytes.max(MIN_BUF))
        .max_headers(settings.max_headers)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(1024)
        .max_header_list_size(u32::try_from(settings.max_header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(10));
    builder
}
