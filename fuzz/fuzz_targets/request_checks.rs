//! The checks a client's request passes before it is routed (`weir_dataplane::validate`):
//! method, request-target, Host, framing and field names, with the facts of the raw head
//! that the tap ([`Wire`]) records.
//!
//! Input: an HTTP/1 request head as a client sends it, `METHOD TARGET HTTP/1.x` then one
//! `name: value` field per line (parsed as hyper would: `http::Method`, `http::Uri`,
//! [`weir_fuzz::header_map`]; what those refuse is skipped), its raw bytes fed through the tap.
//! Properties of every request `validate::check` lets through:
//! - a method of upper-case letters, `-` and `_`, neither CONNECT nor TRACE;
//! - a target in origin form, or absolute with an http(s) scheme and no userinfo; its path
//!   ASCII, with no backslash, no `%` without two hex digits, no `%00`, and no `.` or `..`
//!   segment even with its dots percent-encoded;
//! - exactly one host, valid as an `http::uri::Authority` (what the proxy builds for HTTP/2
//!   targets) and, when both are given, the Host field and the target's authority agree;
//! - one framing: at most one Content-Length line and no Transfer-Encoding beside it, or one
//!   Transfer-Encoding line that is `chunked`;
//! - no underscore spelling of a field Weir sets.

#![no_main]

use std::pin::Pin;
use std::sync::LazyLock;
use std::task::{Context, Poll, Waker};

use http::header::{self, HeaderMap};
use http::uri::Authority;
use http::{Method, Request, Uri, Version};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncRead, ReadBuf};
use weir_dataplane::settings::ProxySettings;
use weir_dataplane::validate::{Heads, Wire, check};

/// The data plane's defaults (limits of URI, header and body sizes).
static SETTINGS: LazyLock<ProxySettings> = LazyLock::new(ProxySettings::default);

fuzz_target!(|data: &[u8]| {
    let line_end = data.iter().position(|b| *b == b'\n').unwrap_or(data.len());
    let line = data[..line_end]
        .strip_suffix(b"\r")
        .unwrap_or(&data[..line_end]);
    let mut parts = line.split(|b| *b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return;
    };
    let version = match version {
        b"HTTP/1.1" => Version::HTTP_11,
        b"HTTP/1.0" => Version::HTTP_10,
        _ => return,
    };
    let (Ok(method), Ok(uri)) = (Method::from_bytes(method), Uri::try_from(target)) else {
        return;
    };
    let headers = weir_fuzz::header_map(data.get(line_end + 1..).unwrap_or_default());
    let mut builder = Request::builder().method(method).uri(uri).version(version);
    *builder.headers_mut().expect("a request builder") = headers;
    let mut req = builder.body(()).expect("parts that parsed make a request");
    let heads = tap(data);
    heads.attach(&mut req);

    if check(&SETTINGS, &req).is_err() {
        return;
    }
    let m = req.method();
    assert!(m != Method::CONNECT && m != Method::TRACE, "{m}");
    assert!(
        m.as_str()
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b"-_".contains(&b)),
        "{m}"
    );
    check_target(req.uri());
    check_host(&req);
    check_framing(req.headers());
    for name in req.headers().keys() {
        let spelled = name.as_str().replace('_', "-");
        let managed = [
            "x-forwarded-for",
            "x-forwarded-proto",
            "x-forwarded-host",
            "x-request-id",
        ];
        assert!(
            !name.as_str().contains('_') || !managed.contains(&spelled.as_str()),
            "{name} passed"
        );
    }
});

/// The raw head through the tap, as the connection would feed it.
fn tap(data: &[u8]) -> Heads {
    let heads = Heads::default();
    let mut head = data.to_vec();
    head.extend_from_slice(b"\r\n\r\n");
    let mut wire = Wire::new(&head[..], heads.clone(), 16 * 1024);
    let mut context = Context::from_waker(Waker::noop());
    let mut buf = vec![0; head.len()];
    let mut b = ReadBuf::new(&mut buf);
    let polled = Pin::new(&mut wire).poll_read(&mut context, &mut b);
    assert!(matches!(polled, Poll::Ready(Ok(()))), "{polled:?}");
    heads
}

fn check_target(uri: &Uri) {
    match (uri.scheme_str(), uri.authority()) {
        (Some(scheme), Some(authority)) => {
            assert!(
                ["http", "https"].contains(&scheme.to_ascii_lowercase().as_str()),
                "{uri}"
            );
            assert!(!authority.as_str().contains('@'), "userinfo passed: {uri}");
        }
        (None, None) => {}
        _ => panic!("neither origin nor absolute form: {uri}"),
    }
    let path = uri.path();
    assert!(path.is_ascii() && !path.contains('\\'), "{path:?}");
    let bytes = path.as_bytes();
    let mut decoded = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok());
            let byte = hex
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .filter(|_| hex.is_some_and(|h| h.bytes().all(|b| b.is_ascii_hexdigit())));
            let byte = byte.unwrap_or_else(|| panic!("a bad percent-encoding passed: {path:?}"));
            assert_ne!(byte, 0, "%00 passed: {path:?}");
            // Only dots are decoded: an encoded slash is not a segment boundary to Weir.
            decoded.push(if byte == b'.' { b'.' } else { b'x' });
            i += 3;
        } else {
            decoded.push(bytes[i]);
            i += 1;
        }
    }
    for segment in decoded.split(|b| *b == b'/') {
        assert!(
            segment != b"." && segment != b"..",
            "a dot segment passed: {path:?}"
        );
    }
}

fn check_host(req: &Request<()>) {
    let fields: Vec<_> = req.headers().get_all(header::HOST).iter().collect();
    assert!(fields.len() <= 1, "{fields:?}");
    let field = fields.first().map(|h| h.to_str().expect("an ASCII Host"));
    let authority = req.uri().authority().map(Authority::as_str);
    let host = field.or(authority).expect("a request names its host");
    if let Err(e) = Authority::try_from(host) {
        panic!("Host {host:?} passed but is no authority: {e}");
    }
    if let (Some(field), Some(authority)) = (field, authority) {
        let without_port = |a: &str| -> String {
            let a = match a.rfind(':') {
                Some(i) if !a[i..].contains(']') => &a[..i],
                _ => a,
            };
            a.to_ascii_lowercase()
        };
        assert_eq!(
            without_port(field),
            without_port(authority),
            "Host and target disagree"
        );
    }
}

fn check_framing(headers: &HeaderMap) {
    let te: Vec<_> = headers.get_all(header::TRANSFER_ENCODING).iter().collect();
    let cl: Vec<_> = headers.get_all(header::CONTENT_LENGTH).iter().collect();
    assert!(te.len() <= 1 && cl.len() <= 1, "TE {te:?}, CL {cl:?}");
    assert!(te.is_empty() || cl.is_empty(), "TE {te:?} beside CL {cl:?}");
    if let Some(te) = te.first() {
        assert!(te.as_bytes().eq_ignore_ascii_case(b"chunked"), "{te:?}");
    }
    if let Some(cl) = cl.first() {
        let len = cl.to_str().ok().and_then(|s| s.parse::<u64>().ok());
        assert!(len.is_some(), "Content-Length {cl:?} passed");
    }
}
