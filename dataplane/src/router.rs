//! Which pool takes a request: the most specific host, then the longest path prefix.
//!
//! Hosts are exact (`api.example.com`), wildcard (`*.example.com`, one or more labels in front
//! of the suffix, never the bare suffix) or `*`. A host whose routes match no prefix falls
//! through to the wildcards and then to `*`, so a catch-all pool still catches. Prefixes
//! match whole path segments, as Gateway API's `PathPrefix` does: `/api` takes `/api` and
//! `/api/users`, not `/apix`.

use std::collections::HashMap;

/// Routes compiled for lookup; `P` is what a route leads to (a pool index in the proxy).
#[derive(Debug)]
pub struct Router<P> {
    exact: HashMap<String, Prefixes<P>>,
    /// Suffixes with their leading dot (`.example.com`), longest first.
    wildcard: Vec<(String, Prefixes<P>)>,
    any: Prefixes<P>,
}

/// Path prefixes of one host, longest first.
#[derive(Debug)]
struct Prefixes<P>(Vec<(String, P)>);

impl<P: Copy> Router<P> {
    /// Compiles `(host, pathPrefix, target)` routes; hosts are lowercase, as validation
    /// ensures.
    pub fn new<'a>(routes: impl IntoIterator<Item = (&'a str, &'a str, P)>) -> Self {
        let mut exact: HashMap<String, Prefixes<P>> = HashMap::new();
        let mut wildcard: HashMap<String, Prefixes<P>> = HashMap::new();
        let mut any = Prefixes(Vec::new());
        for (host, prefix, to) in routes {
            let table = if host == "*" {
                &mut any
            } else if let Some(suffix) = host.strip_prefix('*') {
                wildcard
                    .entry(suffix.to_owned())
                    .or_insert_with(|| Prefixes(Vec::new()))
            } else {
                exact
                    .entry(host.to_owned())
                    .or_insert_with(|| Prefixes(Vec::new()))
            };
            table.0.push((prefix.to_owned(), to));
        }
        let mut wildcard: Vec<_> = wildcard.into_iter().collect();
        wildcard.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        let mut router = Self {
            exact,
            wildcard,
            any,
        };
        router.exact.values_mut().for_each(Prefixes::sort);
        router.wildcard.iter_mut().for_each(|(_, p)| p.sort());
        router.any.sort();
        router
    }

    /// The route for `host` (any case, with or without a port) and `path`.
    pub fn find(&self, host: &str, path: &str) -> Option<P> {
        let host = strip_port(host);
        let lower;
        let host = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            lower = host.to_ascii_lowercase();
            lower.as_str()
        } else {
            host
        };
        let host = host.strip_suffix('.').unwrap_or(host);
        if let Some(found) = self.exact.get(host).and_then(|p| p.find(path)) {
            return Some(found);
        }
        for (suffix, prefixes) in &self.wildcard {
            if host.len() > suffix.len() && host.ends_with(suffix.as_str()) {
                if let Some(found) = prefixes.find(path) {
                    return Some(found);
                }
            }
        }
        self.any.find(path)
    }
}

impl<P: Copy> Prefixes<P> {
    fn sort(&mut self) {
        self.0
            .sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
    }

    fn find(&self, path: &str) -> Option<P> {
        self.0
            .iter()
            .find(|(prefix, _)| segment_prefix(prefix, path))
            .map(|(_, to)| *to)
    }
}

fn segment_prefix(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        None => false,
        Some(rest) => prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/'),
    }
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        // An IPv6 literal: the port follows the closing bracket.
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router() -> Router<&'static str> {
        Router::new([
            ("*", "/", "catch-all"),
            ("*", "/static", "static"),
            ("api.example.com", "/", "api"),
            ("api.example.com", "/v1/users", "users"),
            ("*.example.com", "/", "example-wild"),
            ("*.eu.example.com", "/", "eu-wild"),
            ("shop.example.com", "/cart", "cart"),
        ])
    }

    #[test]
    fn exact_host_beats_wildcard_beats_any() {
        let r = router();
        assert_eq!(r.find("api.example.com", "/x"), Some("api"));
        assert_eq!(r.find("www.example.com", "/x"), Some("example-wild"));
        assert_eq!(r.find("other.org", "/x"), Some("catch-all"));
    }

    #[test]
    fn the_longest_matching_wildcard_wins() {
        let r = router();
        assert_eq!(r.find("a.eu.example.com", "/"), Some("eu-wild"));
        assert_eq!(r.find("a.b.example.com", "/"), Some("example-wild"));
        // The bare suffix is not a subdomain of itself.
        assert_eq!(r.find("example.com", "/"), Some("catch-all"));
    }

    #[test]
    fn the_longest_prefix_wins_within_a_host() {
        let r = router();
        assert_eq!(r.find("api.example.com", "/v1/users/42"), Some("users"));
        assert_eq!(r.find("api.example.com", "/v1/users"), Some("users"));
        assert_eq!(r.find("api.example.com", "/v1/usersx"), Some("api"));
        assert_eq!(r.find("x.org", "/static/app.js"), Some("static"));
    }

    #[test]
    fn a_host_without_a_matching_prefix_falls_through() {
        let r = router();
        assert_eq!(r.find("shop.example.com", "/cart/1"), Some("cart"));
        assert_eq!(r.find("shop.example.com", "/other"), Some("example-wild"));
    }

    #[test]
    fn hosts_match_without_case_port_or_trailing_dot() {
        let r = router();
        assert_eq!(r.find("API.Example.COM:8443", "/v1/users"), Some("users"));
        assert_eq!(r.find("api.example.com.", "/"), Some("api"));
        assert_eq!(r.find("[::1]:8080", "/"), Some("catch-all"));
    }

    #[test]
    fn nothing_matches_without_a_catch_all() {
        let r = Router::new([("api.example.com", "/v1", 1)]);
        assert_eq!(r.find("api.example.com", "/v2"), None);
        assert_eq!(r.find("other", "/v1"), None);
    }
}
