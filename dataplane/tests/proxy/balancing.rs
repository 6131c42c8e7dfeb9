//! Load-balancing algorithms, seen from the backends.

use std::collections::{BTreeMap, BTreeSet};

use crate::support::{Backend, Proxy, Stop, load, pool, pools_file};

#[tokio::test]
async fn weights_3_2_1_split_traffic_50_33_17() {
    let (a, b, c) = (
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("c"),
    );
    let yaml = pools_file(&[pool(
        "web",
        &["algorithm: WeightedRoundRobin"],
        &[(&a, 3), (&b, 2), (&c, 1)],
    )]);
    let proxy = Proxy::start(&yaml, &[]).await;

    let tally = load(proxy.url("/"), 4, Stop::After(6000)).await;
    println!("weights 3:2:1 over 4 keep-alive clients: {tally}");

    assert_eq!(tally.requests, 6000);
    assert_eq!(tally.failures, 0, "{tally}");
    for (backend, want) in [("a", 50.0), ("b", 100.0 / 3.0), ("c", 100.0 / 6.0)] {
        let share = tally.share(backend);
        assert!(
            (share - want).abs() <= 2.0,
            "{backend} got {share:.1}% of the traffic, want {want:.1}% ± 2: {tally}"
        );
    }
    for backend in [&a, &b, &c] {
        assert_eq!(
            backend.requests().await,
            tally.count(&backend.name),
            "{}'s own count differs from the answers it is credited with",
            backend.name
        );
    }
}

#[tokio::test]
async fn least_request_random_and_consistent_hash_pools_each_serve_traffic() {
    let (a, b, c) = (
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("c"),
    );
    let targets = [(&a, 1), (&b, 1), (&c, 1)];
    let yaml = pools_file(&[
        pool(
            "least",
            &[
                "routes: [{ host: \"*\", pathPrefix: /least }]",
                "algorithm: LeastRequest",
            ],
            &targets,
        ),
        pool(
            "random",
            &[
                "routes: [{ host: \"*\", pathPrefix: /random }]",
                "algorithm: Random",
            ],
            &targets,
        ),
        pool(
            "hash",
            &[
                "routes: [{ host: \"*\", pathPrefix: /hash }]",
                "algorithm: ConsistentHash",
            ],
            &targets,
        ),
    ]);
    let proxy = Proxy::start(&yaml, &[]).await;

    for algorithm in ["least", "random", "hash"] {
        let tally = load(proxy.url(&format!("/{algorithm}/x")), 3, Stop::After(300)).await;
        println!("{algorithm}: {tally}");
        assert_eq!(tally.failures, 0, "{algorithm}: {tally}");
        assert_eq!(tally.by_backend.values().sum::<u64>(), 300, "{tally}");
        if algorithm == "hash" {
            // Without session affinity the key is the client address: one client, one target.
            assert_eq!(
                tally.by_backend.len(),
                1,
                "ConsistentHash spread one client address over several targets: {tally}"
            );
        } else {
            assert_eq!(
                tally.by_backend.len(),
                3,
                "{algorithm} left a target unused over 300 requests: {tally}"
            );
        }
    }
}

#[tokio::test]
async fn consistent_hash_with_header_affinity_sends_each_header_value_to_one_backend() {
    let (a, b, c) = (
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("c"),
    );
    let yaml = pools_file(&[pool(
        "web",
        &[
            "algorithm: ConsistentHash",
            "sessionAffinity: { type: Header, headerName: x-user }",
        ],
        &[(&a, 1), (&b, 1), (&c, 1)],
    )]);
    let proxy = Proxy::start(&yaml, &[]).await;

    let mut seen: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for round in 0..5 {
        for user in 0..30 {
            let user = format!("user-{user}");
            let reply = proxy.get("/", &[("x-user", &user)]).await;
            assert_eq!(reply.status, 200, "round {round}, {user}: {}", reply.body);
            let backend = reply.backend().expect("x-backend").to_owned();
            seen.entry(user).or_default().insert(backend);
        }
    }
    let mut per_backend: BTreeMap<&str, usize> = BTreeMap::new();
    for backends in seen.values() {
        for backend in backends {
            *per_backend.entry(backend.as_str()).or_default() += 1;
        }
    }
    println!("header affinity: 30 x-user values × 5 requests; users per backend {per_backend:?}");
    for (user, backends) in &seen {
        assert_eq!(
            backends.len(),
            1,
            "{user} reached several backends: {backends:?}"
        );
    }
    assert!(
        per_backend.len() >= 2,
        "30 header values all hashed to one backend: {per_backend:?}"
    );
}
