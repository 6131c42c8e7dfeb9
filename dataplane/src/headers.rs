//! Header rules applied to every proxied message: hop-by-hop fields, forwarding headers,
//! request ids and trace context. Pure functions over a `HeaderMap`, tested on their own.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// `X-Request-ID`.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// The W3C trace context header.
pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
static B3: HeaderName = HeaderName::from_static("b3");
static X_B3_TRACE_ID: HeaderName = HeaderName::from_static("x-b3-traceid");
static X_B3_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-spanid");
static X_B3_SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Longest client-supplied request id kept; longer ones are replaced, so a client cannot
/// bloat every log line and upstream header.
const MAX_REQUEST_ID: usize = 128;

/// Removes the hop-by-hop fields of RFC 9110 §7.6.1: `Connection` and every field it names,
/// `Keep-Alive`, `Proxy-Connection`, `TE`, `Trailer`, `Transfer-Encoding` and `Upgrade`.
///
/// When `upgrade` is set (a WebSocket handshake being passed through) the `Upgrade` field and
/// `Connection: upgrade` are kept, since the handshake is meant for the far end. `TE: trailers`
/// is kept as Envoy does, because gRPC over HTTP/2 needs it end to end.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    // Every `Connection` field counts (a client may send several, and they form one list), and
    // the names are read as bytes: a value with obs-text in it still names what it lists.
    // Without one there is nothing to collect, and nothing is allocated.
    let connection: Vec<HeaderValue> = headers
        .get_all(header::CONNECTION)
        .iter()
        .cloned()
        .collect();
    for listed in &connection {
        for name in listed.as_bytes().split(|b| *b == b',') {
            let name = name.trim_ascii();
            // The request id was set for the target before this runs (the proxy's errors carry
            // it too): a client cannot name it away.
            let ours = name.eq_ignore_ascii_case(X_REQUEST_ID.as_str().as_bytes());
            if name.is_empty() || ours || (upgrade && name.eq_ignore_ascii_case(b"upgrade")) {
                continue;
            }
            if let Ok(name) = HeaderName::from_bytes(name) {
                headers.remove(name);
            }
        }
    }
    headers.remove(header::CONNECTION);
    let te_trailers = headers.get(header::TE).is_some_and(|te| {
        te.as_bytes()
            .split(|b| *b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"trailers"))
    });
    headers.remove(&KEEP_ALIVE);
    headers.remove(&PROXY_CONNECTION);
    headers.remove(header::TE);
    headers.remove(header::TRAILER);
    headers.remove(header::TRANSFER_ENCODING);
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(header::UPGRADE);
    }
}

/// The client address as a header value, made once per connection.
pub fn peer_value(peer: IpAddr) -> HeaderValue {
    HeaderValue::try_from(peer.to_string()).expect("an IP address is a valid header value")
}

/// Sets `X-Forwarded-For`, `-Proto` and `-Host` for a request from `peer` (see [`peer_value`]).
///
/// Only the last `trusted_hops` entries a client sent are believed (the proxies in front of
/// Weir appended them); with 0, whatever the client sent is dropped, so it cannot spoof its
/// address, scheme or host to the backends.
pub fn set_forwarded(
    headers: &mut HeaderMap,
    peer: &HeaderValue,
    trusted_hops: usize,
    proto: &'static str,
    host: Option<&HeaderValue>,
) {
    if trusted_hops == 0 {
        headers.insert(&X_FORWARDED_FOR, peer.clone());
    } else {
        let mut xff = String::new();
        let received: Vec<&str> = headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .collect();
        for hop in &received[received.len().saturating_sub(trusted_hops)..] {
            xff.push_str(hop);
            xff.push_str(", ");
        }
        xff.push_str(peer.to_str().unwrap_or_default());
        if let Ok(v) = HeaderValue::try_from(xff) {
            headers.insert(&X_FORWARDED_FOR, v);
        }
    }
    let trust_client = trusted_hops > 0;
    if !(trust_client && headers.contains_key(&X_FORWARDED_PROTO)) {
        headers.insert(&X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    }
    if !(trust_client && headers.contains_key(&X_FORWARDED_HOST)) {
        match host {
            Some(h) => {
                headers.insert(&X_FORWARDED_HOST, h.clone());
            }
            None => {
                headers.remove(&X_FORWARDED_HOST);
            }
        }
    }
}

/// Keeps a sane client `X-Request-ID` or sets a new UUIDv4; returns the id in force.
pub fn ensure_request_id(headers: &mut HeaderMap) -> HeaderValue {
    let mut ids = headers.get_all(&X_REQUEST_ID).iter();
    let (first, more) = (ids.next(), ids.next().is_some());
    let sane = first
        .filter(|id| {
            let b = id.as_bytes();
            !b.is_empty() && b.len() <= MAX_REQUEST_ID && b.iter().all(|c| c.is_ascii_graphic())
        })
        .cloned();
    if let Some(id) = sane {
        if more {
            // One id reaches the target: the one Weir logs and answers with.
            headers.insert(&X_REQUEST_ID, id.clone());
        }
        return id;
    }
    let id = new_request_id();
    headers.insert(&X_REQUEST_ID, id.clone());
    id
}

/// A random UUIDv4, as Envoy and most tracers expect request ids to look.
pub fn new_request_id() -> HeaderValue {
    let v = fastrand::u128(..) & !(0xf000 << 64) & !(0xc << 60) | (0x4000 << 64) | (0x8 << 60);
    let mut hex = [0u8; 32];
    hex_into(&mut hex, v);
    let mut id = [b'-'; 36];
    id[..8].copy_from_slice(&hex[..8]);
    id[9..13].copy_from_slice(&hex[8..12]);
    id[14..18].copy_from_slice(&hex[12..16]);
    id[19..23].copy_from_slice(&hex[16..20]);
    id[24..].copy_from_slice(&hex[20..]);
    HeaderValue::from_bytes(&id).expect("hex is a valid header value")
}

/// Writes `v` as lowercase hex into all of `out`, most significant digit first; header values
/// are built on the request path, where `format!` and its padding machinery cost more.
fn hex_into(out: &mut [u8], mut v: u128) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in out.iter_mut().rev() {
        *b = DIGITS[(v & 0xf) as usize];
        v >>= 4;
    }
}

/// Propagates W3C `traceparent` and B3 trace context and starts a trace when there is none.
///
/// Both formats are made to carry the same trace: a backend instrumented with either joins
/// the trace the client started in the other. An invalid `traceparent` (or more than one) is
/// replaced, as the W3C spec asks; a client's `tracestate` passes untouched.
pub fn ensure_trace(headers: &mut HeaderMap) {
    // Two `traceparent`s are no trace context: the W3C test suite expects a new trace then
    // (test_traceparent_duplicated), and writing one replaces both.
    let mut traceparents = headers.get_all(&TRACEPARENT).iter();
    let w3c = match (traceparents.next(), traceparents.next()) {
        (Some(v), None) => parse_traceparent(v.as_bytes()),
        _ => None,
    };
    let b3 = parse_b3(headers);
    match (w3c, b3) {
        (Some(_), Some(_)) => {}
        (Some(ctx), None) => write_b3(headers, &ctx),
        (None, Some(ctx)) => write_traceparent(headers, &ctx),
        (None, None) => {
            let mut trace_id = fastrand::u128(..);
            while trace_id == 0 {
                trace_id = fastrand::u128(..);
            }
            let ctx = TraceContext {
                trace_id,
                span_id: fastrand::u64(1..),
                sampled: true,
            };
            write_traceparent(headers, &ctx);
            write_b3(headers, &ctx);
        }
    }
}

/// One trace context, whichever header it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
struct TraceContext {
    trace_id: u128,
    span_id: u64,
    sampled: bool,
}

fn parse_traceparent(v: &[u8]) -> Option<TraceContext> {
    // version "00": 00-<32 hex trace id>-<16 hex span id>-<2 hex flags>
    let s = std::str::from_utf8(v).ok()?;
    let mut parts = s.split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if version.len() != 2
        || version == "ff"
        || trace.len() != 32
        || span.len() != 16
        || flags.len() != 2
    {
        return None;
    }
    if version == "00" && parts.next().is_some() {
        return None;
    }
    let lower_hex = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    if ![version, trace, span, flags].iter().all(|p| lower_hex(p)) {
        return None;
    }
    let trace_id = u128::from_str_radix(trace, 16).ok().filter(|t| *t != 0)?;
    let span_id = u64::from_str_radix(span, 16).ok().filter(|s| *s != 0)?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some(TraceContext {
        trace_id,
        span_id,
        sampled: flags & 1 == 1,
    })
}

fn parse_b3(headers: &HeaderMap) -> Option<TraceContext> {
    // Hex digits only: `from_str_radix` alone also takes a leading `+`. Ids of all zeros are
    // invalid (a zero span id would make an invalid traceparent).
    let hex = |s: &str, lengths: &[usize]| -> Option<u128> {
        (lengths.contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| u128::from_str_radix(s, 16).ok())
            .flatten()
            .filter(|v| *v != 0)
    };
    let trace_id = |s| hex(s, &[16, 32]);
    let span_id = |s| hex(s, &[16]).and_then(|v| u64::try_from(v).ok());
    if let Some(single) = headers.get(&B3).and_then(|v| v.to_str().ok()) {
        // b3: {TraceId}-{SpanId}[-{SamplingState}[-{ParentSpanId}]]
        let mut parts = single.split('-');
        let trace_id = trace_id(parts.next()?)?;
        let span_id = span_id(parts.next()?)?;
        let sampled = matches!(parts.next(), Some("1") | Some("d") | None);
        return Some(TraceContext {
            trace_id,
            span_id,
            sampled,
        });
    }
    let trace_id = trace_id(headers.get(&X_B3_TRACE_ID)?.to_str().ok()?)?;
    let span_id = span_id(headers.get(&X_B3_SPAN_ID)?.to_str().ok()?)?;
    let sampled = headers
        .get(&X_B3_SAMPLED)
        .is_none_or(|v| v.as_bytes() == b"1" || v.as_bytes() == b"true");
    Some(TraceContext {
        trace_id,
        span_id,
        sampled,
    })
}

fn write_traceparent(headers: &mut HeaderMap, ctx: &TraceContext) {
    // 00-<32 hex trace id>-<16 hex span id>-<2 hex flags>
    let mut v = *b"00-00000000000000000000000000000000-0000000000000000-00";
    hex_into(&mut v[3..35], ctx.trace_id);
    hex_into(&mut v[36..52], u128::from(ctx.span_id));
    v[54] = if ctx.sampled { b'1' } else { b'0' };
    headers.insert(
        &TRACEPARENT,
        HeaderValue::from_bytes(&v).expect("hex is a valid header value"),
    );
}

fn write_b3(headers: &mut HeaderMap, ctx: &TraceContext) {
    let (mut trace, mut span) = ([0u8; 32], [0u8; 16]);
    hex_into(&mut trace, ctx.trace_id);
    hex_into(&mut span, u128::from(ctx.span_id));
    headers.insert(
        &X_B3_TRACE_ID,
        HeaderValue::from_bytes(&trace).expect("hex is a valid header value"),
    );
    headers.insert(
        &X_B3_SPAN_ID,
        HeaderValue::from_bytes(&span).expect("hex is a valid header value"),
    );
    headers.insert(
        &X_B3_SAMPLED,
        HeaderValue::from_static(if ctx.sampled { "1" } else { "0" }),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn get<'a>(h: &'a HeaderMap, k: &str) -> Option<&'a str> {
        h.get(k).map(|v| v.to_str().unwrap())
    }

    #[test]
    fn hop_by_hop_fields_and_those_connection_names_are_removed() {
        let mut h = map(&[
            ("connection", "keep-alive, x-secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("te", "gzip"),
            ("trailer", "x-sum"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("x-kept", "yes"),
        ]);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(get(&h, "x-kept"), Some("yes"));
    }

    /// Found by the `headers` fuzz target: only the first `Connection` field was read, and only
    /// when it was valid UTF-8, so a second one (or one with obs-text) smuggled its fields
    /// through to the target.
    #[test]
    fn fields_named_by_any_connection_header_are_removed() {
        let mut h = map(&[
            ("connection", "keep-alive"),
            ("connection", "x-secret"),
            ("x-secret", "1"),
            ("x-other", "2"),
            ("x-kept", "yes"),
        ]);
        h.append(
            header::CONNECTION,
            HeaderValue::from_bytes(b"\xeaupgrade, x-other").unwrap(),
        );
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(get(&h, "x-kept"), Some("yes"));
    }

    /// Found by the `headers` fuzz target: `Connection: x-request-id` removed the id Weir had
    /// just put in force, so the target never saw the id in Weir's logs and errors.
    #[test]
    fn a_client_cannot_name_the_request_id_away() {
        let mut h = map(&[("connection", "x-request-id, x-a"), ("x-a", "1")]);
        let id = ensure_request_id(&mut h);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.get(&X_REQUEST_ID), Some(&id));
        assert_eq!(h.len(), 1, "{h:?}");
    }

    #[test]
    fn an_upgrade_keeps_upgrade_and_te_trailers_survives() {
        let mut h = map(&[
            ("connection", "Upgrade, x-a"),
            ("upgrade", "websocket"),
            ("x-a", "1"),
            ("te", "trailers"),
        ]);
        strip_hop_by_hop(&mut h, true);
        assert_eq!(get(&h, "upgrade"), Some("websocket"));
        assert_eq!(get(&h, "connection"), Some("upgrade"));
        assert_eq!(get(&h, "te"), Some("trailers"));
        assert_eq!(get(&h, "x-a"), None);
    }

    #[test]
    fn with_no_trusted_hops_clients_cannot_spoof_forwarding_headers() {
        let mut h = map(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil"),
        ]);
        set_forwarded(
            &mut h,
            &peer_value("127.0.0.9".parse().unwrap()),
            0,
            "http",
            Some(&HeaderValue::from_static("shop.example")),
        );
        assert_eq!(get(&h, "x-forwarded-for"), Some("127.0.0.9"));
        assert_eq!(get(&h, "x-forwarded-proto"), Some("http"));
        assert_eq!(get(&h, "x-forwarded-host"), Some("shop.example"));
    }

    #[test]
    fn trusted_hops_keep_only_that_many_received_entries() {
        let mut h = map(&[
            ("x-forwarded-for", "6.6.6.6, 1.2.3.4"),
            ("x-forwarded-for", "10.0.0.1"),
            ("x-forwarded-proto", "https"),
        ]);
        set_forwarded(
            &mut h,
            &peer_value("127.0.0.9".parse().unwrap()),
            2,
            "http",
            None,
        );
        assert_eq!(
            get(&h, "x-forwarded-for"),
            Some("1.2.3.4, 10.0.0.1, 127.0.0.9")
        );
        assert_eq!(get(&h, "x-forwarded-proto"), Some("https"));
    }

    #[test]
    fn request_ids_are_kept_when_sane_and_created_otherwise() {
        let mut h = map(&[("x-request-id", "abc-123")]);
        assert_eq!(ensure_request_id(&mut h), "abc-123");
        let mut h = map(&[("x-request-id", &"x".repeat(500))]);
        let id = ensure_request_id(&mut h);
        assert_eq!(id.len(), 36);
        assert_eq!(get(&h, "x-request-id"), Some(id.to_str().unwrap()));
        assert_eq!(&id.to_str().unwrap()[14..15], "4", "a version-4 UUID");
    }

    /// Found by the `headers` fuzz target: of several `X-Request-ID`s the first was in force
    /// and all of them were forwarded, so the target could log another id than Weir.
    #[test]
    fn one_request_id_reaches_the_target_when_a_client_sends_several() {
        let mut h = map(&[("x-request-id", "abc-1"), ("x-request-id", "abc-2")]);
        assert_eq!(ensure_request_id(&mut h), "abc-1");
        assert_eq!(h.get_all("x-request-id").iter().count(), 1);
        assert_eq!(get(&h, "x-request-id"), Some("abc-1"));
        let mut h = map(&[("x-request-id", "a b"), ("x-request-id", "abc-2")]);
        let id = ensure_request_id(&mut h);
        assert_eq!(id.len(), 36, "a new id: the first one is not sane");
        assert_eq!(h.get_all("x-request-id").iter().collect::<Vec<_>>(), [&id]);
    }

    #[test]
    fn a_w3c_trace_is_kept_and_mirrored_into_b3() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let mut h = map(&[("traceparent", tp)]);
        ensure_trace(&mut h);
        assert_eq!(get(&h, "traceparent"), Some(tp));
        assert_eq!(
            get(&h, "x-b3-traceid"),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(get(&h, "x-b3-spanid"), Some("00f067aa0ba902b7"));
        assert_eq!(get(&h, "x-b3-sampled"), Some("1"));
    }

    #[test]
    fn a_b3_trace_is_kept_and_mirrored_into_w3c() {
        let mut h = map(&[("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-0")]);
        ensure_trace(&mut h);
        assert_eq!(
            get(&h, "traceparent"),
            Some("00-80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-00")
        );
        let mut h = map(&[
            ("x-b3-traceid", "463ac35c9f6413ad"),
            ("x-b3-spanid", "a2fb4a1d1a96d312"),
        ]);
        ensure_trace(&mut h);
        assert_eq!(
            get(&h, "traceparent"),
            Some("00-0000000000000000463ac35c9f6413ad-a2fb4a1d1a96d312-01")
        );
    }

    /// Found by the `headers` fuzz target: a B3 span id of zeros became a traceparent with a
    /// zero span id, which is invalid, and `+` passed for a hex digit.
    #[test]
    fn a_malformed_b3_context_is_not_carried_into_w3c() {
        for (trace, span) in [
            ("463ac35c9f6413ad", "0000000000000000"),
            ("+63ac35c9f6413ad", "a2fb4a1d1a96d312"),
            ("463ac35c9f6413ad", "+2fb4a1d1a96d312"),
        ] {
            let mut h = map(&[("x-b3-traceid", trace), ("x-b3-spanid", span)]);
            ensure_trace(&mut h);
            let tp = get(&h, "traceparent").unwrap();
            assert!(parse_traceparent(tp.as_bytes()).is_some(), "{tp}");
            assert!(
                !tp.contains(&trace[1..]),
                "{trace}-{span}: a new trace, not {tp}"
            );
            assert_eq!(
                get(&h, "x-b3-traceid"),
                Some(&tp[3..35]),
                "B3 carries it too"
            );
        }
        let mut h = map(&[("b3", "80f198ee56343ba864fe8b2a57d3eff7-0000000000000000-1")]);
        ensure_trace(&mut h);
        assert!(!get(&h, "traceparent").unwrap().contains("80f198ee56343ba8"));
    }

    #[test]
    fn two_traceparents_start_a_new_trace() {
        let a = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let b = "00-11111111111111111111111111111111-00f067aa0ba902b7-01";
        let mut h = map(&[("traceparent", a), ("traceparent", b)]);
        ensure_trace(&mut h);
        let sent: Vec<_> = h.get_all("traceparent").iter().collect();
        assert_eq!(sent.len(), 1, "{sent:?}");
        assert!(sent[0] != a && sent[0] != b, "{sent:?}");
    }

    #[test]
    fn a_new_trace_starts_when_none_or_an_invalid_one_arrives() {
        for start in [
            vec![],
            vec![(
                "traceparent",
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            )],
        ] {
            let mut h = map(&start);
            ensure_trace(&mut h);
            let tp = get(&h, "traceparent").unwrap();
            assert!(parse_traceparent(tp.as_bytes()).is_some(), "{tp}");
            assert_eq!(&tp[3..35], get(&h, "x-b3-traceid").unwrap());
        }
    }
}
