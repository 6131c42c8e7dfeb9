//! The pooled client to targets, and the connector that counts connections per target.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use http::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use weir_api::{Pool, UpstreamProtocol};

use crate::body::RequestBody;

/// The pooled HTTP client of one pool.
pub type UpstreamClient = Client<CountingConnector, RequestBody>;

/// The settings that shape a client; a reload that keeps them keeps the client, and with it
/// every idle keep-alive connection.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ClientSettings {
    protocol: UpstreamProtocol,
    max_idle_per_target: usize,
    connect_timeout: std::time::Duration,
    idle_timeout: std::time::Duration,
}

/// A client and its connector, kept together so targets can find their connection counters.
#[derive(Clone, Debug)]
pub struct Upstream {
    /// The client requests go through.
    pub client: UpstreamClient,
    /// Its connector.
    pub connector: CountingConnector,
    /// What it was built from.
    pub settings: ClientSettings,
}

/// An `HttpConnector` that counts open connections per target address.
#[derive(Clone, Debug)]
pub struct CountingConnector {
    http: HttpConnector,
    counters: Arc<Mutex<HashMap<SocketAddr, Arc<AtomicU64>>>>,
}

/// A connection that decrements its target's counter when closed.
#[derive(Debug)]
pub struct CountedConnection {
    io: TokioIo<TcpStream>,
    counter: Option<Arc<AtomicU64>>,
}

impl ClientSettings {
    /// The client settings `pool` asks for.
    pub fn of(pool: &Pool) -> Self {
        Self {
            protocol: pool.upstream.protocol,
            max_idle_per_target: pool.upstream.max_idle_per_target,
            connect_timeout: pool.timeouts.connect.get(),
            idle_timeout: pool.timeouts.idle.get(),
        }
    }
}

impl Upstream {
    /// Builds a client with `settings`.
    pub fn new(settings: ClientSettings) -> Self {
        Self::with_counters(settings, Arc::default())
    }

    /// A new client with `settings` that counts connections into the same counters as this
    /// one, so per-target connection gauges stay whole across the swap.
    pub fn rebuilt(&self, settings: ClientSettings) -> Self {
        Self::with_counters(settings, self.connector.counters.clone())
    }

    fn with_counters(
        settings: ClientSettings,
        counters: Arc<Mutex<HashMap<SocketAddr, Arc<AtomicU64>>>>,
    ) -> Self {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(settings.connect_timeout));
        http.set_keepalive(Some(std::time::Duration::from_secs(60)));
        let connector = CountingConnector { http, counters };
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(settings.idle_timeout)
            .pool_max_idle_per_host(settings.max_idle_per_target)
            // The Host header is the client's; the URI only says where to connect.
            .set_host(false)
            // A request that never left because the pooled connection had just closed is safe
            // to send again on a fresh one, whatever its method.
            .retry_canceled_requests(true);
        if settings.protocol == UpstreamProtocol::Http2 {
            builder.http2_only(true);
        }
        let client = builder.build(connector.clone());
        Self {
            client,
            connector,
            settings,
        }
    }
}

impl CountingConnector {
    /// The counter of open connections to `address`.
    pub fn counter(&self, address: SocketAddr) -> Arc<AtomicU64> {
        let mut counters = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        counters.entry(address).or_default().clone()
    }

    /// Drops counters of addresses no longer configured and without connections.
    pub fn forget_except(&self, keep: &[SocketAddr]) {
        let mut counters = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        counters.retain(|addr, c| keep.contains(addr) || c.load(Ordering::Relaxed) > 0);
    }
}

impl tower_service::Service<Uri> for CountingConnector {
    type Response = CountedConnection;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = Pin<Box<dyn Future<Output = Result<CountedConnection, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let counter = uri
            .authority()
            .and_then(|a| a.as_str().parse::<SocketAddr>().ok())
            .map(|addr| self.counter(addr));
        let connecting = self.http.call(uri);
        Box::pin(async move {
            let io = connecting.await?;
            if let Some(c) = &counter {
                c.fetch_add(1, Ordering::Relaxed);
            }
            Ok(CountedConnection { io, counter })
        })
    }
}

impl Drop for CountedConnection {
    fn drop(&mut self) {
        if let Some(c) = &self.counter {
            c.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Connection for CountedConnection {
    fn connected(&self) -> Connected {
        self.io.connected()
    }
}

impl Read for CountedConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl Write for CountedConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
}
