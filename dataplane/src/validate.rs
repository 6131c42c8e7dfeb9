//! What must not reach a target: the checks a request passes before it is routed.
//!
//! hyper has already answered what it cannot parse (400), header blocks over the limit (431)
//! and conflicting lengths; this covers the limits and rules that are ours.

use http::header;
use http::{Method, Request, Version};

use crate::error::ProxyError;
use crate::settings::ProxySettings;

/// Refuses what must not reach a target, with the one error that says why.
pub fn check<B>(settings: &ProxySettings, req: &Request<B>) -> Result<(), ProxyError> {
    if req.method() == Method::CONNECT {
        return Err(ProxyError::MethodNotAllowed(Method::CONNECT));
    }
    let target_len = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if target_len > settings.max_uri_bytes {
        return Err(ProxyError::UriTooLong(settings.max_uri_bytes));
    }
    let headers = req.headers();
    if let Some(len) = headers.get(header::CONTENT_LENGTH) {
        let len: u64 = len
            .to_str()
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or(ProxyError::BadRequest("invalid Content-Length"))?;
        if len > settings.max_body_bytes {
            return Err(ProxyError::PayloadTooLarge(settings.max_body_bytes));
        }
    }
    let mut hosts = headers.get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (_, Some(_)) => return Err(ProxyError::BadRequest("more than one Host header")),
        (None, None) if req.version() == Version::HTTP_11 && req.uri().authority().is_none() => {
            return Err(ProxyError::BadRequest("missing Host header"));
        }
        (Some(h), None) if h.to_str().is_err() || h.is_empty() => {
            return Err(ProxyError::BadRequest("invalid Host header"));
        }
        _ => {}
    }
    Ok(())
}
