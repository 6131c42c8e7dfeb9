//! Session affinity by cookie and by header (`weir_dataplane::affinity`): the `Set-Cookie` a
//! response carries and the request `Cookie` headers it is read back from, and the header
//! name a pool hashes on.
//!
//! Input lines: a cookie (and header) name, a cookie lifetime (a duration, or anything else for
//! a session cookie), a target id (decimal; else derived from the input), then the values of
//! the request's `Cookie` headers. Properties, for every name a pool may use:
//! - `set_cookie` writes `NAME=ID` as 16 hex digits, `Max-Age` when it has a lifetime;
//! - that cookie reads back as its target (`pinned_id`), first in a `Cookie` header among
//!   others, or in a `Cookie` header of its own after others that do not name it;
//! - `cookie` returns one cookie's value, unquoted, never running into the next;
//! - a pool with cookie affinity under that name compiles ([`weir_fuzz::compile`]), and a
//!   header name a pool may hash on is a valid `HeaderName`.

#![no_main]

use http::{HeaderMap, HeaderValue, header};
use libfuzzer_sys::fuzz_target;
use weir_api::{Pool, PoolsFile};
use weir_dataplane::affinity::{cookie, pinned_id, set_cookie};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let name = lines.next().unwrap_or_default();
    let ttl: Option<weir_api::Duration> = lines.next().and_then(|t| t.parse().ok());
    let id: u64 = match lines.next().map(str::parse) {
        Some(Ok(id)) => id,
        _ => data.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
        }),
    };
    let mut headers = HeaderMap::new();
    for value in lines.filter_map(|l| HeaderValue::from_str(l).ok()) {
        headers.append(header::COOKIE, value);
    }

    for (cookie_name, _) in headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
    {
        let found = cookie(&headers, cookie_name).expect("a cookie present is found");
        assert!(!found.contains(';'), "{found:?}");
        assert!(
            !found.starts_with('"') && !found.ends_with('"'),
            "{found:?}"
        );
    }

    let cookie_pool = pool(serde_json::json!({"type": "Cookie", "cookieName": name}));
    if let Some(p) = cookie_pool {
        let set = set_cookie(name, id, ttl);
        let set = set.to_str().expect("a Set-Cookie value is text");
        assert!(set.starts_with(&format!("{name}={id:016x}; ")), "{set}");
        match ttl {
            Some(ttl) => assert!(set.ends_with(&format!("; Max-Age={}", ttl.get().as_secs()))),
            None => assert!(!set.contains("Max-Age"), "{set}"),
        }
        let pair = set.split(';').next().expect("a name=value pair");
        let first = headers.get(header::COOKIE).and_then(|v| v.to_str().ok());
        let mut one = HeaderMap::new();
        let value = match first {
            Some(others) => format!("{pair}; {others}"),
            None => pair.to_owned(),
        };
        one.insert(
            header::COOKIE,
            HeaderValue::try_from(value).expect("a cookie header"),
        );
        assert_eq!(pinned_id(&one, name), Some(id), "{one:?}");
        if cookie(&headers, name).is_none() {
            let mut appended = headers.clone();
            appended.append(
                header::COOKIE,
                HeaderValue::from_str(pair).expect("a cookie"),
            );
            assert_eq!(pinned_id(&appended, name), Some(id), "{appended:?}");
        }
        weir_fuzz::compile(&PoolsFile { pools: vec![p] });
    }
    // What compiling a header-affinity pool expects (building its Maglev table here would
    // cost a hundred times the rest; the pools_file target compiles such pools).
    if pool(serde_json::json!({"type": "Header", "headerName": name})).is_some() {
        assert!(http::HeaderName::try_from(name).is_ok(), "{name:?}");
    }
});

/// A valid pool with this session affinity, if it is one.
fn pool(affinity: serde_json::Value) -> Option<Pool> {
    let pool: Pool = serde_json::from_value(serde_json::json!({
        "name": "fuzz",
        "sessionAffinity": affinity,
        "targets": [
            {"address": "127.0.0.1:9001", "weight": 2},
            {"address": "[::1]:9002", "weight": 1},
        ],
    }))
    .ok()?;
    pool.validate().is_ok().then_some(pool)
}
