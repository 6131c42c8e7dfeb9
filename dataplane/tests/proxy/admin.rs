//! The admin listener: probes, metrics, status and the target API.

use std::collections::BTreeMap;

use http::Method;
use serde_json::Value;

use crate::support::{Backend, Proxy, Tally, pool, pools_file};

/// `/status`' entry for the target at `address` in the first pool, if it is there.
fn target_status(status: &Value, address: &str) -> Option<Value> {
    status["pools"][0]["targets"]
        .as_array()?
        .iter()
        .find(|t| t["address"] == address)
        .cloned()
}

/// Which backends answer `n` sequential requests.
async fn spread(proxy: &Proxy, n: usize) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for _ in 0..n {
        let reply = proxy.get("/", &[]).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        *seen
            .entry(reply.backend().unwrap_or_default().to_owned())
            .or_default() += 1;
    }
    seen
}

#[tokio::test]
async fn admin_api_adds_reweights_and_removes_targets_at_once() {
    let (a, b, c) = (
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("c"),
    );
    let proxy = Proxy::start(&pools_file(&[pool("web", &[], &[(&a, 1), (&b, 1)])]), &[]).await;
    let c_addr = c.addr.to_string();
    let c_path = format!("/pools/web/targets/{c_addr}");

    let added = proxy
        .admin(
            Method::POST,
            "/pools/web/targets",
            &format!(r#"{{"address":"{c_addr}","weight":1}}"#),
        )
        .await;
    assert_eq!(added.status, 201, "{}", added.body);
    let after_add = spread(&proxy, 30).await;
    let listed = target_status(&proxy.status().await, &c_addr);
    println!("after POST c: {after_add:?}; /status c {listed:?}");
    assert!(
        after_add.get("c").is_some_and(|n| *n > 0),
        "the added target got no traffic: {after_add:?}"
    );
    let listed = listed.expect("the added target is not in /status");
    assert_eq!(
        (listed["weight"].clone(), listed["state"].clone()),
        (1.into(), "healthy".into())
    );

    let drained = proxy.admin(Method::PUT, &c_path, r#"{"weight":0}"#).await;
    assert_eq!(drained.status, 200, "{}", drained.body);
    let after_drain = spread(&proxy, 30).await;
    let listed =
        target_status(&proxy.status().await, &c_addr).expect("the drained target left /status");
    println!(
        "after PUT c weight 0: {after_drain:?}; /status c weight {} state {}",
        listed["weight"], listed["state"]
    );
    assert_eq!(
        after_drain.get("c"),
        None,
        "a target of weight 0 got traffic"
    );
    assert_eq!(
        (listed["weight"].clone(), listed["state"].clone()),
        (0.into(), "drained".into())
    );

    let deleted = proxy.admin(Method::DELETE, &c_path, "").await;
    assert_eq!(deleted.status, 204, "{}", deleted.body);
    let after_delete = spread(&proxy, 30).await;
    let status = proxy.status().await;
    let pools = proxy.admin(Method::GET, "/pools", "").await;
    println!(
        "after DELETE c: {after_delete:?}; /status targets {}",
        status["pools"][0]["targets"].as_array().map_or(0, Vec::len)
    );
    assert_eq!(after_delete.get("c"), None, "a removed target got traffic");
    assert!(
        target_status(&status, &c_addr).is_none(),
        "the removed target is still in /status"
    );
    assert!(
        !pools.body.contains(&c_addr),
        "the removed target is still in /pools: {}",
        pools.body
    );
    // One pool alone, as it is in force now.
    let web = proxy.admin(Method::GET, "/pools/web", "").await;
    assert_eq!(web.status, 200, "{}", web.body);
    let web: serde_json::Value = serde_json::from_str(&web.body).unwrap();
    assert_eq!(web["name"], "web");
    assert!(!web.to_string().contains(&c_addr), "{web}");
    let none = proxy.admin(Method::GET, "/pools/nope", "").await;
    assert_eq!(none.status, 404, "{}", none.body);
    assert!(
        none.body.contains("no pool named \"nope\""),
        "{}",
        none.body
    );
}

#[tokio::test]
async fn admin_api_answers_404_409_422_and_400_and_changes_nothing() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let proxy = Proxy::start(&pools_file(&[pool("web", &[], &[(&a, 1), (&b, 1)])]), &[]).await;
    let (a_addr, unknown) = (a.addr.to_string(), "127.0.0.1:9");
    let cases = [
        (
            "unknown pool",
            Method::POST,
            "/pools/nope/targets".to_owned(),
            format!(r#"{{"address":"{unknown}","weight":1}}"#),
            404,
        ),
        (
            "duplicate target",
            Method::POST,
            "/pools/web/targets".to_owned(),
            format!(r#"{{"address":"{a_addr}","weight":1}}"#),
            409,
        ),
        (
            "weight above 1000000",
            Method::POST,
            "/pools/web/targets".to_owned(),
            format!(r#"{{"address":"{unknown}","weight":1000001}}"#),
            422,
        ),
        (
            "reweight above 1000000",
            Method::PUT,
            format!("/pools/web/targets/{a_addr}"),
            r#"{"weight":1000001}"#.to_owned(),
            422,
        ),
        (
            "bad JSON",
            Method::POST,
            "/pools/web/targets".to_owned(),
            "{not json".to_owned(),
            400,
        ),
        (
            "reweight with bad JSON",
            Method::PUT,
            format!("/pools/web/targets/{a_addr}"),
            "weight=2".to_owned(),
            400,
        ),
        (
            "reweight in an unknown pool",
            Method::PUT,
            format!("/pools/nope/targets/{a_addr}"),
            r#"{"weight":2}"#.to_owned(),
            404,
        ),
        (
            "delete an unknown target",
            Method::DELETE,
            format!("/pools/web/targets/{unknown}"),
            String::new(),
            404,
        ),
        (
            "delete from an unknown pool",
            Method::DELETE,
            format!("/pools/nope/targets/{a_addr}"),
            String::new(),
            404,
        ),
        (
            "an address that is not one",
            Method::DELETE,
            "/pools/web/targets/localhost".to_owned(),
            String::new(),
            400,
        ),
    ];
    for (what, method, path, body, want) in cases {
        let reply = proxy.admin(method.clone(), &path, &body).await;
        println!(
            "{what}: {method} {path} → {} {}",
            reply.status,
            reply.body.trim()
        );
        assert_eq!(reply.status, want, "{what}: {}", reply.body);
    }
    let status = proxy.status().await;
    let targets: Vec<(Value, Value)> = status["pools"][0]["targets"]
        .as_array()
        .expect("targets")
        .iter()
        .map(|t| (t["address"].clone(), t["weight"].clone()))
        .collect();
    assert_eq!(
        targets,
        [
            (a_addr.clone().into(), 1.into()),
            (b.addr.to_string().into(), 1.into())
        ],
        "a refused change changed the pool"
    );
}

#[tokio::test]
async fn probes_status_and_metrics_report_the_traffic_seen() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let proxy = Proxy::start(&pools_file(&[pool("web", &[], &[(&a, 1), (&b, 1)])]), &[]).await;
    for (path, want) in [("/live", "live"), ("/ready", "ready")] {
        let reply = proxy.admin(Method::GET, path, "").await;
        assert_eq!(
            (reply.status.as_u16(), reply.body.trim()),
            (200, want),
            "{path}"
        );
    }
    let tally: Tally =
        crate::support::load(proxy.url("/"), 2, crate::support::Stop::After(40)).await;
    assert_eq!(tally.failures, 0, "{tally}");

    let status = proxy.status().await;
    let pool_requests = proxy
        .metric(r#"weir_pool_requests_total{pool="web"}"#)
        .await;
    let a_requests = proxy
        .metric(&format!(
            r#"weir_target_requests_total{{pool="web",target="{}"}}"#,
            a.addr
        ))
        .await;
    println!(
        "40 requests: /status total {} success_rate {}; weir_pool_requests_total {pool_requests:?}, \
         a's weir_target_requests_total {a_requests:?}",
        status["requests"]["total"], status["requests"]["success_rate"]
    );
    assert_eq!(status["requests"]["total"], 40);
    assert_eq!(status["requests"]["success_rate"], 1.0);
    assert_eq!(status["ready"], true);
    assert_eq!(pool_requests, Some(40.0));
    assert_eq!(a_requests, Some(20.0));
}
