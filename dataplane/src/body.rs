//! Bodies on both sides of the proxy: streamed through untouched, counted on the way.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::stats::{InFlight, TargetStats};
use crate::upstream::Checkout;

/// A request body on its way to a target, counted as it goes. Either streamed from the
/// client (cut off past the body limit, so a client cannot stream without end where
/// `Content-Length` did not announce the size), or buffered so a retry can send it again.
#[derive(Debug)]
pub struct RequestBody {
    source: Source,
    target: Arc<TargetStats>,
}

#[derive(Debug)]
enum Source {
    Stream {
        inner: Incoming,
        remaining: u64,
        limit: u64,
    },
    Buffered(Option<Bytes>),
}

/// The request body went past the configured limit while streaming.
#[derive(Debug, thiserror::Error)]
#[error("request body exceeds the {limit}-byte limit")]
pub struct BodyTooLarge {
    /// The limit in force.
    pub limit: u64,
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
        /// The connection, returned to its pool once the body has been read to its end.
        checkout: Option<Checkout>,
    },
    /// Written by the proxy (errors, admin answers).
    Full(Option<Bytes>),
}

impl RequestBody {
    /// Streams `inner` to `target`, allowing at most `limit` bytes.
    pub fn stream(inner: Incoming, target: Arc<TargetStats>, limit: u64) -> Self {
        Self {
            source: Source::Stream {
                inner,
                remaining: limit,
                limit,
            },
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
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let (inner, remaining, limit) = match &mut this.source {
            Source::Buffered(bytes) => {
                let frame = bytes.take().filter(|b| !b.is_empty()).map(|b| {
                    this.target
                        .bytes_sent
                        .fetch_add(b.len() as u64, Ordering::Relaxed);
                    Ok(Frame::data(b))
                });
                return Poll::Ready(frame);
            }
            Source::Stream {
                inner,
                remaining,
                limit,
            } => (inner, remaining, *limit),
        };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let len = data.len() as u64;
                    if len > *remaining {
                        return Poll::Ready(Some(Err(Box::new(BodyTooLarge { limit }))));
                    }
                    *remaining -= len;
                    this.target.bytes_sent.fetch_add(len, Ordering::Relaxed);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.source {
            Source::Stream { inner, .. } => inner.is_end_stream(),
            Source::Buffered(bytes) => bytes.as_ref().is_none_or(Bytes::is_empty),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.source {
            Source::Stream { inner, .. } => inner.size_hint(),
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
            } => {
                let polled = Pin::new(&mut *inner).poll_frame(cx);
                match &polled {
                    Poll::Ready(Some(Ok(frame))) => {
                        if let Some(data) = frame.data_ref() {
                            let received = &in_flight.target().bytes_received;
                            received.fetch_add(data.len() as u64, Ordering::Relaxed);
                        }
                        if let Some(c) = checkout.take_if(|_| inner.is_end_stream()) {
                            c.release();
                        }
                    }
                    Poll::Ready(None) => {
                        if let Some(c) = checkout.take() {
                            c.release();
                        }
                    }
                    // An error leaves the connection in an unknown state: it is not reused.
                    Poll::Ready(Some(Err(_))) => drop(checkout.take()),
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
