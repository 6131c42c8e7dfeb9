//! The affinity cookie's format, both sides of it: the `Set-Cookie` value that pins a client to
//! a target, and reading that cookie back from a request. Every data-plane replica, and every
//! restart, must agree on it, so it lives in one place.

use std::net::SocketAddr;

use http::{HeaderMap, HeaderValue, header};

use crate::hash::stable_hash;

/// Seed of the cookie-id hash; part of the cookie format, never to change.
const COOKIE_SEED: u64 = 0x7765_6972;

/// The cookie value naming a target: a stable hash of its address, so that every data-plane
/// replica, and every restart, reads a cookie the same way.
pub fn cookie_id(address: SocketAddr) -> u64 {
    stable_hash(address.to_string().as_bytes(), COOKIE_SEED)
}

/// The `Set-Cookie` value pinning a client to the target `id` under cookie `name`.
pub fn set_cookie(name: &str, id: u64, ttl: Option<weir_api::Duration>) -> HeaderValue {
    let mut v = format!("{name}={id:016x}; Path=/; HttpOnly; SameSite=Lax");
    if let Some(ttl) = ttl {
        v.push_str(&format!("; Max-Age={}", ttl.get().as_secs()));
    }
    HeaderValue::try_from(v).expect("validated cookie name and hex value")
}

/// The target id in the request's cookie `name`, if it holds one.
pub fn pinned_id(headers: &HeaderMap, name: &str) -> Option<u64> {
    cookie(headers, name).and_then(|v| u64::from_str_radix(v, 16).ok())
}

/// The value of cookie `name` among the request's `Cookie` headers.
pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_named_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; weir-session=00ff"),
        );
        h.append(header::COOKIE, HeaderValue::from_static("b=2"));
        assert_eq!(cookie(&h, "weir-session"), Some("00ff"));
        assert_eq!(cookie(&h, "b"), Some("2"));
        assert_eq!(cookie(&h, "weir"), None);
    }

    #[test]
    fn a_cookie_written_is_read_back_as_its_target() {
        let address: SocketAddr = "10.0.0.7:8080".parse().unwrap();
        let id = cookie_id(address);
        let set = set_cookie("weir-session", id, None);
        let pair = set.to_str().unwrap().split(';').next().unwrap().to_owned();
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::try_from(pair).unwrap());
        assert_eq!(pinned_id(&h, "weir-session"), Some(id));
    }
}
