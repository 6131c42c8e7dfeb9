//! The header rules of `weir_dataplane::headers`, run on a client's header block in the order
//! the proxy runs them (`proxy::serve` and `proxy::forward`): `ensure_request_id`,
//! `strip_hop_by_hop`, `set_forwarded`, `ensure_trace`; and `strip_hop_by_hop` alone, as on a
//! target's response.
//!
//! Input: one byte of settings (bits 0-1: trusted hops 0-3; bit 2: a WebSocket upgrade; bit 3:
//! the request's `Host` becomes `X-Forwarded-Host`; bit 4: an IPv6 client), then the header
//! block, one `name: value` per line ([`weir_fuzz::header_map`]). Properties:
//! - request id: one `X-Request-ID` is forwarded, the one in force: the client's when sane
//!   (1-128 visible ASCII characters), else a new one;
//! - hop-by-hop: no hop-by-hop field and no field any `Connection` header names is forwarded
//!   (except what an upgrade keeps, `TE: trailers` and the request id), and every other field
//!   is untouched;
//! - forwarded headers: one `X-Forwarded-For`, a list of non-empty entries ending with the
//!   client's address, of which only the last `trusted hops` received ones are kept; with no
//!   trusted hop, `-Proto` and `-Host` are Weir's own;
//! - trace: one `traceparent` is forwarded, valid W3C trace context: the client's if it sent
//!   one and it is valid, else the trace of a valid B3 context, else a new trace that B3
//!   carries too; and a second run (a second Weir in the path) changes nothing.

#![no_main]

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use weir_dataplane::headers::{
    X_REQUEST_ID, ensure_request_id, ensure_trace, peer_value, set_forwarded, strip_hop_by_hop,
};

/// Fields that never cross a proxy (RFC 9110 §7.6.1), besides `Connection`, `Upgrade`, `TE`.
const HOP_BY_HOP: [&str; 4] = [
    "keep-alive",
    "proxy-connection",
    "trailer",
    "transfer-encoding",
];

fuzz_target!(|data: &[u8]| {
    let Some((&settings, block)) = data.split_first() else {
        return;
    };
    let trusted_hops = usize::from(settings & 3);
    let upgrade = settings & 4 != 0;
    let forward_host = settings & 8 != 0;
    let client: IpAddr = if settings & 16 != 0 {
        "2001:db8::7".parse().unwrap()
    } else {
        "192.0.2.7".parse().unwrap()
    };
    let received = weir_fuzz::header_map(block);

    // A target's response.
    for upgrade in [false, true] {
        let mut response = received.clone();
        strip_hop_by_hop(&mut response, upgrade);
        check_stripped(&received, &response, upgrade);
    }

    let mut headers = received.clone();
    let id = ensure_request_id(&mut headers);
    check_request_id(&received, &headers, &id);

    let host = forward_host
        .then(|| headers.get(header::HOST).cloned())
        .flatten();
    let before = headers.clone();
    strip_hop_by_hop(&mut headers, upgrade);
    check_stripped(&before, &headers, upgrade);

    let before = headers.clone();
    let peer = peer_value(client);
    set_forwarded(&mut headers, &peer, trusted_hops, "http", host.as_ref());
    check_forwarded(
        &before,
        &headers,
        &client.to_string(),
        trusted_hops,
        host.as_ref(),
    );

    let before = headers.clone();
    ensure_trace(&mut headers);
    check_trace(&before, &headers);
    let mut again = headers.clone();
    ensure_trace(&mut again);
    assert_eq!(
        again, headers,
        "a second ensure_trace changed the trace headers"
    );

    assert_eq!(
        values(&headers, "x-request-id"),
        [&id],
        "the request id in force reaches the target"
    );
});

fn values<'h>(headers: &'h HeaderMap, name: &str) -> Vec<&'h HeaderValue> {
    headers.get_all(name).iter().collect()
}

fn check_request_id(received: &HeaderMap, sent: &HeaderMap, id: &HeaderValue) {
    let b = id.as_bytes();
    assert!(
        (1..=128).contains(&b.len()) && b.iter().all(u8::is_ascii_graphic),
        "request id {id:?}"
    );
    assert_eq!(
        values(sent, "x-request-id"),
        [id],
        "the id in force is the one forwarded"
    );
    if let Some(theirs) = received.get(&X_REQUEST_ID) {
        let sane =
            (1..=128).contains(&theirs.len()) && theirs.as_bytes().iter().all(u8::is_ascii_graphic);
        assert_eq!(sane, theirs == id, "client id {theirs:?}, in force {id:?}");
    }
}

/// The names every `Connection` field of `headers` lists.
fn connection_names(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .filter_map(|name| HeaderName::from_bytes(name.trim_ascii()).ok())
        .collect()
}

fn check_stripped(before: &HeaderMap, after: &HeaderMap, upgrade: bool) {
    // What a Connection header may not remove: the request id Weir put in force, and what
    // an upgrade keeps.
    let keeps = |name: &HeaderName| {
        name == X_REQUEST_ID || (upgrade && (name == header::UPGRADE || name == header::CONNECTION))
    };
    let listed: Vec<HeaderName> = connection_names(before)
        .into_iter()
        .filter(|n| !keeps(n))
        .collect();
    for name in &listed {
        assert!(
            !after.contains_key(name),
            "{name}, listed in Connection, was forwarded: {after:?}"
        );
    }
    for name in HOP_BY_HOP {
        assert!(!after.contains_key(name), "{name} was forwarded");
    }
    if upgrade {
        assert_eq!(values(after, "connection"), ["upgrade"]);
        assert_eq!(values(after, "upgrade"), values(before, "upgrade"));
    } else {
        assert!(!after.contains_key(header::CONNECTION));
        assert!(!after.contains_key(header::UPGRADE));
    }
    let te_trailers = !listed.contains(&header::TE)
        && before.get(header::TE).is_some_and(|te| {
            te.as_bytes()
                .split(|b| *b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"trailers"))
        });
    if te_trailers {
        assert_eq!(values(after, "te"), ["trailers"]);
    } else {
        assert!(!after.contains_key(header::TE), "TE forwarded: {after:?}");
    }
    let hop_by_hop = |name: &HeaderName| {
        listed.contains(name)
            || HOP_BY_HOP.contains(&name.as_str())
            || [header::CONNECTION, header::UPGRADE, header::TE].contains(name)
    };
    for name in before.keys().filter(|n| !hop_by_hop(n)) {
        assert_eq!(
            values(after, name.as_str()),
            values(before, name.as_str()),
            "{name}"
        );
    }
    for name in after.keys().filter(|n| !hop_by_hop(n)) {
        assert!(before.contains_key(name), "{name} appeared");
    }
}

fn check_forwarded(
    before: &HeaderMap,
    after: &HeaderMap,
    client: &str,
    trusted_hops: usize,
    host: Option<&HeaderValue>,
) {
    let xff = values(after, "x-forwarded-for");
    assert_eq!(xff.len(), 1, "one X-Forwarded-For: {xff:?}");
    let xff = xff[0].to_str().expect("X-Forwarded-For is text");
    let entries: Vec<&str> = xff.split(", ").collect();
    for entry in &entries {
        assert!(
            !entry.is_empty() && !entry.contains(',') && entry.trim() == *entry,
            "X-Forwarded-For entry {entry:?} in {xff:?}"
        );
    }
    let (last, hops) = entries.split_last().expect("at least the client");
    assert_eq!(*last, client, "{xff:?} ends with the client");
    let received: Vec<&str> = before
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect();
    assert_eq!(
        hops,
        &received[received.len().saturating_sub(trusted_hops)..],
        "{xff:?} keeps the last {trusted_hops} hops received"
    );
    let trusted = |name: &str| trusted_hops > 0 && before.contains_key(name);
    if trusted("x-forwarded-proto") {
        assert_eq!(
            values(after, "x-forwarded-proto"),
            values(before, "x-forwarded-proto")
        );
    } else {
        assert_eq!(values(after, "x-forwarded-proto"), ["http"]);
    }
    if trusted("x-forwarded-host") {
        assert_eq!(
            values(after, "x-forwarded-host"),
            values(before, "x-forwarded-host")
        );
    } else {
        assert_eq!(values(after, "x-forwarded-host"), Vec::from_iter(host));
    }
}

/// A trace id and span id, whichever header they came from.
type Context = (u128, u64);

fn hex(s: &str, len: usize, lower_only: bool) -> Option<u128> {
    let digit = |b: &u8| b.is_ascii_digit() || (b'a'..=b'f').contains(b);
    let ok = s.len() == len
        && s.bytes()
            .all(|b| digit(&b) || (!lower_only && (b'A'..=b'F').contains(&b)));
    ok.then(|| u128::from_str_radix(s, 16).expect("hex digits"))
        .filter(|v| *v != 0)
}

/// W3C trace context: `VV-<32 hex trace>-<16 hex span>-<2 hex flags>`, lowercase, ids not all
/// zeros, version `ff` invalid, and nothing after the flags in version `00`.
fn w3c(v: &HeaderValue) -> Option<Context> {
    let parts: Vec<&str> = v.to_str().ok()?.split('-').collect();
    let (version, trace, span, flags) = (
        *parts.first()?,
        *parts.get(1)?,
        *parts.get(2)?,
        *parts.get(3)?,
    );
    let version_ok = version.len() == 2
        && version
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        && version != "ff"
        && (version != "00" || parts.len() == 4);
    let flags_ok = flags.len() == 2
        && flags
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !(version_ok && flags_ok) {
        return None;
    }
    Some((
        hex(trace, 32, true)?,
        u64::try_from(hex(span, 16, true)?).ok()?,
    ))
}

fn b3_id(s: &str) -> Option<u128> {
    hex(s, 16, false).or_else(|| hex(s, 32, false))
}

/// B3: the single `b3: {trace}-{span}[-...]` header when present, else `X-B3-TraceId` and
/// `X-B3-SpanId`; trace ids of 16 or 32 hex digits, span ids of 16, neither all zeros.
fn b3(headers: &HeaderMap) -> Option<Context> {
    if let Some(single) = headers.get("b3").and_then(|v| v.to_str().ok()) {
        let mut parts = single.split('-');
        let trace = b3_id(parts.next()?)?;
        let span = hex(parts.next()?, 16, false)?;
        return Some((trace, u64::try_from(span).ok()?));
    }
    let trace = b3_id(headers.get("x-b3-traceid")?.to_str().ok()?)?;
    let span = hex(headers.get("x-b3-spanid")?.to_str().ok()?, 16, false)?;
    Some((trace, u64::try_from(span).ok()?))
}

fn check_trace(before: &HeaderMap, after: &HeaderMap) {
    // Two traceparents are none: the W3C test suite expects a new trace then.
    let theirs = match values(before, "traceparent")[..] {
        [one] => w3c(one),
        _ => None,
    };
    let sent = values(after, "traceparent");
    assert_eq!(sent.len(), 1, "one traceparent is forwarded: {sent:?}");
    let sent = sent[0];
    let (trace, span) = w3c(sent).unwrap_or_else(|| panic!("invalid traceparent {sent:?}"));
    match (theirs, b3(before)) {
        (Some(_), b3_in) => {
            assert_eq!(
                Some(sent),
                before.get("traceparent"),
                "the client's trace is kept"
            );
            if b3_in.is_none() {
                check_written_b3(after, trace, span);
            }
        }
        (None, Some(b3_in)) => assert_eq!((trace, span), b3_in, "the B3 trace is carried"),
        (None, None) => check_written_b3(after, trace, span),
    }
}

fn check_written_b3(after: &HeaderMap, trace: u128, span: u64) {
    assert_eq!(
        after.get("x-b3-traceid").and_then(|v| v.to_str().ok()),
        Some(format!("{trace:032x}").as_str()),
        "B3 carries the trace"
    );
    assert_eq!(
        after.get("x-b3-spanid").and_then(|v| v.to_str().ok()),
        Some(format!("{span:016x}").as_str()),
        "B3 carries the span"
    );
}
