//! What the fuzz targets share: turning fuzz bytes into the inputs Weir's parsers see, and
//! compiling a configuration the way the data plane does once a parser accepted it.
//!
//! The targets themselves are in `fuzz_targets/`, one per parser of outside input; each says
//! what it feeds in and which properties it checks. `scripts/fuzz` runs them and
//! `docs/fuzzing.md` explains how.

use http::{HeaderMap, HeaderName, HeaderValue};
use weir_api::PoolsFile;
use weir_dataplane::balance::{Load, Pick};
use weir_dataplane::state::Registry;

/// A header block as hyper would hand it over: one `name: value` field per line, the value
/// trimmed of spaces and tabs; a line whose name or value no `HeaderMap` could hold is skipped,
/// as hyper would have refused it.
pub fn header_map(bytes: &[u8]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for line in bytes.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        {
            headers.append(name, value);
        }
    }
    headers
}

thread_local! {
    /// Health checkers are tokio tasks: building a configuration needs a runtime to spawn them
    /// on. It is never driven while they live, so no probe is ever sent.
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime");
}

/// Compiles `pools` (validated) as the data plane puts them in force, and checks what every
/// configuration it accepted must give: each route leads to its own pool, and the balancers
/// pick only usable targets with a weight.
pub fn compile(pools: &PoolsFile) {
    RUNTIME.with(|runtime| {
        let _context = runtime.enter();
        let registry = Registry::default();
        let snapshot = registry.build(&registry.share(pools.clone()));
        assert_eq!(snapshot.pools.len(), pools.pools.len());
        for (i, pool) in pools.pools.iter().enumerate() {
            assert_eq!(*snapshot.pools[i].config, *pool);
            for route in &pool.routes {
                let Some(host) = request_host(pools, &route.host) else {
                    continue;
                };
                assert_eq!(
                    snapshot.router.find(&host, &route.path_prefix),
                    Some(i),
                    "a request to {host}{} reaches pool {}",
                    route.path_prefix,
                    pool.name
                );
            }
            let weights: Vec<u32> = pool.targets.iter().map(|t| t.weight).collect();
            let balancer = snapshot.pools[i].balancer.load();
            for down_every in [0, 2, 3] {
                let load = Targets {
                    n: weights.len(),
                    down_every,
                };
                for key in 0..4u64 {
                    if let Some(t) = balancer.pick(&load, || key.wrapping_mul(0x9e37_79b9)) {
                        assert!(t < weights.len(), "pick {t} of {} targets", weights.len());
                        assert!(load.usable(t), "picked target {t}, which is down");
                        assert!(weights[t] > 0, "picked target {t}, whose weight is 0");
                    }
                }
            }
        }
        // Dropping the configuration aborts its checkers; one turn of the runtime frees them.
        drop(snapshot);
        drop(registry);
        runtime.block_on(tokio::task::yield_now());
    });
}

/// A request host that only `route_host` matches among the routes of `pools`, if one is easy
/// to name: the host itself when exact, a new label in front of a wildcard's suffix, and an
/// IPv6 literal (which no route can name) for `*`.
fn request_host(pools: &PoolsFile, route_host: &str) -> Option<String> {
    let host = match route_host {
        "*" => "[::1]".to_owned(),
        wildcard if wildcard.starts_with("*.") => format!("fuzz{}", &wildcard[1..]),
        exact => return Some(exact.to_owned()),
    };
    let named = pools
        .pools
        .iter()
        .flat_map(|p| &p.routes)
        .any(|r| r.host == host);
    (!named).then_some(host)
}

/// Idle targets, every `down_every`-th of them down (none when 0).
struct Targets {
    n: usize,
    down_every: usize,
}

impl Load for Targets {
    fn active(&self, i: usize) -> u64 {
        assert!(i < self.n, "asked for target {i} of {}", self.n);
        0
    }

    fn usable(&self, i: usize) -> bool {
        assert!(i < self.n, "asked for target {i} of {}", self.n);
        self.down_every == 0 || !i.is_multiple_of(self.down_every)
    }
}
