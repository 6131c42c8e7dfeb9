//! Routing (`weir_dataplane::router::Router`): which pool a request's `Host` and path reach.
//!
//! Input lines: routes as `HOST PATH_PREFIX` (those a pool may have: validated as
//! `Pool::validate` does), a blank line, then requests as `HOST PATH` (anything, as clients
//! send them). Property: the router picks what its rules say, checked against a plain search
//! over every route: the host without its port, in any case and with a trailing dot, matched
//! exactly, then by the longest wildcard suffix (at least one label in front), then `*`; within
//! a host, the longest prefix that matches whole path segments.

#![no_main]

use libfuzzer_sys::fuzz_target;
use weir_api::Pool;
use weir_dataplane::router::Router;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (routes, requests) = text.split_once("\n\n").unwrap_or((&text, ""));
    let mut valid: Vec<(String, String)> = Vec::new();
    for line in routes.lines() {
        let (host, prefix) = line.split_once(' ').unwrap_or((line, "/"));
        let route = (host.to_owned(), prefix.to_owned());
        if !valid.contains(&route) && is_valid(host, prefix) {
            valid.push(route);
        }
    }
    let router = Router::new(
        valid
            .iter()
            .enumerate()
            .map(|(i, (host, prefix))| (host.as_str(), prefix.as_str(), i)),
    );
    for line in requests.lines() {
        let (host, path) = line.split_once(' ').unwrap_or((line, "/"));
        assert_eq!(
            router.find(host, path),
            expected(&valid, host, path),
            "{host} {path} among {valid:?}"
        );
    }
});

fn is_valid(host: &str, prefix: &str) -> bool {
    serde_json::from_value::<Pool>(serde_json::json!({
        "name": "fuzz",
        "routes": [{"host": host, "pathPrefix": prefix}],
    }))
    .is_ok_and(|p| p.validate().is_ok())
}

fn expected(routes: &[(String, String)], host: &str, path: &str) -> Option<usize> {
    let host = if host.starts_with('[') {
        host.find(']').map_or(host, |end| &host[..=end])
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    let host = host.to_ascii_lowercase();
    let host = host.strip_suffix('.').unwrap_or(&host);
    let segment = |prefix: &str| {
        path.strip_prefix(prefix)
            .is_some_and(|rest| prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/'))
    };
    // The longest matching prefix among the routes of hosts `matches` takes.
    let best = |matches: &dyn Fn(&str) -> bool| {
        routes
            .iter()
            .enumerate()
            .filter(|(_, (h, p))| matches(h) && segment(p))
            .max_by(|(i, (_, a)), (j, (_, b))| a.len().cmp(&b.len()).then(j.cmp(i)))
            .map(|(i, _)| i)
    };
    if let Some(i) = best(&|h| h == host) {
        return Some(i);
    }
    let mut suffixes: Vec<&str> = routes
        .iter()
        .filter_map(|(h, _)| h.strip_prefix('*').filter(|s| s.starts_with('.')))
        .filter(|suffix| host.len() > suffix.len() && host.ends_with(suffix))
        .collect();
    suffixes.sort_by_key(|s| std::cmp::Reverse(s.len()));
    for suffix in suffixes {
        if let Some(i) = best(&|h| h.strip_prefix('*') == Some(suffix)) {
            return Some(i);
        }
    }
    best(&|h| h == "*")
}
