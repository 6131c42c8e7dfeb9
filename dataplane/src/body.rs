//! Bodies on both sides of the proxy: streamed through untouched, counted on the way.
//!
//! The client's request body is read through [`ClientBody`], which turns everything that can
//! go wrong on the client's side (a malformed or truncated body, one over the limit, a client
//! that stops sending) into a [`ClientBodyError`]. That error travels inside hyper's client
//! error when the body was being streamed to a target, and [`crate::error`] finds it there: a
//! failure the client caused is never blamed on the target.
//!
//! [`ClientBody`] reads any body: hyper's [`Incoming`] as it is, anything else boxed, so the
//! request path can be served in-process (tests hand it a `Full`) while the body read off the
//! wire costs no allocation and no dynamic call.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Incoming;
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};

use crate::access_log::Pending;
use crate::stats::{InFlight, TargetStats};
use crate::upstream::Checkout;

/// The client's request body, cut off past the body limit (so a client cannot stream without
/// end where `Content-Length` did not announce the size) and past the body read timeout (so a
/// client that stops sending does not hold a target's connection).
#[derive(Debug)]
pub struct ClientBody {
    inner: Inner,
    remaining: u64,
    limit: u64,
    read_timeout: Duration,
    /// Armed when the client's body is waited for, disarmed by each frame: only time spent
    /// waiting for the client counts, not time the target took to take what was sent.
    stalled: Option<Pin<Box<Sleep>>>,
    waiting: bool,
    ended: Option<Arc<BodyEnded>>,
}

/// What a [`ClientBody`] reads.
#[derive(Debug)]
enum Inner {
    /// Off the wire: every request the listener serves.
    Wire(Incoming),
    /// Any other body (a request served in-process).
    Other(UnsyncBoxBody<Bytes, BoxError>),
}

/// The error of a body other than hyper's.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Tells when the client's body has been read to its end: a target's time to answer starts
/// there (as Envoy's route timeout does), so a client that uploads slowly is not taken for a
/// target that answers slowly.
#[derive(Debug, Default)]
pub struct BodyEnded {
    done: AtomicBool,
    notify: Notify,
    /// Body bytes read from the client so far, for the access log.
    pub bytes: AtomicU64,
}

/// Why the client's request body could not be read: always the client's doing.
#[derive(Debug, thiserror::Error)]
pub enum ClientBodyError {
    /// The body went past the configured limit while streaming.
    #[error("request body exceeds the {limit}-byte limit")]
    TooLarge {
        /// The limit in force.
        limit: u64,
    },
    /// The body's framing is broken: a bad chunk size, a bad chunk terminator, more data than
    /// announced.
    #[error("malformed request body: {0}")]
    Malformed(#[source] BoxError),
    /// The client closed its connection or reset its stream before the body ended.
    #[error("the client went away before the request body ended: {0}")]
    Gone(#[source] BoxError),
    /// The client sent nothing of its body for the body read timeout.
    #[error("the client sent no request body data for {0:?}")]
    Timeout(Duration),
}

/// A request body on its way to a target, counted as it goes: either streamed from the
/// client, or buffered so a retry can send it again.
#[derive(Debug)]
pub struct RequestBody {
    source: Source,
    target: Arc<TargetStats>,
}

#[derive(Debug)]
enum Source {
    Stream(ClientBody),
    Buffered(Option<Bytes>),
}

/// A response body: a target's, streamed through, or one the proxy wrote itself.
#[derive(Debug)]
pub enum ResponseBody {
    /// From a target; holds the request in flight until the body ends or is dropped.
    Upstream {
        /// The target's body.
        inner: Incoming,
        /// In-flight accounting of the request.
        in_flight: InFlight,
        /// The connection, returned to its target's client once the body has been read to
        /// its end.
        checkout: Option<Checkout<RequestBody>>,
        /// The request's access-log line, sent when the body ends or is dropped.
        log: Option<Box<Pending>>,
    },
    /// Written by the proxy (errors, admin answers).
    Full(Option<Bytes>),
}

impl ClientBody {
    /// Reads `inner`, allowing at most `limit` bytes and `read_timeout` between two frames.
    pub fn new<B>(inner: B, limit: u64, read_timeout: Duration) -> Self
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        // Resolved when `B` is known: hyper's body is kept as it is, the rest are boxed.
        let inner = match try_downcast::<Incoming, B>(inner) {
            Ok(wire) => Inner::Wire(wire),
            Err(other) => Inner::Other(other.map_err(Into::into).boxed_unsync()),
        };
        Self {
            inner,
            remaining: limit,
            limit,
            read_timeout,
            stalled: None,
            waiting: false,
            ended: None,
        }
    }

    /// What tells when this body has been read to its end.
    pub fn watch_end(&mut self) -> Arc<BodyEnded> {
        let ended = self.ended.get_or_insert_with(Arc::default).clone();
        if self.inner.is_end_stream() {
            ended.set();
        }
        ended
    }

    fn finished(&self) {
        if let Some(ended) = &self.ended {
            ended.set();
        }
    }
}

impl Inner {
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self {
            Self::Wire(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            Self::Other(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Wire(b) => b.is_end_stream(),
            Self::Other(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Wire(b) => b.size_hint(),
            Self::Other(b) => b.size_hint(),
        }
    }
}

/// `k` as a `T` if it is one, without boxing it (axum-core's `try_downcast`).
fn try_downcast<T: 'static, K: Send + 'static>(k: K) -> Result<T, K> {
    let mut k = Some(k);
    match <dyn std::any::Any>::downcast_mut::<Option<T>>(&mut k) {
        Some(t) => Ok(t.take().expect("just put there")),
        None => Err(k.expect("just put there")),
    }
}

impl BodyEnded {
    fn set(&self) {
        if !self.done.swap(true, Ordering::AcqRel) {
            self.notify.notify_waiters();
        }
    }

    /// Waits until the body has ended.
    pub async fn wait(&self) {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            // Registered before the flag is read, so a `set` in between is not missed.
            notified.as_mut().enable();
            if self.done.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }
}

impl ClientBodyError {
    /// Classifies an error from the client's side of the connection: framing errors are the
    /// ones hyper's decoder reports as invalid data or input; the rest (end of file before the
    /// body ended, a connection error, a reset stream) mean the client went away.
    fn of(e: BoxError) -> Self {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&*e);
        while let Some(s) = source {
            if let Some(io) = s.downcast_ref::<std::io::Error>() {
                use std::io::ErrorKind::{InvalidData, InvalidInput};
                if matches!(io.kind(), InvalidData | InvalidInput) {
                    return Self::Malformed(e);
                }
            }
            if let Some(h2) = s.downcast_ref::<h2::Error>() {
                let gone = h2.is_io()
                    || h2.is_go_away()
                    || (h2.is_remote()
                        && h2
                            .reason()
                            .is_some_and(|r| r == h2::Reason::CANCEL || r == h2::Reason::NO_ERROR));
                return if gone {
                    Self::Gone(e)
                } else {
                    Self::Malformed(e)
                };
            }
            source = s.source();
        }
        Self::Gone(e)
    }

    /// Finds a client body error among the causes of `err`, however deep hyper's client put it.
    pub fn find<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a Self> {
        let mut source = Some(err);
        while let Some(s) = source {
            if let Some(found) = s.downcast_ref::<Self>() {
                return Some(found);
            }
            source = s.source();
        }
        None
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = ClientBodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientBodyError>>> {
        let this = &mut *self;
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.waiting = false;
                if let Some(data) = frame.data_ref() {
                    let len = data.len() as u64;
                    if len > this.remaining {
                        let limit = this.limit;
                        return Poll::Ready(Some(Err(ClientBodyError::TooLarge { limit })));
                    }
                    this.remaining -= len;
                    if let Some(ended) = &this.ended {
                        ended.bytes.fetch_add(len, Ordering::Relaxed);
                    }
                }
                if this.inner.is_end_stream() {
                    this.finished();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(ClientBodyError::of(e)))),
            Poll::Ready(None) => {
                this.finished();
                Poll::Ready(None)
            }
            Poll::Pending => {
                let deadline = Instant::now() + this.read_timeout;
                let stalled = match &mut this.stalled {
                    // Most bodies arrive whole with their head and never get here: the timer
                    // is made only for bodies that are actually waited for.
                    None => this
                        .stalled
                        .insert(Box::pin(tokio::time::sleep_until(deadline))),
                    Some(s) => {
                        if !this.waiting {
                            s.as_mut().reset(deadline);
                        }
                        s
                    }
                };
                this.waiting = true;
                ready!(stalled.as_mut().poll(cx));
                Poll::Ready(Some(Err(ClientBodyError::Timeout(this.read_timeout))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl RequestBody {
    /// Streams the client's body to `target`.
    pub fn stream(inner: ClientBody, target: Arc<TargetStats>) -> Self {
        Self {
            source: Source::Stream(inner),
            target,
        }
    }

    /// Sends `bytes`, already read from the client, to `target`.
    pub fn buffered(bytes: Bytes, target: Arc<TargetStats>) -> Self {
        Self {
            source: Source::Buffered(Some(bytes)),
            target,
        }
    }

    /// The same body, counted for another target: a request that never left is sent on.
    pub fn retarget(mut self, target: Arc<TargetStats>) -> Self {
        self.target = target;
        self
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = ClientBodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let polled = match &mut this.source {
            Source::Buffered(bytes) => Poll::Ready(
                bytes
                    .take()
                    .filter(|b| !b.is_empty())
                    .map(|b| Ok(Frame::data(b))),
            ),
            Source::Stream(inner) => Pin::new(inner).poll_frame(cx),
        };
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            let sent = &this.target.bytes_sent;
            sent.fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.source {
            Source::Stream(inner) => inner.is_end_stream(),
            Source::Buffered(bytes) => bytes.as_ref().is_none_or(Bytes::is_empty),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.source {
            Source::Stream(inner) => inner.size_hint(),
            Source::Buffered(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
        }
    }
}

impl ResponseBody {
    /// A body the proxy writes itself.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        Self::Full(Some(bytes.into()))
    }

    /// No body.
    pub fn empty() -> Self {
        Self::Full(None)
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            Self::Upstream {
                inner,
                in_flight,
                checkout,
                log,
            } => {
                let polled = Pin::new(&mut *inner).poll_frame(cx);
                match &polled {
                    Poll::Ready(Some(Ok(frame))) => {
                        if let Some(data) = frame.data_ref() {
                            let len = data.len() as u64;
                            let received = &in_flight.target().bytes_received;
                            received.fetch_add(len, Ordering::Relaxed);
                            if let Some(log) = log {
                                log.sent(len);
                            }
                        }
                        if inner.is_end_stream() {
                            if let Some(c) = checkout.take() {
                                c.release();
                            }
                            if let Some(log) = log.take() {
                                log.finish(true);
                            }
                        }
                    }
                    Poll::Ready(None) => {
                        if let Some(c) = checkout.take() {
                            c.release();
                        }
                        if let Some(log) = log.take() {
                            log.finish(true);
                        }
                    }
                    // An error leaves the connection in an unknown state: it is not reused.
                    Poll::Ready(Some(Err(_))) => {
                        drop(checkout.take());
                        if let Some(log) = log.take() {
                            log.finish(false);
                        }
                    }
                    Poll::Pending => {}
                }
                polled
            }
            Self::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Upstream { inner, .. } => inner.is_end_stream(),
            Self::Full(bytes) => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Upstream { inner, .. } => inner.size_hint(),
            Self::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
        }
    }
}
