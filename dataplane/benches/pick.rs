//! Hot-path micro-benchmarks: target picking per algorithm, routing, and header rules.
//! `cargo bench -p weir-dataplane`.

use std::cell::Cell;
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue};
use weir_api::Algorithm;
use weir_dataplane::balance::{Balancer, Load, Pick, Weighted};
use weir_dataplane::headers;
use weir_dataplane::router::Router;

struct Idle(Vec<u64>);

impl Load for Idle {
    fn active(&self, i: usize) -> u64 {
        self.0[i]
    }
    fn usable(&self, _: usize) -> bool {
        true
    }
}

fn picking(c: &mut Criterion) {
    for n in [3usize, 100] {
        let ids: Vec<String> = (0..n)
            .map(|i| format!("10.0.{}.{}:8080", i / 250, i % 250))
            .collect();
        let targets: Vec<Weighted<'_>> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| Weighted {
                id,
                weight: 1 + (i as u32 % 5),
            })
            .collect();
        let load = Idle((0..n as u64).map(|i| i % 7).collect());
        for algorithm in [
            Algorithm::WeightedRoundRobin,
            Algorithm::LeastRequest,
            Algorithm::Random,
            Algorithm::ConsistentHash,
        ] {
            let balancer = Balancer::new(algorithm, &targets);
            let key = Cell::new(0u64);
            c.bench_function(&format!("pick/{algorithm:?}/{n}"), |b| {
                b.iter(|| {
                    key.set(key.get().wrapping_add(0x9e37_79b9_7f4a_7c15));
                    black_box(balancer.pick(&load, || key.get()))
                })
            });
        }
    }
}

fn routing(c: &mut Criterion) {
    let hosts: Vec<String> = (0..50).map(|i| format!("svc{i}.example.com")).collect();
    let mut routes: Vec<(&str, &str, usize)> = hosts
        .iter()
        .enumerate()
        .map(|(i, h)| (h.as_str(), "/", i))
        .collect();
    routes.push(("*.example.com", "/", 50));
    routes.push(("*", "/api/v1/users", 51));
    routes.push(("*", "/", 52));
    let router = Router::new(routes);
    c.bench_function("route/exact-host", |b| {
        b.iter(|| black_box(router.find("svc42.example.com:8080", "/x/y")))
    });
    c.bench_function("route/wildcard-host", |b| {
        b.iter(|| black_box(router.find("other.example.com", "/x")))
    });
    c.bench_function("route/prefix", |b| {
        b.iter(|| black_box(router.find("a.org", "/api/v1/users/7")))
    });
}

fn header_rules(c: &mut Criterion) {
    let mut base = HeaderMap::new();
    base.insert("host", HeaderValue::from_static("shop.example.com"));
    base.insert("user-agent", HeaderValue::from_static("wrk"));
    base.insert("accept", HeaderValue::from_static("*/*"));
    base.insert("connection", HeaderValue::from_static("keep-alive"));
    let peer = headers::peer_value("127.0.0.1".parse().unwrap());
    let host = HeaderValue::from_static("shop.example.com");
    c.bench_function("headers/new-request", |b| {
        b.iter(|| {
            let mut h = base.clone();
            headers::strip_hop_by_hop(&mut h, false);
            headers::set_forwarded(&mut h, &peer, 0, "http", Some(&host));
            black_box(headers::ensure_request_id(&mut h));
            headers::ensure_trace(&mut h);
            h
        })
    });
}

// criterion's macro generates an undocumented public function.
#[allow(missing_docs)]
mod group {
    use super::*;
    criterion_group!(benches, picking, routing, header_rules);
}
use group::benches;
criterion_main!(benches);
