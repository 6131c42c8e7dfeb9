//! The one response body type of every route.
//!
//! An enum instead of a boxed `dyn Body` keeps the hot path free of a per-response allocation.

use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::Sleep;

/// A response body: a fixed buffer, the request body streamed back, or paced chunks.
pub enum EchoBody {
    /// At most one buffer, sent at once; `None` once sent (or when empty).
    Full(Option<Bytes>),
    /// The request body, echoed frame by frame as it arrives.
    Stream(Incoming),
    /// `remaining` copies of `chunk`, each after waiting `delay`.
    Slow(Slow),
}

/// State of a paced body.
pub struct Slow {
    chunk: Bytes,
    remaining: u32,
    delay: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl EchoBody {
    /// A body of exactly `bytes`.
    pub fn full(bytes: Bytes) -> Self {
        if bytes.is_empty() {
            Self::Full(None)
        } else {
            Self::Full(Some(bytes))
        }
    }

    /// An empty body.
    pub fn empty() -> Self {
        Self::Full(None)
    }

    /// `count` copies of `chunk`, each sent `delay` after the previous one (the first `delay`
    /// after the head), so a client sees the head well before the end of the body.
    pub fn slow(chunk: Bytes, count: u32, delay: Duration) -> Self {
        Self::Slow(Slow {
            chunk,
            remaining: count,
            delay,
            sleep: None,
        })
    }
}

impl Body for EchoBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            Self::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Self::Stream(incoming) => Pin::new(incoming).poll_frame(cx),
            Self::Slow(slow) => {
                if slow.remaining == 0 {
                    return Poll::Ready(None);
                }
                let sleep = slow
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(slow.delay)));
                ready!(sleep.as_mut().poll(cx));
                slow.sleep = None;
                slow.remaining -= 1;
                Poll::Ready(Some(Ok(Frame::data(slow.chunk.clone()))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Full(bytes) => bytes.is_none(),
            Self::Stream(incoming) => incoming.is_end_stream(),
            Self::Slow(slow) => slow.remaining == 0,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Self::Stream(incoming) => incoming.size_hint(),
            // Left open on purpose so HTTP/1.1 sends it chunked, as a streaming backend would.
            Self::Slow(_) => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt as _;

    #[tokio::test]
    async fn full_body_is_sent_once_with_exact_size() {
        let body = EchoBody::full(Bytes::from_static(b"b1\n"));
        assert_eq!(body.size_hint().exact(), Some(3));
        assert!(!body.is_end_stream());
        let collected = body.collect().await.unwrap().to_bytes();
        assert_eq!(&collected[..], b"b1\n");
    }

    #[tokio::test]
    async fn empty_body_ends_at_once() {
        let body = EchoBody::full(Bytes::new());
        assert!(body.is_end_stream());
        assert_eq!(body.size_hint().exact(), Some(0));
    }

    #[tokio::test(start_paused = true)]
    async fn slow_body_paces_its_chunks() {
        let start = tokio::time::Instant::now();
        let mut body = EchoBody::slow(Bytes::from_static(b"x\n"), 3, Duration::from_millis(50));
        let mut seen = Vec::new();
        while let Some(frame) = body.frame().await {
            let data = frame.unwrap().into_data().unwrap();
            seen.push((data, start.elapsed()));
        }
        assert_eq!(seen.len(), 3);
        assert_eq!(seen[0].1, Duration::from_millis(50));
        assert_eq!(seen[2].1, Duration::from_millis(150));
        assert!(body.is_end_stream());
    }
}
