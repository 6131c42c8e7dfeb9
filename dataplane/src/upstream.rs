//! Connections to targets: one small client per target, a [`TargetClient`].
//!
//! hyper-util's pooled client keys a shared pool by scheme and authority, behind one lock,
//! for every request. A load balancer already knows its target when it sends, so each target
//! owns its connections: an idle stack of HTTP/1.1 connections (most recently used first, so
//! warm connections stay warm and cold ones age out) or one shared HTTP/2 connection. Owning
//! them also gives the proxy per-target connection counts, and the place where connection
//! limits and health signals attach.
//!
//! The client is generic over the request body it sends ([`SendBody`]): what it knows of a
//! request is how to get it to its target, so it depends on nothing else of the proxy.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::future::Either;
use http::{Request, Response};
use http_body::Body;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use weir_api::{Pool, UpstreamProtocol};

/// A request that never left because its pooled connection had just closed is sent again
/// on another connection, at most this many times.
const STALE_RETRIES: usize = 3;

/// A request body a [`TargetClient`] can send: one hyper's client connections stream, and
/// that can move between tasks.
pub trait SendBody:
    Body<Data = Bytes, Error: Into<Box<dyn std::error::Error + Send + Sync>>> + Send + Unpin + 'static
{
}

/// The settings that shape a target's connections; a reload that keeps them keeps the
/// client, and with it every idle keep-alive connection.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ClientSettings {
    protocol: UpstreamProtocol,
    max_idle: usize,
    connect_timeout: Duration,
    idle_timeout: Duration,
}

/// The connections to one target: the idle HTTP/1.1 ones, or the shared HTTP/2 one.
#[derive(Debug)]
pub struct TargetClient<B> {
    address: SocketAddr,
    settings: ClientSettings,
    idle: Mutex<VecDeque<IdleConnection<B>>>,
    h2: tokio::sync::Mutex<Option<http2::SendRequest<B>>>,
    connections: Arc<AtomicU64>,
    shared: Arc<ConnectionCounters>,
}

/// Connection counters shared by the targets of one pool, for the pool's circuit-breaker
/// limits.
#[derive(Debug, Default)]
pub struct ConnectionCounters {
    /// Open connections to all the pool's targets.
    pub connections: AtomicU64,
    /// Requests waiting for a connection to be opened.
    pub pending: AtomicU64,
}

/// The pool's limits on connections, as [`TargetClient::send`] applies them.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    /// Most open connections to all the pool's targets.
    pub max_connections: u64,
    /// Most requests waiting for a new connection.
    pub max_pending: u64,
}

/// A pool limit that refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// `circuitBreaker.maxConnections`.
    MaxConnections,
    /// `circuitBreaker.maxPendingRequests`.
    MaxPendingRequests,
    /// `circuitBreaker.maxRequests`.
    MaxRequests,
}

impl Limit {
    /// The limit's name as it appears in the `x-weir-overflow` header and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MaxConnections => "max-connections",
            Self::MaxPendingRequests => "max-pending-requests",
            Self::MaxRequests => "max-requests",
        }
    }
}

/// A failed send: what went wrong and, when the request never left, the request itself, so
/// that it can go to another target whatever its method and body.
#[derive(Debug)]
pub struct SendError<B> {
    /// What went wrong.
    pub error: UpstreamError,
    /// The request, when the target saw nothing of it; boxed, since a failure is rare and
    /// every send's result would otherwise be as large as a request.
    pub unsent: Option<Box<Request<B>>>,
}

/// What [`TargetClient::send`] comes back with.
pub type SendResult<B> = Result<(Response<Incoming>, Option<Checkout<B>>), SendError<B>>;

#[derive(Debug)]
struct IdleConnection<B> {
    sender: http1::SendRequest<B>,
    since: Instant,
}

/// An HTTP/1.1 connection lent to one request; [`Checkout::release`] returns it to its
/// client's idle stack once the response body has been read to its end.
#[derive(Debug)]
pub struct Checkout<B> {
    client: Arc<TargetClient<B>>,
    sender: http1::SendRequest<B>,
}

/// Why a request could not be exchanged with a target.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// TCP connect failed (refused, unreachable).
    #[error("connect failed: {0}")]
    Connect(#[source] std::io::Error),
    /// TCP connect did not finish within the connect timeout.
    #[error("connect timed out after {0:?}")]
    ConnectTimeout(Duration),
    /// The HTTP handshake on a new connection failed.
    #[error("handshake failed: {0}")]
    Handshake(#[source] hyper::Error),
    /// The exchange failed after the request was sent: reset, closed, or an invalid response.
    #[error("{0}")]
    Exchange(#[source] hyper::Error),
    /// Every connection tried closed before the request could be sent.
    #[error("connections kept closing before the request could be sent")]
    Stale,
    /// A pool limit is reached.
    #[error("pool limit {} reached", .0.as_str())]
    Overflow(Limit),
}

impl<B> SendBody for B where
    B: Body<Data = Bytes, Error: Into<Box<dyn std::error::Error + Send + Sync>>>
        + Send
        + Unpin
        + 'static
{
}

impl ClientSettings {
    /// The connection settings `pool` asks for.
    pub fn of(pool: &Pool) -> Self {
        Self {
            protocol: pool.upstream.protocol,
            max_idle: pool.upstream.max_idle_per_target,
            connect_timeout: pool.timeouts.connect.get(),
            idle_timeout: pool.timeouts.idle.get(),
        }
    }
}

impl UpstreamError {
    /// Whether the request never reached the target, so it is not the target's response that
    /// failed but the connection to it.
    pub fn is_connect(&self) -> bool {
        matches!(
            self,
            Self::Connect(_) | Self::ConnectTimeout(_) | Self::Handshake(_) | Self::Stale
        )
    }
}

impl<B: SendBody> TargetClient<B> {
    /// A client for `address` with no connection yet, counting open connections into `connections` and into
    /// the pool-wide `shared` counters.
    pub fn new(
        address: SocketAddr,
        settings: ClientSettings,
        connections: Arc<AtomicU64>,
        shared: Arc<ConnectionCounters>,
    ) -> Self {
        Self {
            address,
            settings,
            idle: Mutex::default(),
            h2: tokio::sync::Mutex::default(),
            connections,
            shared,
        }
    }

    /// The settings this client was built with.
    pub fn settings(&self) -> &ClientSettings {
        &self.settings
    }

    /// Sends `req` and returns the response head, with the connection to release when the
    /// body is done (HTTP/1.1 only; HTTP/2 streams share one connection).
    ///
    /// Not an `async fn`: one would hold the request once more, beside the protocol's own
    /// future that holds it too, in a future every request carries.
    pub fn send(
        self: &Arc<Self>,
        req: Request<B>,
        limits: ConnectionLimits,
    ) -> impl Future<Output = SendResult<B>> {
        match self.settings.protocol {
            UpstreamProtocol::Http1 => Either::Left(
                self.send_h1(req, limits)
                    .map(|sent| sent.map(|(r, c)| (r, Some(c)))),
            ),
            UpstreamProtocol::Http2 => Either::Right(
                self.send_h2(req, limits)
                    .map(|sent| sent.map(|r| (r, None))),
            ),
        }
    }

    async fn send_h1(
        self: &Arc<Self>,
        mut req: Request<B>,
        limits: ConnectionLimits,
    ) -> Result<(Response<Incoming>, Checkout<B>), SendError<B>> {
        for _ in 0..STALE_RETRIES {
            let mut sender = match self.take_idle() {
                Some(sender) => sender,
                // Boxed: a new connection is rare, and its future (dial, timer, handshake)
                // would otherwise sit inline in every request's future, copied with it.
                None => match Box::pin(self.connect_h1(limits)).await {
                    Ok(sender) => sender,
                    Err(error) => {
                        return Err(SendError {
                            error,
                            unsent: Some(Box::new(req)),
                        });
                    }
                },
            };
            if sender.ready().await.is_err() {
                continue;
            }
            match sender.try_send_request(req).await {
                Ok(response) => {
                    return Ok((
                        response,
                        Checkout {
                            client: self.clone(),
                            sender,
                        },
                    ));
                }
                Err(mut e) => match e.take_message() {
                    // The connection closed before the request went out: safe to send again,
                    // whatever the method, since the target saw nothing.
                    Some(unsent) => req = unsent,
                    None => {
                        return Err(SendError {
                            error: UpstreamError::Exchange(e.into_error()),
                            unsent: None,
                        });
                    }
                },
            }
        }
        Err(SendError {
            error: UpstreamError::Stale,
            unsent: Some(Box::new(req)),
        })
    }

    async fn send_h2(
        &self,
        req: Request<B>,
        limits: ConnectionLimits,
    ) -> Result<Response<Incoming>, SendError<B>> {
        let shared = {
            let mut shared = self.h2.lock().await;
            match shared.as_ref() {
                Some(s) if !s.is_closed() => Ok(s.clone()),
                // Boxed, as in `send_h1`: rare, and large (the HTTP/2 builder and handshake).
                _ => match Box::pin(self.connect_h2(limits)).await {
                    Ok(s) => {
                        *shared = Some(s.clone());
                        Ok(s)
                    }
                    Err(e) => Err(e),
                },
            }
        };
        let mut sender = match shared {
            Ok(sender) => sender,
            Err(error) => {
                return Err(SendError {
                    error,
                    unsent: Some(Box::new(req)),
                });
            }
        };
        if let Err(e) = sender.ready().await {
            return Err(SendError {
                error: UpstreamError::Exchange(e),
                unsent: Some(Box::new(req)),
            });
        }
        match sender.try_send_request(req).await {
            Ok(response) => Ok(response),
            Err(mut e) => {
                let unsent = e.take_message().map(Box::new);
                Err(SendError {
                    error: UpstreamError::Exchange(e.into_error()),
                    unsent,
                })
            }
        }
    }

    fn take_idle(&self) -> Option<http1::SendRequest<B>> {
        let mut idle = self.idle();
        while let Some(c) = idle.pop_back() {
            if c.since.elapsed() < self.settings.idle_timeout && !c.sender.is_closed() {
                return Some(c.sender);
            }
        }
        None
    }

    fn put_idle(&self, sender: http1::SendRequest<B>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle();
        self.expire(&mut idle);
        if idle.len() < self.settings.max_idle {
            idle.push_back(IdleConnection {
                sender,
                since: Instant::now(),
            });
        }
    }

    /// Closes idle connections past the idle timeout; the rest of the time this happens as a
    /// side effect of traffic, this is for targets that went quiet.
    pub fn sweep(&self) {
        self.expire(&mut self.idle());
    }

    fn expire(&self, idle: &mut VecDeque<IdleConnection<B>>) {
        // Oldest first: the stack's bottom ages while the top serves traffic.
        while idle.front().is_some_and(|c| {
            c.since.elapsed() >= self.settings.idle_timeout || c.sender.is_closed()
        }) {
            idle.pop_front();
        }
    }

    async fn connect(&self, limits: ConnectionLimits) -> Result<TokioIo<TcpStream>, UpstreamError> {
        if self.shared.connections.load(Ordering::Relaxed) >= limits.max_connections {
            return Err(UpstreamError::Overflow(Limit::MaxConnections));
        }
        let pending = &self.shared.pending;
        if pending.fetch_add(1, Ordering::Relaxed) >= limits.max_pending {
            pending.fetch_sub(1, Ordering::Relaxed);
            return Err(UpstreamError::Overflow(Limit::MaxPendingRequests));
        }
        let connected = self.dial().await;
        pending.fetch_sub(1, Ordering::Relaxed);
        connected
    }

    async fn dial(&self) -> Result<TokioIo<TcpStream>, UpstreamError> {
        let timeout = self.settings.connect_timeout;
        let stream = tokio::time::timeout(timeout, TcpStream::connect(self.address))
            .await
            .map_err(|_| UpstreamError::ConnectTimeout(timeout))?
            .map_err(UpstreamError::Connect)?;
        let _ = stream.set_nodelay(true);
        Ok(TokioIo::new(stream))
    }

    async fn connect_h1(
        &self,
        limits: ConnectionLimits,
    ) -> Result<http1::SendRequest<B>, UpstreamError> {
        let io = self.connect(limits).await?;
        let (sender, connection) = http1::handshake(io)
            .await
            .map_err(UpstreamError::Handshake)?;
        self.spawn_counted(connection.with_upgrades());
        Ok(sender)
    }

    async fn connect_h2(
        &self,
        limits: ConnectionLimits,
    ) -> Result<http2::SendRequest<B>, UpstreamError> {
        let io = self.connect(limits).await?;
        let (sender, connection) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(Duration::from_secs(30))
            .handshake(io)
            .await
            .map_err(UpstreamError::Handshake)?;
        self.spawn_counted(connection);
        Ok(sender)
    }

    /// Drives a connection in its own task, counted as open until it ends.
    fn spawn_counted<F>(&self, connection: F)
    where
        F: Future<Output = Result<(), hyper::Error>> + Send + 'static,
    {
        let (counter, shared) = (self.connections.clone(), self.shared.clone());
        counter.fetch_add(1, Ordering::Relaxed);
        shared.connections.fetch_add(1, Ordering::Relaxed);
        let address = self.address;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(%address, error = %e, "target connection ended with an error");
            }
            counter.fetch_sub(1, Ordering::Relaxed);
            shared.connections.fetch_sub(1, Ordering::Relaxed);
        });
    }

    fn idle(&self) -> MutexGuard<'_, VecDeque<IdleConnection<B>>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<B: SendBody> Checkout<B> {
    /// Returns the connection to its client for the next request.
    pub fn release(self) {
        self.client.put_idle(self.sender);
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::{BodyExt, Full};
    use hyper::server::conn::http1 as server;
    use hyper::service::service_fn;
    use tokio::net::TcpListener;
    use weir_api::PoolsFile;

    use super::*;

    /// A target on loopback answering every request with its body, over keep-alive.
    async fn echo_target() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let echo = service_fn(|req: Request<Incoming>| async move {
                        let body = req.into_body().collect().await?.to_bytes();
                        Ok::<_, hyper::Error>(Response::new(Full::new(body)))
                    });
                    let _ = server::Builder::new()
                        .serve_connection(TokioIo::new(stream), echo)
                        .await;
                });
            }
        });
        address
    }

    fn settings() -> ClientSettings {
        let file: PoolsFile = serde_yaml::from_str(
            "pools:\n  - name: web\n    targets: [{ address: 127.0.0.1:9 }]\n",
        )
        .unwrap();
        ClientSettings::of(&file.pools[0])
    }

    const NO_LIMITS: ConnectionLimits = ConnectionLimits {
        max_connections: u64::MAX,
        max_pending: u64::MAX,
    };

    #[tokio::test]
    async fn a_released_connection_carries_the_next_request_and_a_dropped_one_is_not_reused() {
        let address = echo_target().await;
        let open = Arc::new(AtomicU64::new(0));
        let client = Arc::new(TargetClient::new(
            address,
            settings(),
            open.clone(),
            Arc::default(),
        ));
        let request = |body: &'static str| {
            Request::post("/")
                .header(http::header::HOST, address.to_string())
                .body(Full::new(Bytes::from_static(body.as_bytes())))
                .unwrap()
        };
        for body in ["one", "two"] {
            let (response, checkout) = client.send(request(body), NO_LIMITS).await.unwrap();
            let got = response.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(got, body);
            checkout.expect("HTTP/1.1 lends its connection").release();
            assert_eq!(
                client.idle().len(),
                1,
                "released: idle for the next request"
            );
        }
        assert_eq!(open.load(Ordering::Relaxed), 1, "one connection for both");
        assert_eq!(client.shared.connections.load(Ordering::Relaxed), 1);

        let (response, checkout) = client.send(request("three"), NO_LIMITS).await.unwrap();
        assert_eq!(client.idle().len(), 0, "lent out");
        response.into_body().collect().await.unwrap();
        drop(checkout);
        assert_eq!(client.idle().len(), 0, "dropped: never lent again");
    }

    #[tokio::test]
    async fn a_target_that_refuses_connections_hands_the_request_back_unsent() {
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = closed.local_addr().unwrap();
        drop(closed);
        let client = Arc::new(TargetClient::new(
            address,
            settings(),
            Arc::default(),
            Arc::default(),
        ));
        let request = Request::get("/").body(Full::new(Bytes::new())).unwrap();
        let e = client.send(request, NO_LIMITS).await.unwrap_err();
        assert!(e.error.is_connect(), "{}", e.error);
        assert!(e.unsent.is_some(), "a request that never left comes back");
    }

    #[tokio::test]
    async fn a_pool_at_its_connection_limit_refuses_to_open_another() {
        let address = echo_target().await;
        let shared = Arc::new(ConnectionCounters::default());
        shared.connections.store(2, Ordering::Relaxed);
        let client = Arc::new(TargetClient::new(
            address,
            settings(),
            Arc::default(),
            shared,
        ));
        let limits = ConnectionLimits {
            max_connections: 2,
            max_pending: u64::MAX,
        };
        let request = Request::get("/").body(Full::new(Bytes::new())).unwrap();
        let e = client.send(request, limits).await.unwrap_err();
        assert!(
            matches!(e.error, UpstreamError::Overflow(Limit::MaxConnections)),
            "{}",
            e.error
        );
        assert!(e.unsent.is_some());
    }
}
