//! What must not reach a target: the checks a request passes before it is routed.
//!
//! hyper has already answered what it cannot parse (400), header blocks over the limit (431),
//! conflicting lengths and transfer codings that do not end in chunked. What it lets through
//! and a target could read differently from Weir is refused here with 400, one rule per
//! reason, each named after the RFC text it enforces; `docs/malformed-requests.md` lists the
//! battery of requests that holds Weir to them next to HAProxy and NGINX, and Weir refuses at
//! least everything either of them does. The rules:
//!
//! - **Method** ([`method`]): upper-case letters, `-` and `_` only (NGINX's rule: every
//!   registered method fits it, and methods are case-sensitive); CONNECT and TRACE are
//!   refused with 405.
//! - **Target** ([`target`], RFC 9112 §3.2): origin form, or absolute form with an http(s)
//!   scheme and no userinfo; no authority or asterisk form. The path is ASCII with valid
//!   percent-encoding, no encoded NUL, no backslash and no dot segments (routing is by raw path prefix, so
//!   `/static/../admin` would be routed as `/static` and served as `/admin`).
//! - **Host** ([`host`], RFC 9112 §3.2, RFC 3986 §3.2.2): exactly one, or the target's
//!   authority; `host [":" port]` where host is a bracketed IPv6 address or a name of
//!   letters, digits, `-`, `.`, `_`, `~`, and port fits 16 bits; when both are present they
//!   agree.
//! - **Framing** ([`framing`], RFC 9112 §6): one Transfer-Encoding line, `chunked`, never
//!   beside Content-Length; one Content-Length line. hyper hides the lines it drops, so their
//!   count comes from the raw head (`wire`).
//! - **Fields** ([`fields`]): names up to 1 KiB; no underscore spelling of a field Weir sets
//!   (CGI targets read `X_Forwarded_For` as X-Forwarded-For); no Upgrade in HTTP/1.0.
//!
//! `check` is pure: it reads the request and, for HTTP/1, the [`WireHead`] the connection's
//! [`Wire`] recorded; requests without one (HTTP/2, or after the tap stopped) get every rule
//! but those that need the raw head.

mod wire;

use http::header::{self, HeaderMap};
use http::uri::Authority;
use http::{Method, Request, Uri, Version};

pub use self::wire::{Heads, Wire, WireHead};
use crate::error::ProxyError;
use crate::settings::ProxySettings;

/// Longest field name accepted. Values keep the whole header budget; no real name comes near.
pub const MAX_NAME_BYTES: usize = 1024;

/// Fields Weir sets or replaces (see `headers.rs`), whose underscore spellings CGI-style
/// targets (PHP, WSGI, Rack) would read as the same variable.
const MANAGED: [&str; 7] = [
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-request-id",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-sampled",
];

/// Refuses what must not reach a target, with the one error that says why.
pub fn check<B>(settings: &ProxySettings, req: &Request<B>) -> Result<(), ProxyError> {
    method(req.method())?;
    let target_len = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if target_len > settings.max_uri_bytes {
        return Err(ProxyError::UriTooLong(settings.max_uri_bytes));
    }
    let wire = req.extensions().get::<WireHead>();
    target(req.uri(), wire).map_err(ProxyError::BadRequest)?;
    host(req).map_err(ProxyError::BadRequest)?;
    framing(req.headers(), wire).map_err(ProxyError::BadRequest)?;
    fields(req.version(), req.headers()).map_err(ProxyError::BadRequest)?;
    if let Some(len) = req.headers().get(header::CONTENT_LENGTH) {
        let len: u64 = len
            .to_str()
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or(ProxyError::BadRequest("invalid Content-Length"))?;
        if len > settings.max_body_bytes {
            return Err(ProxyError::PayloadTooLarge(settings.max_body_bytes));
        }
    }
    Ok(())
}

/// Upper-case letters, `-` and `_`; CONNECT (a tunnel to anywhere) and TRACE (which echoes
/// credentials and the proxy's own headers back to a script) are refused with 405.
pub fn method(method: &Method) -> Result<(), ProxyError> {
    if method == Method::CONNECT || method == Method::TRACE {
        return Err(ProxyError::MethodNotAllowed(method.clone()));
    }
    let valid = method
        .as_str()
        .bytes()
        .all(|b| b.is_ascii_uppercase() || b == b'-' || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(ProxyError::BadRequest(
            "a method is upper-case letters, '-' and '_'",
        ))
    }
}

/// The request-target's form (RFC 9112 §3.2) and its path's syntax.
pub fn target(uri: &Uri, wire: Option<&WireHead>) -> Result<(), &'static str> {
    if wire.is_some_and(|w| w.fragment) {
        return Err("a request-target has no #fragment");
    }
    match (uri.scheme_str(), uri.authority()) {
        (Some(scheme), Some(authority)) => {
            if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
                return Err("an absolute-form target's scheme is http or https");
            }
            if authority.as_str().contains('@') {
                return Err("userinfo in the target's authority");
            }
        }
        (None, Some(_)) => return Err("the authority form is for CONNECT only"),
        _ => {}
    }
    let path = uri.path();
    if path == "*" {
        return Err("the asterisk form (OPTIONS *) is not served");
    }
    if !path.is_ascii() || !uri.query().is_none_or(str::is_ascii) {
        return Err("a request-target is ASCII; other bytes are percent-encoded");
    }
    if path.contains('\\') {
        // Not a URI character (RFC 3986 §2), and a path separator to Windows targets.
        return Err("a backslash in the path");
    }
    let bytes = path.as_bytes();
    for (i, _) in path.match_indices('%') {
        match (bytes.get(i + 1), bytes.get(i + 2)) {
            (Some(a), Some(b)) if a.is_ascii_hexdigit() && b.is_ascii_hexdigit() => {
                if *a == b'0' && *b == b'0' {
                    return Err("an encoded NUL (%00) in the path");
                }
            }
            _ => return Err("a '%' in the path is not followed by two hex digits"),
        }
    }
    if path.split('/').any(is_dot_segment) {
        return Err("a dot segment ('.' or '..') in the path");
    }
    Ok(())
}

/// `.` or `..`, with any dot percent-encoded.
fn is_dot_segment(segment: &str) -> bool {
    let mut dots = 0;
    let mut rest = segment.as_bytes();
    while !rest.is_empty() {
        if rest[0] == b'.' {
            rest = &rest[1..];
        } else if rest.len() >= 3 && rest[0] == b'%' && rest[1] == b'2' && (rest[2] | 0x20) == b'e'
        {
            rest = &rest[3..];
        } else {
            return false;
        }
        dots += 1;
    }
    dots == 1 || dots == 2
}

/// The host a request names: one valid Host field, or the target's authority (absolute form,
/// HTTP/2 `:authority`), or both when they agree (RFC 9112 §3.2, RFC 9113 §8.3.1).
pub fn host<B>(req: &Request<B>) -> Result<(), &'static str> {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let field = match (hosts.next(), hosts.next()) {
        (_, Some(_)) => return Err("more than one Host header"),
        (Some(h), None) => Some(
            h.to_str()
                .ok()
                .filter(|h| !h.is_empty())
                .ok_or("an empty or non-ASCII Host header")?,
        ),
        (None, None) => None,
    };
    let authority = req.uri().authority();
    match (field, authority) {
        (None, None) => Err("no Host header"),
        (None, Some(_)) if req.version() == Version::HTTP_11 => {
            Err("no Host header (HTTP/1.1 needs one whatever the target's form)")
        }
        (None, Some(a)) => authority_syntax(a.as_str()),
        (Some(h), None) => authority_syntax(h),
        (Some(h), Some(a)) => {
            authority_syntax(h)?;
            authority_syntax(a.as_str())?;
            if same_authority(h, a, req.uri().scheme_str()) {
                Ok(())
            } else {
                Err("the Host header names another host than the target")
            }
        }
    }
}

/// `host [":" port]` (RFC 3986 §3.2.2-3 without userinfo): a bracketed IPv6 address, or a
/// name of letters, digits, `-`, `.`, `_` and `~` (no percent-encoding: no DNS name has it,
/// and a target that decoded it would see another host than the one routed by); a port of
/// digits that fits 16 bits, or empty.
pub fn authority_syntax(authority: &str) -> Result<(), &'static str> {
    let port = if let Some(literal) = authority.strip_prefix('[') {
        let (address, rest) = literal
            .split_once(']')
            .ok_or("an IPv6 literal without its ']'")?;
        if address.parse::<std::net::Ipv6Addr>().is_err() {
            return Err("an invalid IPv6 literal in the host");
        }
        match rest {
            "" => None,
            _ => Some(rest.strip_prefix(':').ok_or("junk after an IPv6 literal")?),
        }
    } else {
        let (host, port) = match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        };
        if host.is_empty() {
            return Err("an empty host name");
        }
        let name = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~');
        if !host.bytes().all(name) {
            return Err("a host name is letters, digits, '-', '.', '_' and '~'");
        }
        port
    };
    match port {
        Some(port) if !port.bytes().all(|b| b.is_ascii_digit()) => Err("a port is decimal digits"),
        Some(port) if !port.is_empty() && port.parse::<u16>().is_err() => Err("a port above 65535"),
        _ => Ok(()),
    }
}

/// Whether Host `field` names what the target's authority does: hosts compared without case,
/// and an omitted port the same as the scheme's default.
fn same_authority(field: &str, authority: &Authority, scheme: Option<&str>) -> bool {
    let default = match scheme {
        Some(s) if s.eq_ignore_ascii_case("https") => 443,
        _ => 80,
    };
    let split = |a: &str| -> (String, u16) {
        let (host, port) = match a.rfind(':') {
            Some(i) if !a[i..].contains(']') => (&a[..i], &a[i + 1..]),
            _ => (a, ""),
        };
        (host.to_ascii_lowercase(), port.parse().unwrap_or(default))
    };
    split(field) == split(authority.as_str())
}

/// Where the body ends must not be open to two readings (RFC 9112 §6): one Transfer-Encoding
/// line, exactly `chunked` (the only coding Weir decodes: forwarding another would hand the
/// target encoded bytes as content, since the field is hop-by-hop), never beside
/// Content-Length, and one Content-Length line. The lines hyper folds are counted in `wire`.
pub fn framing(headers: &HeaderMap, wire: Option<&WireHead>) -> Result<(), &'static str> {
    let mut codings = headers.get_all(header::TRANSFER_ENCODING).iter();
    let te = match (codings.next(), codings.next()) {
        (_, Some(_)) => return Err("more than one Transfer-Encoding line"),
        (Some(te), None) => {
            if !te.as_bytes().eq_ignore_ascii_case(b"chunked") {
                return Err("a transfer coding other than chunked");
            }
            true
        }
        (None, None) => false,
    };
    if let Some(wire) = wire {
        if wire.content_lengths > 0 && (te || wire.transfer_encodings > 0) {
            return Err("both Content-Length and Transfer-Encoding");
        }
        if wire.content_lengths > 1 {
            return Err("more than one Content-Length line");
        }
    }
    if te && headers.contains_key(header::CONTENT_LENGTH) {
        return Err("both Content-Length and Transfer-Encoding");
    }
    if headers
        .get_all(header::CONTENT_LENGTH)
        .iter()
        .nth(1)
        .is_some()
    {
        return Err("more than one Content-Length line");
    }
    Ok(())
}

/// Field names: at most [`MAX_NAME_BYTES`], and no underscore spelling of a field Weir
/// manages; no Upgrade in HTTP/1.0 (RFC 9110 §7.8 has a server ignore it there, where it
/// cannot work; HAProxy refuses the request, and so does Weir).
pub fn fields(version: Version, headers: &HeaderMap) -> Result<(), &'static str> {
    if version == Version::HTTP_10 && headers.contains_key(header::UPGRADE) {
        return Err("Upgrade in an HTTP/1.0 request");
    }
    for name in headers.keys() {
        let name = name.as_str();
        if name.len() > MAX_NAME_BYTES {
            return Err("a field name longer than 1 KiB");
        }
        if name.contains('_') && is_managed_alias(name) {
            return Err("an underscore spelling of a field Weir sets");
        }
    }
    Ok(())
}

/// Whether `name` (lower case, as `HeaderMap` keeps it) reads as one of [`MANAGED`] with `_`
/// taken for `-`.
fn is_managed_alias(name: &str) -> bool {
    MANAGED.iter().any(|managed| {
        managed.len() == name.len()
            && managed
                .bytes()
                .zip(name.bytes())
                .all(|(m, n)| m == n || (m == b'-' && n == b'_'))
    })
}

/// Whether `req` asks to upgrade to h2c, which the proxy must not pass on: a target that
/// accepted would speak HTTP/2 with the client directly, past the routing (h2c smuggling).
/// The request is forwarded without the upgrade, as a server that ignores Upgrade would
/// take it (RFC 9110 §7.8; RFC 9113 §3.1 deprecates the h2c upgrade).
pub fn is_h2c_upgrade<B>(req: &Request<B>) -> bool {
    req.headers().get_all(header::UPGRADE).iter().any(|v| {
        v.as_bytes()
            .split(|b| *b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"h2c"))
    })
}

#[cfg(test)]
mod tests;
