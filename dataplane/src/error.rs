//! Every answer the proxy gives on its own, and the one place that maps each to a status.

use std::error::Error as _;

use http::{HeaderValue, Response, StatusCode, header};

use crate::body::{BodyTooLarge, ResponseBody};
use crate::headers::X_REQUEST_ID;
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

impl ProxyError {
    /// The status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::UriTooLong(_) => StatusCode::URI_TOO_LONG,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
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
            Self::MethodNotAllowed(_) => "method-not-allowed",
            Self::NoRoute => "no-route",
            Self::NoTarget(_) => "no-usable-target",
            Self::Connect { .. } => "connect-failure",
            Self::Upstream { .. } => "upstream-failure",
            Self::Timeout(_) => "timeout",
            Self::Overflow(_) => "overflow",
        }
    }

    /// Classifies a failed exchange with `target`.
    pub fn from_upstream(target: std::net::SocketAddr, err: &UpstreamError) -> Self {
        let mut source = err.source();
        while let Some(s) = source {
            if let Some(too_large) = s.downcast_ref::<BodyTooLarge>() {
                return Self::PayloadTooLarge(too_large.limit);
            }
            source = s.source();
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
        if matches!(self, Self::BadRequest(_) | Self::PayloadTooLarge(_)) {
            // The rest of the request may still be on the wire, unread: don't reuse it.
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

/// The innermost cause of a client error, which says what actually happened
/// ("connection refused") where the outer ones only say where.
fn describe(err: &UpstreamError) -> String {
    let mut last: &dyn std::error::Error = err;
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
