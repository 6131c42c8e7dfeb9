//! Cookie session affinity.

use http::Method;

use crate::support::{Backend, Proxy, pool, pools_file};

/// The cookie value of a `Set-Cookie` the proxy sent, after checking its attributes.
fn cookie_value(set_cookie: &str) -> String {
    let (pair, attributes) = set_cookie
        .split_once("; ")
        .unwrap_or_else(|| panic!("no attributes in {set_cookie:?}"));
    assert_eq!(
        attributes, "Path=/; HttpOnly; SameSite=Lax",
        "{set_cookie:?}"
    );
    let value = pair
        .strip_prefix("weir-session=")
        .unwrap_or_else(|| panic!("not the weir-session cookie: {set_cookie:?}"));
    assert!(
        value.len() == 16 && value.bytes().all(|b| b.is_ascii_hexdigit()),
        "the cookie value is not 16 hex digits: {set_cookie:?}"
    );
    value.to_owned()
}

#[tokio::test]
async fn cookie_affinity_pins_a_client_to_one_target_until_that_target_is_removed() {
    let backends = [
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("c"),
    ];
    let targets: Vec<_> = backends.iter().map(|b| (b, 1)).collect();
    let yaml = pools_file(&[pool(
        "web",
        &["sessionAffinity: { type: Cookie }"],
        &targets,
    )]);
    let proxy = Proxy::start(&yaml, &[]).await;

    let first = proxy.get("/", &[]).await;
    assert_eq!(first.status, 200);
    let set_cookie = first
        .header("set-cookie")
        .expect("the first answer sets the cookie");
    let id = cookie_value(set_cookie);
    let pinned = first.backend().expect("x-backend").to_owned();
    let cookie = format!("weir-session={id}");

    let mut elsewhere = 0;
    let mut cookies_set = 0;
    for _ in 0..100 {
        let reply = proxy.get("/", &[("cookie", &cookie)]).await;
        assert_eq!(reply.status, 200);
        elsewhere += usize::from(reply.backend() != Some(pinned.as_str()));
        cookies_set += usize::from(reply.header("set-cookie").is_some());
    }
    println!(
        "cookie {id} pinned to {pinned}: 100 requests, {elsewhere} elsewhere, \
         {cookies_set} new cookies"
    );
    assert_eq!(elsewhere, 0, "requests carrying the cookie left {pinned}");
    assert_eq!(cookies_set, 0, "a pinned request got a new cookie");

    let target = backends
        .iter()
        .find(|b| b.name == pinned)
        .expect("a known backend");
    let removed = proxy
        .admin(
            Method::DELETE,
            &format!("/pools/web/targets/{}", target.addr),
            "",
        )
        .await;
    assert_eq!(removed.status, 204, "{}", removed.body);

    let moved = proxy.get("/", &[("cookie", &cookie)]).await;
    assert_eq!(moved.status, 200);
    let now = moved.backend().expect("x-backend").to_owned();
    let new_cookie = moved
        .header("set-cookie")
        .expect("a request whose target is gone gets a new cookie");
    let new_id = cookie_value(new_cookie);
    println!("after removing {pinned}: the same cookie reached {now}, new cookie {new_id}");
    assert_ne!(now, pinned, "a removed target still got traffic");
    assert_ne!(new_id, id, "the new cookie names the removed target");

    for _ in 0..20 {
        let reply = proxy
            .get("/", &[("cookie", &format!("weir-session={new_id}"))])
            .await;
        assert_eq!(
            reply.backend(),
            Some(now.as_str()),
            "the new cookie does not pin"
        );
    }
}
