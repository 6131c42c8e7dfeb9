//! Every answer the proxy gives on its own, and the one place that says, for each, its status,
//! who caused it ([`Fault`]) and whether it may be retried ([`Retry`]).
//!
//! Blame decides what a failure costs: only [`Fault::Target`] counts against a target (its
//! failures, health, outlier ejection, breaker, the pool's success rate and 5xx metrics).
//! What a client did wrong is answered 4xx and costs the target nothing, since any client on
//! the internet could otherwise take healthy targets out of service.

use std::error::Error as _;
use std::sync::atomic::{AtomicU64, Ordering};

use http::{HeaderValue, Response, StatusCode, header};

use crate::body::{ClientBodyError, ResponseBody};
use crate::headers::X_REQUEST_ID;
use crate::stats::ErrorCounts;
use crate::upstream::{Limit, UpstreamError};

/// Header naming the proxy-side reason of a proxy-made answer, for clients and dashboards.
pub const X_WEIR_ERROR: &str = "x-weir-error";

/// Header naming the pool limit that refused a request (`max-requests`, ...).
pub const X_WEIR_OVERFLOW: &str = "x-weir-overflow";

/// Why the proxy answered a request itself instead of forwarding a target's response.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The request is malformed in a way hyper's parser lets through.
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// The request URI is longer than the limit.
    #[error("request URI is longer than {0} bytes")]
    UriTooLong(usize),
    /// The request body is, or announces itself as, larger than the limit.
    #[error("request body is larger than {0} bytes")]
    PayloadTooLarge(u64),
    /// The request body's framing is broken (a bad chunk, more data than announced).
    #[error("malformed request body: {0}")]
    BadBody(String),
    /// The client stopped sending its request body for longer than the body read timeout.
    #[error("the client sent no request body data for {0:?}")]
    ClientTimeout(std::time::Duration),
    /// The client closed the connection (or reset the stream) before its request ended; no
    /// one is left to answer, the status is for logs and metrics.
    #[error("the client went away before its request ended")]
    ClientGone,
    /// A method a reverse proxy does not serve.
    #[error("method {0} is not supported by this proxy")]
    MethodNotAllowed(http::Method),
    /// No route matches the host and path.
    #[error("no route for this host and path")]
    NoRoute,
    /// The pool has no target that may take a request.
    #[error("no usable target in pool {0}")]
    NoTarget(String),
    /// The target could not be connected to.
    #[error("cannot connect to target {target}: {reason}")]
    Connect {
        /// The target.
        target: std::net::SocketAddr,
        /// What failed.
        reason: String,
    },
    /// The target failed after the connection was made: reset, closed, or invalid response.
    #[error("target {target} failed: {reason}")]
    Upstream {
        /// The target.
        target: std::net::SocketAddr,
        /// What failed.
        reason: String,
    },
    /// The target did not answer within the pool's request timeout.
    #[error("target {0} did not answer in time")]
    Timeout(std::net::SocketAddr),
    /// A pool limit (circuit breaker) is reached.
    #[error("the pool's {} limit is reached", .0.as_str())]
    Overflow(Limit),
}

/// Who caused a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The client: a malformed, oversized, slow or abandoned request, or one no route takes.
    Client,
    /// The target: refused, reset, broke the exchange or answered too late.
    Target,
    /// Weir itself: no usable target, or a pool limit protecting the targets.
    Proxy,
}

/// Whether a failed try may be sent again, to another target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// Never: the failure is the request's own, another target would fail it the same way.
    Never,
    /// Always: the target saw nothing of the request.
    Safe,
    /// Only when the method is idempotent (or the policy allows more): the target may have
    /// acted on the request.
    IfIdempotent,
}

/// What a proxy-made answer counts as, per pool (the `/metrics` error counters).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counted {
    /// 502.
    BadGateway,
    /// 503.
    Unavailable,
    /// 504.
    Timeout,
    /// 4xx (and 499): the client's doing.
    Client,
}

impl Counted {
    /// Its counter among a pool's `counts`.
    pub fn counter(self, counts: &ErrorCounts) -> &AtomicU64 {
        match self {
            Self::BadGateway => &counts.bad_gateway,
            Self::Unavailable => &counts.unavailable,
            Self::Timeout => &counts.timeout,
            Self::Client => &counts.client,
        }
    }
}

impl ProxyError {
    /// Who caused this failure.
    pub fn fault(&self) -> Fault {
        match self {
            Self::BadRequest(_)
            | Self::UriTooLong(_)
            | Self::PayloadTooLarge(_)
            | Self::BadBody(_)
            | Self::ClientTimeout(_)
            | Self::ClientGone
            | Self::MethodNotAllowed(_)
            | Self::NoRoute => Fault::Client,
            Self::Connect { .. } | Self::Upstream { .. } | Self::Timeout(_) => Fault::Target,
            Self::NoTarget(_) | Self::Overflow(_) => Fault::Proxy,
        }
    }

    /// Whether the failed try may be sent again to another target.
    pub fn retry(&self) -> Retry {
        match self {
            Self::Connect { .. } => Retry::Safe,
            Self::Upstream { .. } | Self::Timeout(_) => Retry::IfIdempotent,
            _ => Retry::Never,
        }
    }

    /// The pool counter this answer goes to.
    pub fn counted(&self) -> Counted {
        if self.fault() == Fault::Client {
            return Counted::Client;
        }
        match self.status() {
            StatusCode::BAD_GATEWAY => Counted::BadGateway,
            StatusCode::GATEWAY_TIMEOUT => Counted::Timeout,
            _ => Counted::Unavailable,
        }
    }

    /// Counts this answer among the pool's proxy-made answers, in [`Self::counted`]'s counter.
    pub fn count(&self, counts: &ErrorCounts) {
        self.counted()
            .counter(counts)
            .fetch_add(1, Ordering::Relaxed);
    }

    /// The status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::UriTooLong(_) => StatusCode::URI_TOO_LONG,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BadBody(_) => StatusCode::BAD_REQUEST,
            Self::ClientTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::ClientGone => CLIENT_CLOSED_REQUEST,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::NoRoute => StatusCode::NOT_FOUND,
            Self::NoTarget(_) | Self::Overflow(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Connect { .. } | Self::Upstream { .. } => StatusCode::BAD_GATEWAY,
            Self::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// A short machine-readable reason, sent in [`X_WEIR_ERROR`].
    pub fn reason(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "bad-request",
            Self::UriTooLong(_) => "uri-too-long",
            Self::PayloadTooLarge(_) => "payload-too-large",
            Self::BadBody(_) => "bad-request-body",
            Self::ClientTimeout(_) => "client-timeout",
            Self::ClientGone => "client-gone",
            Self::MethodNotAllowed(_) => "method-not-allowed",
            Self::NoRoute => "no-route",
            Self::NoTarget(_) => "no-usable-target",
            Self::Connect { .. } => "connect-failure",
            Self::Upstream { .. } => "upstream-failure",
            Self::Timeout(_) => "timeout",
            Self::Overflow(_) => "overflow",
        }
    }

    /// What the client's body failing means for the client.
    pub fn from_client_body(err: &ClientBodyError) -> Self {
        match err {
            ClientBodyError::TooLarge { limit } => Self::PayloadTooLarge(*limit),
            ClientBodyError::Malformed(e) => Self::BadBody(describe(&**e)),
            ClientBodyError::Gone(_) => Self::ClientGone,
            ClientBodyError::Timeout(after) => Self::ClientTimeout(*after),
        }
    }

    /// Classifies a failed exchange with `target`: the client's body failing while it was
    /// streamed is the client's failure, whatever hyper's client made of it.
    pub fn from_upstream(target: std::net::SocketAddr, err: &UpstreamError) -> Self {
        if let Some(client) = err.source().and_then(ClientBodyError::find) {
            return Self::from_client_body(client);
        }
        let reason = describe(err);
        if err.is_connect() {
            Self::Connect { target, reason }
        } else {
            Self::Upstream { target, reason }
        }
    }

    /// The response: the status, a one-line body with the reason and the request id, and the
    /// request id header so the answer can be found in logs.
    pub fn into_response(self, request_id: Option<&HeaderValue>) -> Response<ResponseBody> {
        let id = request_id.and_then(|v| v.to_str().ok()).unwrap_or("-");
        let body = format!(
            "{} {}: {self} (request id {id})\n",
            self.status().as_u16(),
            self.status().canonical_reason().unwrap_or("")
        );
        let mut response = Response::new(ResponseBody::full(body));
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        headers.insert(X_WEIR_ERROR, HeaderValue::from_static(self.reason()));
        if let Some(id) = request_id {
            headers.insert(&X_REQUEST_ID, id.clone());
        }
        if let Self::Overflow(limit) = self {
            headers.insert(X_WEIR_OVERFLOW, HeaderValue::from_static(limit.as_str()));
        }
        if matches!(
            self,
            Self::BadRequest(_)
                | Self::PayloadTooLarge(_)
                | Self::BadBody(_)
                | Self::ClientTimeout(_)
                | Self::ClientGone
        ) {
            // The rest of the request may still be on the wire, unread: don't reuse it.
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

/// nginx's status for a request whose client closed the connection first; never sent, but
/// logs and metrics tell it from an answer.
pub const CLIENT_CLOSED_REQUEST: StatusCode = match StatusCode::from_u16(499) {
    Ok(s) => s,
    Err(_) => unreachable!(),
};

/// The innermost cause of an error, which says what actually happened ("connection refused")
/// where the outer ones only say where.
fn describe(err: &dyn std::error::Error) -> String {
    let mut last = err;
    while let Some(s) = last.source() {
        last = s;
    }
    last.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_maps_to_one_status() {
        let t = "127.0.0.1:1".parse().unwrap();
        let cases = [
            (ProxyError::BadRequest("x"), 400),
            (ProxyError::UriTooLong(1), 414),
            (ProxyError::PayloadTooLarge(1), 413),
            (ProxyError::BadBody("bad chunk".into()), 400),
            (
                ProxyError::ClientTimeout(std::time::Duration::from_secs(1)),
                408,
            ),
            (ProxyError::ClientGone, 499),
            (ProxyError::MethodNotAllowed(http::Method::CONNECT), 405),
            (ProxyError::NoRoute, 404),
            (ProxyError::NoTarget("web".into()), 503),
            (
                ProxyError::Connect {
                    target: t,
                    reason: "refused".into(),
                },
                502,
            ),
            (
                ProxyError::Upstream {
                    target: t,
                    reason: "reset".into(),
                },
                502,
            ),
            (ProxyError::Timeout(t), 504),
            (ProxyError::Overflow(Limit::MaxRequests), 503),
        ];
        for (err, status) in cases {
            assert_eq!(err.status().as_u16(), status, "{err}");
        }
    }

    #[test]
    fn each_error_has_one_culprit_and_one_retry_rule() {
        use std::time::Duration;
        let t = "127.0.0.1:1".parse().unwrap();
        let cases = [
            (
                ProxyError::BadRequest("x"),
                Fault::Client,
                Retry::Never,
                Counted::Client,
            ),
            (
                ProxyError::PayloadTooLarge(1),
                Fault::Client,
                Retry::Never,
                Counted::Client,
            ),
            (
                ProxyError::BadBody("bad chunk".into()),
                Fault::Client,
                Retry::Never,
                Counted::Client,
            ),
            (
                ProxyError::ClientTimeout(Duration::from_secs(1)),
                Fault::Client,
                Retry::Never,
                Counted::Client,
            ),
            (
                ProxyError::ClientGone,
                Fault::Client,
                Retry::Never,
                Counted::Client,
            ),
            (
                ProxyError::NoRoute,
                Fault::Client,
                Retry::Never,
                Counted::Client,
            ),
            (
                ProxyError::Connect {
                    target: t,
                    reason: "refused".into(),
                },
                Fault::Target,
                Retry::Safe,
                Counted::BadGateway,
            ),
            (
                ProxyError::Upstream {
                    target: t,
                    reason: "reset".into(),
                },
                Fault::Target,
                Retry::IfIdempotent,
                Counted::BadGateway,
            ),
            (
                ProxyError::Timeout(t),
                Fault::Target,
                Retry::IfIdempotent,
                Counted::Timeout,
            ),
            (
                ProxyError::NoTarget("web".into()),
                Fault::Proxy,
                Retry::Never,
                Counted::Unavailable,
            ),
            (
                ProxyError::Overflow(Limit::MaxRequests),
                Fault::Proxy,
                Retry::Never,
                Counted::Unavailable,
            ),
        ];
        for (err, fault, retry, counted) in cases {
            assert_eq!(err.fault(), fault, "{err}");
            assert_eq!(err.retry(), retry, "{err}");
            assert_eq!(err.counted(), counted, "{err}");
            // What the client caused is never answered as a server error.
            assert_eq!(
                err.fault() == Fault::Client,
                err.status().is_client_error(),
                "{err}"
            );
        }
    }

    #[test]
    fn a_client_body_error_inside_an_upstream_error_is_the_clients() {
        /// hyper's client keeps the body's error as the source of its own, as this does.
        #[derive(Debug, thiserror::Error)]
        #[error("body write failed")]
        struct BodyWrite(#[source] ClientBodyError);

        let t = "127.0.0.1:1".parse().unwrap();
        let timeout = ClientBodyError::Timeout(std::time::Duration::from_secs(3));
        let err = UpstreamError::Connect(std::io::Error::other(BodyWrite(timeout)));
        let e = ProxyError::from_upstream(t, &err);
        assert_eq!(e.status(), StatusCode::REQUEST_TIMEOUT, "{e}");
        assert_eq!(e.fault(), Fault::Client);
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let plain = UpstreamError::Connect(refused);
        assert_eq!(ProxyError::from_upstream(t, &plain).fault(), Fault::Target);
    }

    #[test]
    fn each_answer_is_counted_once_under_its_status() {
        let t = "127.0.0.1:1".parse().unwrap();
        let counts = ErrorCounts::default();
        ProxyError::Timeout(t).count(&counts);
        ProxyError::Overflow(Limit::MaxConnections).count(&counts);
        ProxyError::NoTarget("web".into()).count(&counts);
        ProxyError::ClientGone.count(&counts);
        let upstream = ProxyError::Upstream {
            target: t,
            reason: "reset".into(),
        };
        upstream.count(&counts);
        let read = |c: &AtomicU64| c.load(Ordering::Relaxed);
        assert_eq!(read(&counts.timeout), 1, "504");
        assert_eq!(read(&counts.unavailable), 2, "two 503s");
        assert_eq!(read(&counts.client), 1, "499, the client's");
        assert_eq!(read(&counts.bad_gateway), 1, "502");
    }

    #[test]
    fn the_answer_carries_reason_and_request_id() {
        let id = HeaderValue::from_static("req-7");
        let r = ProxyError::NoTarget("web".into()).into_response(Some(&id));
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()[X_WEIR_ERROR], "no-usable-target");
        assert_eq!(r.headers()["x-request-id"], "req-7");
        let ResponseBody::Full(Some(body)) = r.into_body() else {
            panic!("a full body")
        };
        assert_eq!(
            body,
            "503 Service Unavailable: no usable target in pool web (request id req-7)\n"
        );
    }
}
