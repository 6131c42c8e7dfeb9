//! The request head as the target gets it: hop-by-hop fields removed, forwarding and trace
//! fields set, and the request target in the form the upstream protocol wants.

use std::net::SocketAddr;

use http::header::{self, HeaderValue};
use http::request::Parts;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Uri, Version};
use weir_api::UpstreamProtocol;

use crate::body::RequestBody;
use crate::headers;
use crate::settings::ProxySettings;
use crate::state::TargetState;
use crate::validate;

/// The downstream connection a request arrived on.
#[derive(Clone, Debug)]
pub struct Peer {
    /// The client's address.
    pub addr: SocketAddr,
    /// The client's IP as a header value, for `X-Forwarded-For`.
    pub ip_header: HeaderValue,
}

/// The rewritten head of a request, from which each try's request is made.
#[derive(Debug)]
pub struct Head {
    /// Method, URI and the rewritten header block.
    pub parts: Parts,
    protocol: UpstreamProtocol,
    /// HTTP/2 targets read the host from `:authority`: the client's host, when it sent one.
    h2_authority: Option<Authority>,
}

impl Peer {
    /// The connection from `addr`.
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            ip_header: headers::peer_value(addr.ip()),
        }
    }
}

impl Head {
    /// Rewrites the head of a request from `peer` for a target speaking `protocol`; `upgrade`
    /// keeps the fields a protocol upgrade needs.
    pub fn new(
        mut parts: Parts,
        peer: &Peer,
        settings: &ProxySettings,
        protocol: UpstreamProtocol,
        upgrade: bool,
    ) -> Self {
        let host = match parts.uri.authority() {
            Some(a) => HeaderValue::from_str(a.as_str()).ok(),
            None => parts.headers.get(header::HOST).cloned(),
        };
        let headers = &mut parts.headers;
        headers::strip_hop_by_hop(headers, upgrade);
        headers::set_forwarded(
            headers,
            &peer.ip_header,
            settings.trusted_hops,
            "http",
            host.as_ref(),
        );
        headers::ensure_trace(headers);
        // HTTP/2 targets read the host from :authority; the connection is already chosen, so
        // it carries the client's host (or, without one, the target's address).
        let h2_authority = match protocol {
            UpstreamProtocol::Http1 => None,
            UpstreamProtocol::Http2 => host
                .as_ref()
                .and_then(|h| Authority::try_from(h.as_bytes()).ok()),
        };
        // An absolute-form (or HTTP/2) request was routed by its URI's authority, which also
        // replaces any Host the client sent (RFC 9112 §3.2.2), so the target sees that host
        // too.
        if parts.uri.authority().is_some() || !headers.contains_key(header::HOST) {
            if let Some(h) = host {
                headers.insert(header::HOST, h);
            }
        }
        Self {
            parts,
            protocol,
            h2_authority,
        }
    }

    /// The request of one try to `target`. `again` keeps the header block for a later try;
    /// without it, the last try takes the block instead of copying it.
    pub fn request(
        &mut self,
        body: RequestBody,
        target: &TargetState,
        again: bool,
    ) -> Request<RequestBody> {
        let mut request = Request::new(body);
        *request.method_mut() = self.parts.method.clone();
        let authority = self.h2_authority.clone().or_else(|| {
            (self.protocol == UpstreamProtocol::Http2).then(|| target.authority.clone())
        });
        *request.uri_mut() = upstream_uri(authority, &self.parts.uri);
        *request.version_mut() = match self.protocol {
            UpstreamProtocol::Http1 => Version::HTTP_11,
            UpstreamProtocol::Http2 => Version::HTTP_2,
        };
        *request.headers_mut() = if again {
            self.parts.headers.clone()
        } else {
            std::mem::take(&mut self.parts.headers)
        };
        request
    }
}

/// An HTTP/1.1 protocol upgrade (WebSocket): `Connection: upgrade` with an `Upgrade` field.
pub fn is_upgrade<B>(req: &Request<B>) -> bool {
    req.version() == Version::HTTP_11
        && req.headers().contains_key(header::UPGRADE)
        && !validate::is_h2c_upgrade(req)
        && req.headers().get_all(header::CONNECTION).iter().any(|v| {
            v.as_bytes()
                .split(|b| *b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"upgrade"))
        })
}

/// The request target sent upstream: origin-form (`/path?query`) on HTTP/1.1, as RFC 9112
/// asks of requests to an origin server, and with scheme and authority on HTTP/2, where they
/// become the `:scheme` and `:authority` pseudo-headers.
fn upstream_uri(authority: Option<Authority>, original: &Uri) -> Uri {
    let path = match original.path_and_query() {
        Some(p) if p.as_str().starts_with('/') => p.clone(),
        // `OPTIONS *` and authority-form targets have no path to forward.
        _ => PathAndQuery::from_static("/"),
    };
    let mut parts = http::uri::Parts::default();
    if let Some(authority) = authority {
        parts.scheme = Some(Scheme::HTTP);
        parts.authority = Some(authority);
    }
    parts.path_and_query = Some(path);
    Uri::from_parts(parts).expect("a path, with or without scheme and authority, is a URI")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upgrades_need_both_connection_and_upgrade() {
        let req = |conn: &str| {
            Request::builder()
                .header("connection", conn)
                .header("upgrade", "websocket")
                .body(())
                .unwrap()
        };
        assert!(is_upgrade(&req("keep-alive, Upgrade")));
        assert!(!is_upgrade(&req("keep-alive")));
    }

    #[test]
    fn http1_targets_get_origin_form_and_http2_targets_an_authority() {
        let absolute: Uri = "http://example.com/a/b?c=d".parse().unwrap();
        assert_eq!(upstream_uri(None, &absolute), "/a/b?c=d");
        assert_eq!(upstream_uri(None, &"*".parse().unwrap()), "/");
        let a = Authority::from_static("shop.example:8080");
        assert_eq!(
            upstream_uri(Some(a), &absolute),
            "http://shop.example:8080/a/b?c=d"
        );
    }
}
