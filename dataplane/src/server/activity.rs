//! What one downstream connection is doing, as its timers and budgets need to know: how many
//! requests are in flight, since when it has been idle, when the client started the next
//! request head, and how many of its HTTP/2 streams the client reset before they were answered.
//!
//! hyper has no idle timeout for its server connections and no view of reset streams, so the
//! connection's IO ([`Watched`]), every request's service future and every response body
//! ([`Tracked`]) report here, and the connection task in `server.rs` reads it to decide when
//! to close.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::Instant;

/// A stream the client resets sooner than this after opening it, before its response head,
/// counts as a premature reset (Envoy's `premature_reset_min_stream_lifetime_seconds`): a
/// client abandoning a long request is normal, one abandoning requests at once is not.
pub const PREMATURE_WINDOW: Duration = Duration::from_secs(1);

/// Premature resets a connection may make before the ratio below is checked: enough for
/// browsers that cancel a page's requests on navigation and for clients with short deadlines.
pub const PREMATURE_RESETS_ALLOWED: u64 = 100;

/// Which protocol a connection speaks, told by its first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.1 (or 1.0).
    Http1,
    /// HTTP/2 with prior knowledge (h2c).
    Http2,
}

/// Why a connection is due to close.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expiry {
    /// No request in flight for the idle timeout.
    Idle,
    /// A request head was started and not finished within the header read timeout.
    Header,
}

/// The timeouts a connection's [`Activity::deadline`] applies.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// Longest wait for the next request with none in flight.
    pub idle: Duration,
    /// Longest time from a request head's first byte to its end (and from the connection's
    /// start to its first request's head).
    pub header: Duration,
}

/// Shared by a connection's IO, its requests and its task.
#[derive(Debug)]
pub struct Activity {
    protocol: Protocol,
    born: Instant,
    in_flight: AtomicU32,
    /// Milliseconds after `born` when the last request in flight ended.
    idle_since: AtomicU64,
    /// One more than the milliseconds after `born` when the client sent the first byte after
    /// going idle; 0 while it has sent none.
    head_started: AtomicU64,
    requests: AtomicU64,
    premature_resets: AtomicU64,
    condemned: AtomicBool,
    /// Woken when the connection is condemned. Requests coming and going wake nothing: the
    /// connection task looks at the deadline at least once a header timeout instead, which
    /// costs an idle connection a few wake-ups and a busy one none per request.
    pub condemned_now: Notify,
}

/// The connection has reset too many streams before their answers; it gets no more.
#[derive(Debug)]
pub struct Condemned;

/// One request, from its head to the end (or the abandonment) of its response body.
#[derive(Debug)]
pub struct RequestGuard {
    activity: Arc<Activity>,
    arrived: Option<Instant>,
    answered: bool,
}

/// A response body that keeps its request counted in flight until it ends or is dropped.
#[derive(Debug)]
pub struct Tracked<B> {
    inner: B,
    _request: RequestGuard,
}

/// The client's socket, reporting to the connection's [`Activity`] whenever bytes arrive, and
/// holding whatever `G` is (the connection's slot under the cap) for as long as the socket
/// lives, upgrades included.
#[derive(Debug)]
pub struct Watched<G> {
    stream: TcpStream,
    activity: Arc<Activity>,
    _hold: G,
}

impl Activity {
    /// A connection speaking `protocol`, born now.
    pub fn new(protocol: Protocol) -> Arc<Self> {
        Arc::new(Self {
            protocol,
            born: Instant::now(),
            in_flight: AtomicU32::new(0),
            idle_since: AtomicU64::new(0),
            head_started: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            premature_resets: AtomicU64::new(0),
            condemned: AtomicBool::new(false),
            condemned_now: Notify::new(),
        })
    }

    fn now_ms(&self) -> u64 {
        self.born.elapsed().as_millis() as u64
    }

    fn at(&self, ms: u64) -> Instant {
        self.born + Duration::from_millis(ms)
    }

    /// Requests in flight.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Whether the connection has been condemned for resetting too many streams.
    pub fn is_condemned(&self) -> bool {
        self.condemned.load(Ordering::Acquire)
    }

    /// Starts a request, unless the connection is condemned. An HTTP/2 connection is condemned
    /// here, when a stream arrives, once more than [`PREMATURE_RESETS_ALLOWED`] of its streams
    /// were reset prematurely and they are at least half of its streams (Envoy's rule): checked
    /// at arrival rather than at the reset, so a client that merely disconnects with many
    /// requests in flight is never counted as abusive.
    pub fn request(self: &Arc<Self>) -> Result<RequestGuard, Condemned> {
        let requests = self.requests.fetch_add(1, Ordering::Relaxed) + 1;
        if self.protocol == Protocol::Http2 {
            let premature = self.premature_resets.load(Ordering::Relaxed);
            if premature > PREMATURE_RESETS_ALLOWED && premature * 2 >= requests {
                if !self.condemned.swap(true, Ordering::AcqRel) {
                    self.condemned_now.notify_one();
                }
                return Err(Condemned);
            }
        }
        if self.is_condemned() {
            return Err(Condemned);
        }
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        Ok(RequestGuard {
            activity: self.clone(),
            // Only HTTP/2 streams can be reset prematurely; HTTP/1.1 skips the clock.
            arrived: (self.protocol == Protocol::Http2).then(Instant::now),
            answered: false,
        })
    }

    /// When the connection is due to close and why, while it has no request in flight; `None`
    /// while one is.
    ///
    /// HTTP/1.1: the first request's head must be complete within the header timeout of the
    /// connection's start; later, the wait for the next request's first byte is the idle
    /// timeout, and from that byte the head must be complete within the header timeout.
    /// HTTP/2: the idle timeout from the end of the last stream (or the connection's start),
    /// whatever else the client sends meanwhile (PINGs, SETTINGS, a header block it never
    /// finishes), since none of it is a request.
    pub fn deadline(&self, timeouts: Timeouts) -> Option<(Instant, Expiry)> {
        if self.in_flight() > 0 {
            return None;
        }
        let idle_since = self.at(self.idle_since.load(Ordering::Acquire));
        if self.protocol == Protocol::Http2 {
            return Some((idle_since + timeouts.idle, Expiry::Idle));
        }
        match self.head_started.load(Ordering::Acquire) {
            0 if self.requests.load(Ordering::Relaxed) == 0 => {
                Some((idle_since + timeouts.header, Expiry::Header))
            }
            0 => Some((idle_since + timeouts.idle, Expiry::Idle)),
            started => Some((self.at(started - 1) + timeouts.header, Expiry::Header)),
        }
    }

    /// Bytes arrived from the client: on an idle HTTP/1.1 connection, the next request's head
    /// has begun and its header timeout starts.
    fn saw_bytes(&self) {
        if self.protocol == Protocol::Http1
            && self.in_flight() == 0
            && self.head_started.load(Ordering::Relaxed) == 0
        {
            self.head_started
                .store(self.now_ms() + 1, Ordering::Release);
        }
    }
}

impl RequestGuard {
    /// The response head is ready: a reset from now on is not premature.
    pub fn answered(&mut self) {
        self.answered = true;
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let activity = &self.activity;
        if !self.answered
            && self
                .arrived
                .is_some_and(|arrived| arrived.elapsed() < PREMATURE_WINDOW)
        {
            activity.premature_resets.fetch_add(1, Ordering::Relaxed);
        }
        if activity.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            activity
                .idle_since
                .store(activity.now_ms(), Ordering::Release);
            activity.head_started.store(0, Ordering::Release);
        }
    }
}

impl<B> Tracked<B> {
    /// `inner`, keeping `request` in flight until it ends.
    pub fn new(inner: B, request: RequestGuard) -> Self {
        Self {
            inner,
            _request: request,
        }
    }
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<G> Watched<G> {
    /// `stream`, reporting to `activity`, holding `hold` until dropped.
    pub fn new(stream: TcpStream, activity: Arc<Activity>, hold: G) -> Self {
        Self {
            stream,
            activity,
            _hold: hold,
        }
    }
}

impl<G: Unpin> AsyncRead for Watched<G> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.saw_bytes();
        }
        polled
    }
}

impl<G: Unpin> AsyncWrite for Watched<G> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUTS: Timeouts = Timeouts {
        idle: Duration::from_secs(60),
        header: Duration::from_secs(10),
    };

    #[tokio::test(start_paused = true)]
    async fn an_http1_connection_has_the_header_timeout_for_its_first_request_then_the_idle_timeout()
     {
        let a = Activity::new(Protocol::Http1);
        let born = Instant::now();
        assert_eq!(
            a.deadline(TIMEOUTS),
            Some((born + TIMEOUTS.header, Expiry::Header))
        );
        let guard = a.request().unwrap();
        assert_eq!(a.deadline(TIMEOUTS), None, "a request is in flight");
        tokio::time::advance(Duration::from_secs(3)).await;
        drop(guard);
        let idle = born + Duration::from_secs(3);
        assert_eq!(
            a.deadline(TIMEOUTS),
            Some((idle + TIMEOUTS.idle, Expiry::Idle))
        );
        tokio::time::advance(Duration::from_secs(20)).await;
        a.saw_bytes();
        assert_eq!(
            a.deadline(TIMEOUTS),
            Some((
                idle + Duration::from_secs(20) + TIMEOUTS.header,
                Expiry::Header
            )),
            "the next head has begun"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_http2_connection_is_idle_whatever_it_sends_while_no_stream_is_open() {
        let a = Activity::new(Protocol::Http2);
        let born = Instant::now();
        tokio::time::advance(Duration::from_secs(5)).await;
        a.saw_bytes();
        assert_eq!(
            a.deadline(TIMEOUTS),
            Some((born + TIMEOUTS.idle, Expiry::Idle))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_http2_connection_resetting_most_of_its_streams_at_once_is_condemned() {
        let a = Activity::new(Protocol::Http2);
        for _ in 0..=PREMATURE_RESETS_ALLOWED {
            drop(a.request().expect("within the budget"));
        }
        assert!(a.request().is_err(), "one reset too many");
        assert!(a.is_condemned());
        assert!(a.request().is_err(), "and nothing more after");
    }

    #[tokio::test(start_paused = true)]
    async fn answered_or_slow_streams_are_not_premature_resets() {
        let a = Activity::new(Protocol::Http2);
        for i in 0..1000 {
            let mut guard = a.request().expect("never condemned");
            if i % 2 == 0 {
                guard.answered();
            } else {
                tokio::time::advance(PREMATURE_WINDOW).await;
            }
        }
        assert!(!a.is_condemned());
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_whose_resets_are_under_half_its_streams_is_not_condemned() {
        let a = Activity::new(Protocol::Http2);
        for i in 0..1000 {
            let mut guard = a.request().expect("under half are premature");
            if i % 3 != 0 {
                guard.answered();
            }
        }
    }
}
