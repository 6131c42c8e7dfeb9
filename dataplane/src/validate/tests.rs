use super::*;
use clap::Parser as _;

fn settings() -> ProxySettings {
    crate::settings::Args::parse_from(["weir-dataplane"]).proxy
}

fn request(version: Version, method: &str, target: &str, fields: &[(&str, &str)]) -> Request<()> {
    let mut builder = Request::builder()
        .version(version)
        .method(method)
        .uri(target);
    for (name, value) in fields {
        builder = builder.header(*name, *value);
    }
    builder.body(()).expect("a valid test request")
}

fn get(target: &str, fields: &[(&str, &str)]) -> Request<()> {
    request(Version::HTTP_11, "GET", target, fields)
}

fn refused(req: &Request<()>) -> String {
    match check(&settings(), req) {
        Ok(()) => panic!("{} {} was let through", req.method(), req.uri()),
        Err(e) => e.to_string(),
    }
}

const HOST: (&str, &str) = ("host", "shop.example");

#[test]
fn a_well_formed_request_passes() {
    for req in [
        get("/", &[HOST]),
        get("/a/b.c/..d/?q=100%&x=%zz", &[HOST]),
        get("/caf%C3%A9/%2Fx", &[HOST]),
        get("http://shop.example/", &[HOST]),
        get("http://shop.example:80/", &[HOST]),
        get("https://SHOP.example:443/", &[("host", "shop.EXAMPLE")]),
        request(Version::HTTP_10, "GET", "http://shop.example/", &[]),
        request(Version::HTTP_2, "GET", "http://shop.example/", &[]),
        request(Version::HTTP_11, "PROPFIND", "/", &[HOST]),
        request(Version::HTTP_11, "VERSION-CONTROL", "/", &[HOST]),
        get("/", &[("host", "[::1]:8080")]),
        get("/", &[("host", "127.0.0.1")]),
        get("/", &[("host", "my_host.example.:")]),
        get(
            "/",
            &[HOST, ("x_battery", "1"), ("transfer-encoding", "Chunked")],
        ),
    ] {
        assert_eq!(
            check(&settings(), &req).map_err(|e| e.to_string()),
            Ok(()),
            "{req:?}"
        );
    }
}

#[test]
fn methods_are_upper_case_and_connect_and_trace_get_405() {
    for (m, status) in [
        ("get", 400),
        ("GET2", 400),
        ("CONNECT", 405),
        ("TRACE", 405),
    ] {
        let req = request(Version::HTTP_11, m, "/", &[HOST]);
        let err = check(&settings(), &req).expect_err(m);
        assert_eq!(err.status().as_u16(), status, "{m}: {err}");
    }
}

#[test]
fn targets_in_the_wrong_form_or_with_ambiguous_paths_get_400() {
    for (target, why) in [
        ("ftp://shop.example/", "scheme"),
        ("http://user@shop.example/", "userinfo"),
        ("shop.example:80", "authority form"),
        ("*", "asterisk"),
        ("/caf\u{e9}", "ASCII"),
        ("/a?caf\u{e9}", "ASCII"),
        ("/a%zz", "two hex digits"),
        ("/a%2", "two hex digits"),
        ("/a%00.html", "NUL"),
        ("/static/../admin", "dot segment"),
        ("/static/./admin", "dot segment"),
        ("/static/%2e%2E/admin", "dot segment"),
        ("/static/.%2e", "dot segment"),
        ("/..", "dot segment"),
        ("/static\\..\\admin", "backslash"),
    ] {
        let uri: Uri = target.parse().expect("hyper parses this target too");
        let err = super::target(&uri, None);
        assert!(err.is_err_and(|e| e.contains(why)), "{target}: {err:?}");
    }
    let err = refused(&request(Version::HTTP_11, "OPTIONS", "*", &[HOST]));
    assert!(err.contains("asterisk"), "{err}");
}

#[test]
fn a_fragment_seen_on_the_wire_gets_400() {
    let wire = WireHead {
        fragment: true,
        ..WireHead::default()
    };
    let mut req = get("/", &[HOST]);
    req.extensions_mut().insert(wire);
    assert!(refused(&req).contains("fragment"));
}

#[test]
fn host_is_one_valid_authority_that_agrees_with_the_target() {
    let cases: &[(Request<()>, &str)] = &[
        (get("/", &[]), "no Host"),
        (get("http://shop.example/", &[]), "no Host"),
        (request(Version::HTTP_10, "GET", "/", &[]), "no Host"),
        (get("/", &[HOST, HOST]), "more than one Host"),
        (get("/", &[("host", "")]), "empty"),
        (get("http://a.example/", &[HOST]), "another host"),
        (get("http://shop.example:8080/", &[HOST]), "another host"),
        (
            get("/", &[("host", "a.example, b.example")]),
            "letters, digits",
        ),
        (
            get("/", &[("host", "user@shop.example")]),
            "letters, digits",
        ),
        (
            get("/", &[("host", "shop.example/admin")]),
            "letters, digits",
        ),
        (get("/", &[("host", "sh%6fp.example")]), "letters, digits"),
        (get("/", &[("host", "shop .example")]), "letters, digits"),
        (get("/", &[("host", "shop.example\\x")]), "letters, digits"),
        (get("/", &[("host", "shop.example:http")]), "decimal digits"),
        (
            get("/", &[("host", "shop.example:80:80")]),
            "decimal digits",
        ),
        (get("/", &[("host", "shop.example:99999")]), "65535"),
        (get("/", &[("host", "::1")]), "empty host"),
        (get("/", &[("host", "[::g]")]), "IPv6"),
        (get("/", &[("host", "[::1")]), "IPv6"),
        (get("/", &[("host", "[v1.fe80::a+en1]")]), "IPv6"),
        (get("/", &[("host", "[::1]x")]), "junk"),
    ];
    for (req, why) in cases {
        let err = refused(req);
        assert!(err.contains(why), "{:?}: {err}", req.headers().get("host"));
    }
}

#[test]
fn framing_is_one_chunked_or_one_length_never_both() {
    for (fields, why) in [
        (
            &[("transfer-encoding", "gzip, chunked")][..],
            "other than chunked",
        ),
        (&[("transfer-encoding", ", chunked")], "other than chunked"),
        (
            &[
                ("transfer-encoding", "chunked"),
                ("transfer-encoding", "chunked"),
            ],
            "more than one Transfer-Encoding",
        ),
        (
            &[("transfer-encoding", "chunked"), ("content-length", "5")],
            "both",
        ),
        (
            &[("content-length", "5"), ("content-length", "5")],
            "more than one Content-Length",
        ),
    ] {
        let mut all = vec![HOST];
        all.extend_from_slice(fields);
        let err = refused(&request(Version::HTTP_11, "POST", "/", &all));
        assert!(err.contains(why), "{fields:?}: {err}");
    }
}

#[test]
fn framing_lines_hyper_folded_away_are_counted_from_the_wire() {
    for (wire, why) in [
        (
            WireHead {
                content_lengths: 1,
                transfer_encodings: 1,
                fragment: false,
            },
            "both",
        ),
        (
            WireHead {
                content_lengths: 2,
                transfer_encodings: 0,
                fragment: false,
            },
            "more than one Content-Length",
        ),
    ] {
        let mut req = request(Version::HTTP_11, "POST", "/", &[HOST]);
        req.extensions_mut().insert(wire);
        assert!(refused(&req).contains(why), "{wire:?}");
    }
}

#[test]
fn long_names_and_underscore_spellings_of_managed_fields_get_400() {
    let long = "x".repeat(MAX_NAME_BYTES + 1);
    let err = refused(&get("/", &[HOST, (&long, "1")]));
    assert!(err.contains("1 KiB"), "{err}");
    for alias in [
        "x_forwarded_for",
        "x-forwarded_proto",
        "x_request_id",
        "x_b3_traceid",
    ] {
        let err = refused(&get("/", &[HOST, (alias, "1")]));
        assert!(err.contains("underscore"), "{alias}: {err}");
    }
}

#[test]
fn an_upgrade_in_http_1_0_gets_400() {
    let req = request(
        Version::HTTP_10,
        "GET",
        "/",
        &[HOST, ("upgrade", "websocket")],
    );
    assert!(refused(&req).contains("HTTP/1.0"));
}

#[test]
fn an_h2c_upgrade_is_recognised_in_any_case_and_list_position() {
    assert!(is_h2c_upgrade(&get("/", &[("upgrade", "H2C")])));
    assert!(is_h2c_upgrade(&get("/", &[("upgrade", "websocket, h2c")])));
    assert!(!is_h2c_upgrade(&get("/", &[("upgrade", "websocket")])));
    assert!(!is_h2c_upgrade(&get("/", &[])));
}

#[test]
fn limits_keep_their_own_statuses() {
    let mut s = settings();
    s.max_uri_bytes = 4;
    let err = check(&s, &get("/abcdef", &[HOST])).unwrap_err();
    assert_eq!(err.status(), 414);
    s.max_body_bytes = 1;
    let err = check(
        &s,
        &request(
            Version::HTTP_11,
            "POST",
            "/",
            &[HOST, ("content-length", "2")],
        ),
    )
    .unwrap_err();
    assert_eq!(err.status(), 413);
}
