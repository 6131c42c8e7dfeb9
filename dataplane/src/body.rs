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

/// A request body streamed to a target: counted, and cut off past the body limit so a
/// client cannot stream without end where `Content-Length` did not announce the size.
#[derive(Debug)]
pub struct RequestBody {
    inner: Incoming,
    target: Arc<TargetStats>,
    remaining: u64,
    limit: u64,
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
    /// Wraps `inner`, counting into `target` and allowing at most `limit` bytes.
    pub fn new(inner: Incoming, target: Arc<TargetStats>, limit: u64) -> Self {
        Self {
            inner,
            target,
            remaining: limit,
            limit,
        }
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
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let len = data.len() as u64;
                    if len > this.remaining {
                        return Poll::Ready(Some(Err(Box::new(BodyTooLarge {
                            limit: this.limit,
                        }))));
                    }
                    this.remaining -= len;
                    this.target.bytes_sent.fetch_add(len, Ordering::Relaxed);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(e)))),
            other => other.map_err(|e| Box::new(e) as Self::Error),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
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
