//! The query of the channel's stream request, `GET /v1/stream?dataPlane=ID&since=REV&selector=SEL`:
//! written by the data plane with `weir_api::channel::encode_query_value`, read by the
//! controller with `weir_api::channel::parse_query`.
//!
//! Input: bytes split at the first NUL into a data plane id and a selector (any text), the rest
//! read as a raw query. Properties: parsing any query never panics, and values written by the
//! data plane read back exactly, whatever they hold.

#![no_main]

use libfuzzer_sys::fuzz_target;
use weir_api::channel::{encode_query_value, parse_query};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(3, '\0');
    let (id, selector, raw) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let _ = parse_query(raw);
    let since = u64::try_from(data.len()).unwrap_or_default();
    let query = format!(
        "dataPlane={}&since={since}&selector={}",
        encode_query_value(id),
        encode_query_value(selector)
    );
    let params = parse_query(&query);
    assert_eq!(
        params.get("dataPlane").map(String::as_str),
        Some(id),
        "{query}"
    );
    assert_eq!(
        params.get("selector").map(String::as_str),
        Some(selector),
        "{query}"
    );
    assert_eq!(params.get("since"), Some(&since.to_string()), "{query}");
    assert_eq!(params.len(), 3, "{query}");
});
