use super::*;

fn scan(stream: &[u8]) -> (Vec<WireHead>, Phase) {
    let heads = Heads::default();
    let mut scanner = Scanner::new(heads.clone(), 64 * 1024);
    scanner.feed(stream);
    let seen = heads.lock().iter().copied().collect();
    (seen, scanner.phase)
}

/// Feeds `stream` split at every position, and in single bytes, and checks the heads
/// are the same as in one piece.
fn same_in_pieces(stream: &[u8]) -> Vec<WireHead> {
    let (whole, phase) = scan(stream);
    for cut in 0..stream.len() {
        let heads = Heads::default();
        let mut scanner = Scanner::new(heads.clone(), 64 * 1024);
        scanner.feed(&stream[..cut]);
        scanner.feed(&stream[cut..]);
        let pieces: Vec<WireHead> = heads.lock().iter().copied().collect();
        assert_eq!(pieces, whole, "split at {cut}");
        assert_eq!(scanner.phase, phase, "split at {cut}");
    }
    let heads = Heads::default();
    let mut scanner = Scanner::new(heads.clone(), 64 * 1024);
    for b in stream {
        scanner.feed(std::slice::from_ref(b));
    }
    assert_eq!(heads.lock().iter().copied().collect::<Vec<_>>(), whole);
    whole
}

const PLAIN: WireHead = WireHead {
    content_lengths: 0,
    transfer_encodings: 0,
    fragment: false,
};

#[test]
fn pipelined_requests_are_told_apart_by_their_framing() {
    let stream = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
        POST /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
        5;ext=1\r\nhello\r\n3 \r\nabc\r\n0\r\nX-Trailer: 1\r\n\r\n\
        GET /c#frag HTTP/1.1\r\nHost: x\r\n\r\n\
        \r\nGET /d HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok";
    let heads = same_in_pieces(stream);
    assert_eq!(
        heads,
        [
            WireHead {
                content_lengths: 1,
                ..PLAIN
            },
            WireHead {
                transfer_encodings: 1,
                ..PLAIN
            },
            WireHead {
                fragment: true,
                ..PLAIN
            },
            WireHead {
                content_lengths: 2,
                ..PLAIN
            },
        ]
    );
}

#[test]
fn a_body_that_looks_like_a_request_is_not_read_as_one() {
    let body = "GET /admin HTTP/1.1\r\nHost: x\r\n\r\n";
    let smuggled = format!(
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let (heads, phase) = scan(smuggled.as_bytes());
    assert_eq!(heads.len(), 1);
    assert_eq!(phase, Phase::Head);
}

#[test]
fn content_length_next_to_transfer_encoding_is_counted_in_either_order() {
    for fields in [
        "Content-Length: 6\r\nTransfer-Encoding: chunked",
        "Transfer-Encoding: chunked\r\nContent-Length: 6",
    ] {
        let stream = format!("POST / HTTP/1.1\r\nHost: x\r\n{fields}\r\n\r\n0\r\n\r\n");
        let (heads, phase) = scan(stream.as_bytes());
        assert_eq!(
            heads,
            [WireHead {
                content_lengths: 1,
                transfer_encodings: 1,
                fragment: false
            }]
        );
        // TE wins, as in hyper: the body ended at the last chunk.
        assert_eq!(phase, Phase::Head, "{fields}");
    }
}

#[test]
fn the_tap_stops_where_hyper_would_close_or_stop_speaking_http1() {
    let websocket =
        b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n\x81\x85";
    let blind = [
        "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_owned(),
        "GET / HTTP/1.2\r\nHost: x\r\n\r\n".to_owned(),
        "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n".to_owned(),
        "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n".to_owned(),
        "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n".to_owned(),
        "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n".to_owned(),
        "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;a\nhello".to_owned(),
        format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(70 * 1024)),
    ];
    let blind = blind
        .iter()
        .map(|s| s.as_bytes())
        .chain([websocket.as_slice()]);
    for stream in blind {
        let (_, phase) = scan(stream);
        assert_eq!(
            phase,
            Phase::Blind,
            "{:?}",
            String::from_utf8_lossy(&stream[..stream.len().min(60)])
        );
    }
}

#[test]
fn requests_after_an_upgrade_request_carry_no_facts() {
    let stream =
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n\
        GET /next HTTP/1.1\r\nHost: x\r\n\r\n";
    let (heads, phase) = scan(stream);
    assert_eq!(heads, [PLAIN]);
    assert_eq!(phase, Phase::Blind);
}

#[test]
fn attach_hands_each_http1_request_its_own_head_in_order() {
    let heads = Heads::default();
    heads.push(PLAIN);
    heads.push(WireHead {
        fragment: true,
        ..PLAIN
    });
    let mut h2 = Request::builder()
        .version(Version::HTTP_2)
        .body(())
        .unwrap();
    heads.attach(&mut h2);
    assert!(h2.extensions().get::<WireHead>().is_none());
    let mut first = Request::new(());
    let mut second = Request::new(());
    let mut third = Request::new(());
    heads.attach(&mut first);
    heads.attach(&mut second);
    heads.attach(&mut third);
    assert_eq!(first.extensions().get::<WireHead>(), Some(&PLAIN));
    assert!(second.extensions().get::<WireHead>().unwrap().fragment);
    assert!(third.extensions().get::<WireHead>().is_none());
}

#[test]
fn hypers_number_rules_are_mirrored() {
    assert_eq!(digits(b"005"), Some(5));
    assert_eq!(digits(b"+5"), None);
    assert_eq!(digits(b""), None);
    assert_eq!(digits(b"99999999999999999999"), None);
    assert!(is_chunked(b"gzip, chunked"));
    assert!(is_chunked(b"CHUNKED"));
    assert!(!is_chunked(b"chunked, identity"));
    assert!(!is_chunked(b"xchunked"));
}
