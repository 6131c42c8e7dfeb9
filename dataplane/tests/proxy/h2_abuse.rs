//! HTTP/2 from hostile and broken clients, written frame by frame (`h2_wire`).
//!
//! Each abuse that has hurt HTTP/2 servers (rapid reset, CVE-2023-44487; CONTINUATION floods;
//! SETTINGS, PING and empty-DATA floods; window abuse; too many streams) gets the answer
//! RFC 9113 asks for, while the proxy's memory stays bounded, the backend behind it is not
//! flooded, and a well-behaved h2c client on another connection keeps being served. Every
//! protocol error a client can make in a stream's or the connection's states gets the RFC's
//! error code, as a stream error or a connection error as the RFC says.
//!
//! `docs/hardening.md` says which defence is h2's and which is Weir's.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http::Method;
use weir_dataplane::server::PREMATURE_RESETS_ALLOWED;

use crate::h2_wire::{
    FrameWriter, H2, Outcome, PREFACE, code, code_name, flag, frame, get, headers, integer, kind,
    literal, literal_indexed_name, ping, request_block, rst_stream, setting, settings, string,
    window_update,
};
use crate::support::{Backend, Proxy, h2c, pool, pools_file, raw, send};

/// How much the proxy's resident memory may grow during one attack.
const RSS_GROWTH_BOUND: u64 = 64 << 20;
/// Longest a bystander's request may take during an attack: a bound against starvation, not
/// a speed target.
const BYSTANDER_BOUND: Duration = Duration::from_secs(2);
/// Fewest requests the bystander sends beside an attack.
const BYSTANDER_REQUESTS: u64 = 20;

// ---------------------------------------------------------------------------------------------
// The attacks

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_in_one_burst_gets_goaway_enhance_your_calm_before_the_backend_sees_a_flood() {
    let bed = Bed::start(&[]).await;
    let watch = bed.watch();
    let H2 { mut reader, writer } = H2::open(bed.proxy.addr, &[]).await;
    const STREAMS: u32 = 10_000;
    let mut burst = Vec::new();
    for i in 0..STREAMS {
        let id = 2 * i + 1;
        burst.extend(get(id, "/"));
        burst.extend(rst_stream(id, code::CANCEL));
    }
    let writing = spawn_write(writer, burst);
    let outcome = reader.outcome(Duration::from_secs(10)).await;
    let written = writing.await.expect("the writer");
    let seen = watch.finish().await;
    let reached = bed.target.requests().await;
    println!(
        "{STREAMS} × (HEADERS + RST_STREAM) in one burst ({written} bytes taken): {}; backend \
         requests {reached}; {seen}",
        outcome.summary()
    );
    assert_eq!(
        outcome.goaway_code(),
        Some(code::ENHANCE_YOUR_CALM),
        "{}",
        outcome.summary()
    );
    assert!(outcome.closed, "the connection stayed open after GOAWAY");
    assert!(
        reached <= 100,
        "{reached} of {STREAMS} reset streams reached the backend"
    );
    seen.assert_unharmed();
    assert_eq!(bed.closed("h2_enhance_your_calm").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_paced_so_each_stream_reaches_the_proxy_is_cut_off_by_the_premature_reset_budget()
 {
    let bed = Bed::start(&[]).await;
    let watch = bed.watch();
    let H2 {
        mut reader,
        mut writer,
    } = H2::open(bed.proxy.addr, &[]).await;
    let reading = tokio::spawn(async move { reader.outcome(Duration::from_secs(60)).await });
    // Each round opens ROUND streams to a slow path and resets them once they have reached
    // the backend: past hyper's accept, where h2's budget for streams reset before they are
    // accepted no longer sees them. (An attacker would tune a delay; the test watches the
    // backend so that a busy machine cannot turn this into the burst test.)
    const ROUND: u32 = 50;
    const ROUNDS: u32 = 40;
    let mut opened = 0u32;
    let mut next = 1u32;
    for _ in 0..ROUNDS {
        let ids: Vec<u32> = (0..ROUND).map(|k| next + 2 * k).collect();
        next += 2 * ROUND;
        let open: Vec<u8> = ids.iter().flat_map(|id| get(*id, "/delay/2000")).collect();
        if !writer.try_send(&open, Duration::from_secs(2)).await {
            break;
        }
        opened += ROUND;
        let forwarded = Instant::now();
        while bed.target.requests().await < u64::from(opened)
            && forwarded.elapsed() < Duration::from_millis(500)
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let reset: Vec<u8> = ids
            .iter()
            .flat_map(|id| rst_stream(*id, code::CANCEL))
            .collect();
        if !writer.try_send(&reset, Duration::from_secs(2)).await {
            break;
        }
    }
    let outcome = reading.await.expect("the reader");
    let seen = watch.finish().await;
    let reached = bed.target.requests().await;
    println!(
        "paced rapid reset, {ROUND} streams a round, each reset once it reached the backend: \
         {opened} streams opened before the proxy stopped taking them; {}; backend requests \
         {reached}; {seen}",
        outcome.summary()
    );
    assert!(outcome.closed, "the connection was never closed");
    assert!(
        outcome.goaway.is_some(),
        "closed without GOAWAY: {}",
        outcome.summary()
    );
    assert!(
        opened > 2 * ROUND + PREMATURE_RESETS_ALLOWED as u32,
        "the attack ended after {opened} streams, before the budget could be tested"
    );
    assert!(
        reached <= PREMATURE_RESETS_ALLOWED + 3 * u64::from(ROUND),
        "{reached} of {opened} reset streams reached the backend"
    );
    seen.assert_unharmed();
    assert_eq!(bed.closed("premature_resets").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_continuation_flood_gets_goaway_enhance_your_calm() {
    let bed = Bed::start(&[]).await;
    let watch = bed.watch();
    // Empty CONTINUATION frames, the cheapest flood, and full 16 KiB ones carrying a header
    // value that never ends, which would pile up in a server that buffers the block.
    let mut block = request_block("GET", "/", &[]);
    block.push(0x00);
    string(&mut block, b"x-flood");
    integer(&mut block, 1 << 20, 7, 0);
    let variants = [("empty", Vec::new()), ("16 KiB", vec![b'a'; 16 * 1024])];
    for (what, fragment) in variants {
        let H2 { mut reader, writer } = H2::open(bed.proxy.addr, &[]).await;
        let mut flood = headers(1, flag::END_STREAM, &block);
        let continuation = frame(kind::CONTINUATION, 0, 1, &fragment);
        let count = if fragment.is_empty() { 100_000 } else { 4_000 };
        for _ in 0..count {
            flood.extend_from_slice(&continuation);
        }
        let writing = spawn_write(writer, flood);
        let outcome = reader.outcome(Duration::from_secs(10)).await;
        let written = writing.await.expect("the writer");
        println!(
            "HEADERS + {count} {what} CONTINUATION frames ({written} bytes taken): {}",
            outcome.summary()
        );
        assert_eq!(
            outcome.goaway_code(),
            Some(code::ENHANCE_YOUR_CALM),
            "{what}: {}",
            outcome.summary()
        );
        assert!(outcome.closed, "{what}: still open after GOAWAY");
    }
    let seen = watch.finish().await;
    println!("{seen}");
    seen.assert_unharmed();
    assert_eq!(bed.target.requests().await, 0, "a header block never ended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_hpack_bomb_gets_goaway_enhance_your_calm() {
    let bed = Bed::start(&[]).await;
    let watch = bed.watch();
    let H2 {
        mut reader,
        mut writer,
    } = H2::open(bed.proxy.addr, &[]).await;
    // One 4 KiB field put in the dynamic table, then referenced by its one-byte index a
    // thousand times: 4 MB of decoded header list from 5 KiB on the wire.
    let mut block = request_block("GET", "/", &[]);
    block.push(0x40);
    string(&mut block, b"x-bomb");
    string(&mut block, &[b'a'; 4000]);
    block.extend(std::iter::repeat_n(0x80 | 62, 1000));
    writer
        .send(&headers(1, flag::END_HEADERS | flag::END_STREAM, &block))
        .await;
    let outcome = reader.outcome(Duration::from_secs(5)).await;
    let seen = watch.finish().await;
    println!(
        "HPACK bomb ({} bytes, 4 MB decoded): {}; {seen}",
        block.len(),
        outcome.summary()
    );
    assert_eq!(
        outcome.goaway_code(),
        Some(code::ENHANCE_YOUR_CALM),
        "{}",
        outcome.summary()
    );
    seen.assert_unharmed();
    assert_eq!(bed.target.requests().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_and_ping_floods_from_a_client_that_does_not_read_are_stopped_by_backpressure() {
    let bed = Bed::start(&[]).await;
    let watch = bed.watch();
    // Every SETTINGS and PING must be acknowledged (CVE-2019-9515, CVE-2019-9512); a server
    // that queues the acknowledgements for a client that does not read grows without bound.
    const OFFERED: usize = 256 << 20;
    let floods = [
        (
            "SETTINGS",
            settings(&[(setting::INITIAL_WINDOW_SIZE, 65_535)]),
        ),
        ("PING", ping(*b"flooding")),
    ];
    for (what, one) in floods {
        let H2 { reader, mut writer } = H2::open(bed.proxy.addr, &[]).await;
        let chunk: Vec<u8> = one.repeat(64 * 1024 / one.len());
        let mut taken = 0;
        while taken < OFFERED {
            if !writer.try_send(&chunk, Duration::from_secs(2)).await {
                break;
            }
            taken += chunk.len();
        }
        println!(
            "{what} flood, never reading: the proxy took {:.1} MiB, then stopped reading",
            taken as f64 / f64::from(1 << 20)
        );
        assert!(
            taken < OFFERED,
            "{what}: the proxy took all {OFFERED} bytes from a client that reads nothing"
        );
        drop((reader, writer));
    }
    let seen = watch.finish().await;
    println!("{seen}");
    seen.assert_unharmed();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_data_frame_flood_gets_goaway_enhance_your_calm() {
    let bed = Bed::start(&[]).await;
    let watch = bed.watch();
    let H2 { mut reader, writer } = H2::open(bed.proxy.addr, &[]).await;
    // CVE-2019-9518: frames that carry nothing cost the server a frame's work each.
    let mut flood = headers(1, flag::END_HEADERS, &request_block("POST", "/echo", &[]));
    let empty = frame(kind::DATA, 0, 1, &[]);
    for _ in 0..100_000 {
        flood.extend_from_slice(&empty);
    }
    let writing = spawn_write(writer, flood);
    let outcome = reader.outcome(Duration::from_secs(10)).await;
    let written = writing.await.expect("the writer");
    let seen = watch.finish().await;
    println!(
        "a POST then 100,000 empty DATA frames ({written} bytes taken): {}; {seen}",
        outcome.summary()
    );
    assert_eq!(
        outcome.goaway_code(),
        Some(code::ENHANCE_YOUR_CALM),
        "{}",
        outcome.summary()
    );
    assert!(outcome.closed);
    seen.assert_unharmed();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_abuse_costs_the_proxy_nothing_it_cannot_bound() {
    let bed = Bed::start(&[]).await;
    let watch = bed.watch();

    // 100,000 WINDOW_UPDATEs of one byte each: legal, and each must be cheap.
    let H2 {
        mut reader,
        mut writer,
    } = H2::open(bed.proxy.addr, &[]).await;
    let updates: Vec<u8> = window_update(0, 1).repeat(100_000);
    writer.send(&updates).await;
    writer.send(&get(1, "/")).await;
    let mut outcome = Outcome::default();
    reader
        .read_until(&mut outcome, Duration::from_secs(5), |o| {
            o.ended.contains(&1) || o.goaway.is_some()
        })
        .await;
    println!(
        "100,000 one-byte WINDOW_UPDATEs, then a GET: {}",
        outcome.summary()
    );
    assert_eq!(outcome.status_of(1), Some(200), "{}", outcome.summary());
    assert!(outcome.goaway.is_none());

    // A client that opens the proxy's window to nothing: it holds its streams, but the proxy
    // holds no more than a chunk of each response for it.
    let H2 {
        mut reader,
        mut writer,
    } = H2::open(bed.proxy.addr, &[(setting::INITIAL_WINDOW_SIZE, 0)]).await;
    let streams: Vec<u32> = (0..100).map(|i| 2 * i + 1).collect();
    let opens: Vec<u8> = streams.iter().flat_map(|id| get(*id, "/")).collect();
    writer.send(&opens).await;
    let mut outcome = Outcome::default();
    reader
        .read_until(&mut outcome, Duration::from_secs(5), |o| {
            o.answers.len() == 100
        })
        .await;
    println!(
        "100 GETs with a stream window of 0: {}; ended {}",
        outcome.summary(),
        outcome.ended.len()
    );
    assert_eq!(outcome.answers.len(), 100, "every response head is sent");
    assert!(
        outcome.ended.is_empty(),
        "no body byte may pass a window of 0"
    );
    // Opening the windows lets every response finish.
    let open: Vec<u8> = streams
        .iter()
        .flat_map(|id| window_update(*id, 1 << 20))
        .collect();
    writer.send(&open).await;
    reader
        .read_until(&mut outcome, Duration::from_secs(5), |o| {
            o.ended.len() == 100
        })
        .await;
    assert_eq!(outcome.ended.len(), 100, "{}", outcome.summary());

    let seen = watch.finish().await;
    println!("{seen}");
    seen.assert_unharmed();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_beyond_the_concurrency_limit_are_refused_and_a_flood_of_them_gets_goaway() {
    let bed = Bed::start(&["--max-concurrent-streams", "100"]).await;
    let watch = bed.watch();
    let H2 {
        mut reader,
        mut writer,
    } = H2::open(bed.proxy.addr, &[]).await;
    // 150 slow requests at once: 100 are served, 50 refused (RFC 9113 §5.1.2: REFUSED_STREAM,
    // safe to send again).
    let first: Vec<u32> = (0..150).map(|i| 2 * i + 1).collect();
    let opens: Vec<u8> = first
        .iter()
        .flat_map(|id| get(*id, "/delay/3000"))
        .collect();
    writer.send(&opens).await;
    let mut outcome = Outcome::default();
    reader
        .read_until(&mut outcome, Duration::from_secs(2), |o| {
            o.resets.len() >= 50
        })
        .await;
    let refused = outcome
        .resets
        .iter()
        .filter(|(_, c)| *c == code::REFUSED_STREAM)
        .count();
    println!("150 slow streams, limit 100: {}", outcome.summary());
    assert_eq!(refused, 50, "{}", outcome.summary());
    // Then the client keeps opening streams it was told it may not: each refusal costs the
    // proxy a frame, and h2 stops after 1024 of them.
    let flood: Vec<u8> = (150..3000)
        .flat_map(|i| get(2 * i + 1, "/delay/3000"))
        .collect();
    let _ = writer.try_send(&flood, Duration::from_secs(5)).await;
    reader
        .read_until(&mut outcome, Duration::from_secs(10), |_| false)
        .await;
    let seen = watch.finish().await;
    let reached = bed.target.requests().await;
    println!(
        "then 2850 more: {}; backend requests {reached}; {seen}",
        outcome.summary()
    );
    assert_eq!(
        outcome.goaway_code(),
        Some(code::ENHANCE_YOUR_CALM),
        "{}",
        outcome.summary()
    );
    assert!(
        reached <= 100,
        "{reached} requests reached the backend, beyond the 100 streams allowed"
    );
    seen.assert_unharmed();
}

// ---------------------------------------------------------------------------------------------
// Protocol errors, one connection each

/// What RFC 9113 asks the server to do.
#[derive(Clone, Copy, Debug)]
enum Want {
    /// A connection error: GOAWAY with this code, then the connection closes.
    GoAway(u32),
    /// A stream error on the case's stream: RST_STREAM with this code; the connection goes on.
    Reset(u32),
    /// Either, where the RFC leaves it to the server.
    Either(u32),
    /// Malformed request (§8.1.1): a stream error PROTOCOL_ERROR, perhaps after a 4xx answer;
    /// nothing reaches the backend.
    Malformed,
    /// The frame or setting is to be ignored; the connection goes on.
    Ignored,
    /// h2 0.4 answers otherwise than the RFC asks, though no less safely: with a GOAWAY of
    /// another code (`Some`), or by going on (`None`). Held to what h2 does, so that a change
    /// either way shows up here and in `docs/hardening.md`.
    Deviates {
        /// What RFC 9113 asks for.
        rfc: &'static str,
        /// The GOAWAY code h2 sends instead, or `None` when it goes on.
        h2: Option<u32>,
    },
}

enum Step {
    /// Frames to write.
    Send(Vec<u8>),
    /// Wait for the response on this stream to end.
    Answered(u32),
}

struct Case {
    what: &'static str,
    rfc: &'static str,
    /// Whether the preface and SETTINGS exchange comes first.
    handshake: bool,
    steps: Vec<Step>,
    /// The stream a stream error is expected on.
    stream: u32,
    want: Want,
}

fn case(what: &'static str, rfc: &'static str, steps: Vec<Step>, want: Want) -> Case {
    Case {
        what,
        rfc,
        handshake: true,
        steps,
        stream: 1,
        want,
    }
}

/// A request on stream 1 left open (no END_STREAM), to a path that answers slowly.
fn open_post() -> Vec<u8> {
    headers(
        1,
        flag::END_HEADERS,
        &request_block("POST", "/delay/500", &[]),
    )
}

/// A GET on stream 1 that stays in flight for a while.
fn slow_get() -> Vec<u8> {
    get(1, "/delay/500")
}

/// A request on stream 1 whose header block is `fields` after the usual pseudo-headers, or
/// `fields` alone when `whole` (for cases about the pseudo-headers themselves).
fn request_with(fields: &[(&str, &str)], whole: bool) -> Vec<u8> {
    let mut block = if whole {
        Vec::new()
    } else {
        request_block("GET", "/", &[])
    };
    for (name, value) in fields {
        literal(&mut block, name, value);
    }
    headers(1, flag::END_HEADERS | flag::END_STREAM, &block)
}

fn cases() -> Vec<Case> {
    use Step::{Answered, Send};
    use Want::{Deviates, Either, GoAway, Ignored, Malformed, Reset};
    let goaway = |what, rfc, frames: Vec<u8>, c| case(what, rfc, vec![Send(frames)], GoAway(c));
    // h2's frame decoder answers every frame it cannot load, whatever the reason, with
    // PROTOCOL_ERROR; the RFC has FRAME_SIZE_ERROR for a wrong length and COMPRESSION_ERROR
    // for a field block that does not decode.
    let frame_size = Deviates {
        rfc: "GOAWAY FRAME_SIZE_ERROR",
        h2: Some(code::PROTOCOL_ERROR),
    };
    let compression = Deviates {
        rfc: "GOAWAY COMPRESSION_ERROR",
        h2: Some(code::PROTOCOL_ERROR),
    };
    let deviates = |what, rfc, frames: Vec<u8>, want| case(what, rfc, vec![Send(frames)], want);
    let mut padded_headers = vec![200u8];
    padded_headers.extend(request_block("GET", "/", &[]));
    let mut pseudo_after_regular = Vec::new();
    literal(&mut pseudo_after_regular, "x-early", "1");
    pseudo_after_regular.extend(request_block("GET", "/", &[]));
    let mut without_path = vec![0x82, 0x86];
    literal_indexed_name(&mut without_path, 1, "localhost");
    let mut empty_path = vec![0x82, 0x86];
    literal_indexed_name(&mut empty_path, 4, "");
    literal_indexed_name(&mut empty_path, 1, "localhost");
    let mut twice_method = request_block("GET", "/", &[]);
    twice_method.push(0x83);
    let mut without_method = vec![0x86];
    literal_indexed_name(&mut without_method, 4, "/");
    literal_indexed_name(&mut without_method, 1, "localhost");
    let mut with_status = request_block("GET", "/", &[]);
    with_status.push(0x88);
    let mut bad_table_size = request_block("GET", "/", &[]);
    // A dynamic table size update must come first, and not above the 4096 allowed.
    let mut table_update = Vec::new();
    integer(&mut table_update, 1 << 20, 5, 0x20);
    table_update.append(&mut bad_table_size);
    vec![
        Case {
            handshake: false,
            ..deviates(
                "a frame other than SETTINGS right after the preface",
                "§3.4",
                [PREFACE.to_vec(), ping(*b"notfirst")].concat(),
                Deviates {
                    rfc: "GOAWAY PROTOCOL_ERROR",
                    h2: None,
                },
            )
        },
        goaway(
            "DATA on an idle stream",
            "§5.1",
            frame(kind::DATA, 0, 1, b"x"),
            code::PROTOCOL_ERROR,
        ),
        goaway(
            "WINDOW_UPDATE on an idle stream",
            "§5.1",
            window_update(1, 1),
            code::PROTOCOL_ERROR,
        ),
        goaway(
            "RST_STREAM on an idle stream",
            "§6.4",
            rst_stream(1, code::CANCEL),
            code::PROTOCOL_ERROR,
        ),
        goaway(
            "HEADERS on stream 0",
            "§6.2",
            [get(0, "/")].concat(),
            code::PROTOCOL_ERROR,
        ),
        goaway(
            "HEADERS on an even stream",
            "§5.1.1",
            get(2, "/"),
            code::PROTOCOL_ERROR,
        ),
        case(
            "HEADERS on a stream below one already opened",
            "§5.1.1",
            vec![Send(get(5, "/")), Answered(5), Send(get(3, "/"))],
            GoAway(code::PROTOCOL_ERROR),
        ),
        case(
            "DATA on a stream the client ended (half-closed remote)",
            "§5.1",
            vec![Send(slow_get()), Send(frame(kind::DATA, 0, 1, b"x"))],
            Deviates {
                rfc: "RST_STREAM (or GOAWAY) STREAM_CLOSED",
                h2: Some(code::PROTOCOL_ERROR),
            },
        ),
        case(
            "DATA on a stream that closed",
            "§5.1",
            vec![
                Send(get(1, "/")),
                Answered(1),
                Send(frame(kind::DATA, 0, 1, b"x")),
            ],
            Either(code::STREAM_CLOSED),
        ),
        goaway(
            "RST_STREAM on stream 0",
            "§6.4",
            rst_stream(0, code::CANCEL),
            code::PROTOCOL_ERROR,
        ),
        case(
            "a DATA frame over SETTINGS_MAX_FRAME_SIZE",
            "§4.2",
            vec![
                Send(open_post()),
                Send(frame(kind::DATA, 0, 1, &[b'a'; 16_385])),
            ],
            Either(code::FRAME_SIZE_ERROR),
        ),
        goaway(
            "a HEADERS frame over SETTINGS_MAX_FRAME_SIZE",
            "§4.2",
            {
                let mut block = request_block("GET", "/", &[]);
                literal(&mut block, "x-big", &"a".repeat(16_400));
                headers(1, flag::END_HEADERS | flag::END_STREAM, &block)
            },
            code::FRAME_SIZE_ERROR,
        ),
        deviates(
            "a PING of 7 bytes",
            "§6.7",
            frame(kind::PING, 0, 0, b"1234567"),
            frame_size,
        ),
        deviates(
            "a SETTINGS frame of 5 bytes",
            "§6.5",
            frame(kind::SETTINGS, 0, 0, &[0, 4, 0, 0, 1]),
            frame_size,
        ),
        deviates(
            "a SETTINGS acknowledgement with a payload",
            "§6.5",
            frame(kind::SETTINGS, flag::ACK, 0, &[0, 4, 0, 0, 1, 0]),
            frame_size,
        ),
        deviates(
            "a WINDOW_UPDATE of 3 bytes",
            "§6.9",
            frame(kind::WINDOW_UPDATE, 0, 0, &[0, 0, 1]),
            frame_size,
        ),
        case(
            "an RST_STREAM of 3 bytes",
            "§6.4",
            vec![
                Send(slow_get()),
                Send(frame(kind::RST_STREAM, 0, 1, &[0, 0, 8])),
            ],
            frame_size,
        ),
        case(
            "a PRIORITY frame of 4 bytes",
            "§6.3",
            vec![Send(frame(kind::PRIORITY, 0, 1, &[0, 0, 0, 3]))],
            Deviates {
                rfc: "RST_STREAM (or GOAWAY) FRAME_SIZE_ERROR",
                h2: Some(code::PROTOCOL_ERROR),
            },
        ),
        goaway(
            "a WINDOW_UPDATE of 0 on the connection",
            "§6.9",
            window_update(0, 0),
            code::PROTOCOL_ERROR,
        ),
        case(
            "a WINDOW_UPDATE of 0 on an open stream",
            "§6.9",
            vec![Send(slow_get()), Send(window_update(1, 0))],
            Either(code::PROTOCOL_ERROR),
        ),
        goaway(
            "a connection window beyond 2^31-1",
            "§6.9.1",
            window_update(0, 0x7fff_ffff),
            code::FLOW_CONTROL_ERROR,
        ),
        case(
            "a stream window beyond 2^31-1",
            "§6.9.1",
            vec![Send(slow_get()), Send(window_update(1, 0x7fff_ffff))],
            Reset(code::FLOW_CONTROL_ERROR),
        ),
        deviates(
            "SETTINGS_INITIAL_WINDOW_SIZE beyond 2^31-1",
            "§6.5.2",
            settings(&[(setting::INITIAL_WINDOW_SIZE, 0x8000_0000)]),
            Deviates {
                rfc: "GOAWAY FLOW_CONTROL_ERROR",
                h2: Some(code::PROTOCOL_ERROR),
            },
        ),
        goaway(
            "SETTINGS on a stream",
            "§6.5",
            frame(kind::SETTINGS, 0, 1, &[]),
            code::PROTOCOL_ERROR,
        ),
        goaway(
            "SETTINGS_ENABLE_PUSH of 2",
            "§6.5.2",
            settings(&[(setting::ENABLE_PUSH, 2)]),
            code::PROTOCOL_ERROR,
        ),
        goaway(
            "SETTINGS_MAX_FRAME_SIZE below 16,384",
            "§6.5.2",
            settings(&[(setting::MAX_FRAME_SIZE, 16_383)]),
            code::PROTOCOL_ERROR,
        ),
        goaway(
            "SETTINGS_MAX_FRAME_SIZE above 2^24-1",
            "§6.5.2",
            settings(&[(setting::MAX_FRAME_SIZE, 1 << 24)]),
            code::PROTOCOL_ERROR,
        ),
        case(
            "an unknown setting",
            "§6.5.2",
            vec![Send(settings(&[(0xfe, 7)]))],
            Ignored,
        ),
        goaway(
            "PRIORITY on stream 0",
            "§6.3",
            frame(kind::PRIORITY, 0, 0, &[0, 0, 0, 1, 16]),
            code::PROTOCOL_ERROR,
        ),
        goaway(
            "PING on a stream",
            "§6.7",
            frame(kind::PING, 0, 1, b"12345678"),
            code::PROTOCOL_ERROR,
        ),
        goaway(
            "PUSH_PROMISE from a client",
            "§8.4",
            frame(
                kind::PUSH_PROMISE,
                flag::END_HEADERS,
                1,
                &[0, 0, 0, 2, 0x82],
            ),
            code::PROTOCOL_ERROR,
        ),
        goaway(
            "CONTINUATION without HEADERS",
            "§6.10",
            frame(
                kind::CONTINUATION,
                flag::END_HEADERS,
                1,
                &request_block("GET", "/", &[]),
            ),
            code::PROTOCOL_ERROR,
        ),
        goaway(
            "another frame inside a header block",
            "§6.10",
            [
                headers(1, flag::END_STREAM, &request_block("GET", "/", &[])),
                ping(*b"between!"),
            ]
            .concat(),
            code::PROTOCOL_ERROR,
        ),
        goaway(
            "CONTINUATION of another stream's header block",
            "§6.10",
            [
                headers(1, flag::END_STREAM, &request_block("GET", "/", &[])),
                frame(kind::CONTINUATION, flag::END_HEADERS, 3, &[]),
            ]
            .concat(),
            code::PROTOCOL_ERROR,
        ),
        goaway(
            "HEADERS padding as long as the payload",
            "§6.2",
            frame(
                kind::HEADERS,
                flag::END_HEADERS | flag::END_STREAM | flag::PADDED,
                1,
                &padded_headers,
            ),
            code::PROTOCOL_ERROR,
        ),
        case(
            "DATA padding as long as the payload",
            "§6.1",
            vec![
                Send(open_post()),
                Send(frame(kind::DATA, flag::PADDED, 1, &[8, 1, 2, 3])),
            ],
            GoAway(code::PROTOCOL_ERROR),
        ),
        case(
            "a frame of an unknown type",
            "§4.1, §5.5",
            vec![Send(frame(0xfa, 0, 0, b"ignore me"))],
            Ignored,
        ),
        deviates(
            "a header block with HPACK index 0",
            "§4.3",
            headers(1, flag::END_HEADERS, &[0x80]),
            compression,
        ),
        deviates(
            "a header block naming an index beyond the tables",
            "§4.3",
            headers(1, flag::END_HEADERS, &[0x82, 0x86, 0xbe]),
            compression,
        ),
        deviates(
            "a dynamic table size update beyond SETTINGS_HEADER_TABLE_SIZE",
            "§4.3",
            headers(1, flag::END_HEADERS | flag::END_STREAM, &table_update),
            compression,
        ),
        case(
            "an uppercase field name",
            "§8.2.1",
            vec![Send(request_with(&[("X-Upper", "1")], false))],
            Malformed,
        ),
        case(
            "a connection-specific field",
            "§8.2.2",
            vec![Send(request_with(&[("connection", "keep-alive")], false))],
            Malformed,
        ),
        case(
            "TE other than trailers",
            "§8.2.2",
            vec![Send(request_with(&[("te", "gzip")], false))],
            Malformed,
        ),
        case(
            "a field value with a line feed",
            "§8.2.1",
            vec![Send(request_with(&[("x-split", "a\nb")], false))],
            Malformed,
        ),
        case(
            "no :path",
            "§8.3.1",
            vec![Send(headers(
                1,
                flag::END_HEADERS | flag::END_STREAM,
                &without_path,
            ))],
            Malformed,
        ),
        case(
            "an empty :path",
            "§8.3.1",
            vec![Send(headers(
                1,
                flag::END_HEADERS | flag::END_STREAM,
                &empty_path,
            ))],
            Malformed,
        ),
        case(
            "no :method",
            "§8.3.1",
            vec![Send(headers(
                1,
                flag::END_HEADERS | flag::END_STREAM,
                &without_method,
            ))],
            Malformed,
        ),
        case(
            ":method twice",
            "§8.3",
            vec![Send(headers(
                1,
                flag::END_HEADERS | flag::END_STREAM,
                &twice_method,
            ))],
            Malformed,
        ),
        case(
            "a pseudo-header after a regular field",
            "§8.3",
            vec![Send(headers(
                1,
                flag::END_HEADERS | flag::END_STREAM,
                &pseudo_after_regular,
            ))],
            Malformed,
        ),
        case(
            "an unknown pseudo-header",
            "§8.3",
            vec![Send(request_with(&[(":color", "blue")], false))],
            Malformed,
        ),
        case(
            "a response pseudo-header in a request",
            "§8.3",
            vec![Send(headers(
                1,
                flag::END_HEADERS | flag::END_STREAM,
                &with_status,
            ))],
            Malformed,
        ),
        case(
            "content-length above the DATA sent",
            "§8.1.1",
            vec![
                Send(headers(
                    1,
                    flag::END_HEADERS,
                    &request_block("POST", "/echo", &[("content-length", "10")]),
                )),
                Send(frame(kind::DATA, flag::END_STREAM, 1, b"abc")),
            ],
            Reset(code::PROTOCOL_ERROR),
        ),
        case(
            "DATA beyond content-length",
            "§8.1.1",
            vec![
                Send(headers(
                    1,
                    flag::END_HEADERS,
                    &request_block("POST", "/echo", &[("content-length", "2")]),
                )),
                Send(frame(kind::DATA, flag::END_STREAM, 1, b"abcdef")),
            ],
            Reset(code::PROTOCOL_ERROR),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_protocol_error_gets_the_answer_rfc_9113_asks_for() {
    let backend = Backend::start("b1");
    let proxy = Proxy::start(&pools_file(&[pool("web", &[], &[(&backend, 1)])]), &[]).await;
    let cases = cases();
    let mut failures = Vec::new();
    println!("{:<62} {:<10} {:<44} got", "case", "RFC 9113", "wanted");
    for case in &cases {
        let (outcome, reached, follow) = run(&proxy, &backend, case).await;
        let verdict = judge(case, &outcome, follow.as_ref(), reached);
        println!(
            "{:<62} {:<10} {:<44} {}{}",
            case.what,
            case.rfc,
            describe(case.want),
            outcome.summary(),
            match &verdict {
                Ok(()) => String::new(),
                Err(why) => format!("  <-- {why}"),
            }
        );
        if let Err(why) = verdict {
            failures.push(format!("{}: {why} ({})", case.what, outcome.summary()));
        }
    }
    let after = send(&h2c(), Method::GET, &proxy.url("/"), &[], "").await;
    assert!(
        after.is_ok_and(|r| r.status == 200),
        "the proxy stopped serving after the battery"
    );
    assert!(
        failures.is_empty(),
        "{} of {} cases got another answer than RFC 9113's:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn an_invalid_preface_gets_no_http2_session() {
    let backend = Backend::start("b1");
    let proxy = Proxy::start(&pools_file(&[pool("web", &[], &[(&backend, 1)])]), &[]).await;
    // RFC 9113 §3.4: a connection error, where GOAWAY may be left out since the peer is not
    // speaking HTTP/2. Weir reads it as an HTTP/1.1 request line it cannot take.
    let reply = raw(proxy.addr, b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n").await;
    println!(
        "a preface with XX for SM: {:?}",
        reply.text.lines().next().unwrap_or("(closed)")
    );
    assert!(
        reply.text.is_empty() || reply.status.is_some_and(|s| s >= 400),
        "{:?}",
        reply.text
    );
    assert_eq!(backend.requests().await, 0);
}

/// Runs `case` on a connection of its own: the outcome, the requests it got to the backend,
/// and the outcome of a GET sent after it where the connection is to go on.
async fn run(proxy: &Proxy, backend: &Backend, case: &Case) -> (Outcome, u64, Option<Outcome>) {
    let before = backend.requests().await;
    let H2 {
        mut reader,
        mut writer,
    } = if case.handshake {
        H2::open(proxy.addr, &[]).await
    } else {
        H2::connect(proxy.addr).await
    };
    let mut outcome = Outcome::default();
    for step in &case.steps {
        match step {
            Step::Send(bytes) => {
                if !writer.try_send(bytes, Duration::from_secs(2)).await {
                    break;
                }
            }
            Step::Answered(stream) => {
                reader
                    .read_until(&mut outcome, Duration::from_secs(3), |o| {
                        o.ended.contains(stream) || o.goaway.is_some()
                    })
                    .await
            }
        }
    }
    let stream = case.stream;
    // Anything forwarded would reach the backend within this.
    let reached = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        backend.requests().await - before
    };
    match case.want {
        Want::GoAway(_) | Want::Deviates { h2: Some(_), .. } => {
            reader
                .read_until(&mut outcome, Duration::from_secs(3), |_| false)
                .await;
            (outcome, reached.await, None)
        }
        Want::Ignored | Want::Deviates { h2: None, .. } => {
            // Give the proxy a moment to object, if it would.
            reader
                .read_until(&mut outcome, Duration::from_millis(300), |o| {
                    o.goaway.is_some() || !o.resets.is_empty()
                })
                .await;
            let reached = reached.await;
            let follow = follow_up(&mut reader, &mut writer, 101).await;
            (outcome, reached, Some(follow))
        }
        Want::Reset(_) | Want::Either(_) | Want::Malformed => {
            reader
                .read_until(&mut outcome, Duration::from_secs(3), |o| {
                    o.reset_of(stream).is_some() || o.goaway.is_some()
                })
                .await;
            if outcome.goaway.is_some() || outcome.closed {
                reader
                    .read_until(&mut outcome, Duration::from_secs(3), |_| false)
                    .await;
                return (outcome, reached.await, None);
            }
            let reached = reached.await;
            let follow = follow_up(&mut reader, &mut writer, 101).await;
            (outcome, reached, Some(follow))
        }
    }
}

/// A GET on `stream` and its outcome.
async fn follow_up(
    reader: &mut crate::h2_wire::FrameReader,
    writer: &mut FrameWriter,
    stream: u32,
) -> Outcome {
    let mut follow = Outcome::default();
    if writer
        .try_send(&get(stream, "/"), Duration::from_secs(2))
        .await
    {
        reader
            .read_until(&mut follow, Duration::from_secs(3), |o| {
                o.ended.contains(&stream) || o.goaway.is_some()
            })
            .await;
    }
    follow
}

fn judge(
    case: &Case,
    outcome: &Outcome,
    follow: Option<&Outcome>,
    reached: u64,
) -> Result<(), String> {
    let served_after = || match follow {
        Some(f) if f.status_of(101) == Some(200) && f.goaway.is_none() => Ok(()),
        Some(f) => Err(format!(
            "the connection did not go on: a GET after got {}",
            f.summary()
        )),
        None => Err("the connection did not go on".to_owned()),
    };
    let reset = outcome.reset_of(case.stream);
    match case.want {
        Want::GoAway(want) => match outcome.goaway_code() {
            Some(got) if got == want && outcome.closed => Ok(()),
            Some(got) if got == want => Err("GOAWAY, but the connection stayed open".to_owned()),
            Some(got) => Err(format!("GOAWAY {}", code_name(got))),
            None => Err("no GOAWAY".to_owned()),
        },
        Want::Reset(want) => match (reset, outcome.goaway_code()) {
            (Some(got), None) if got == want => served_after(),
            (_, Some(got)) => Err(format!("a connection error (GOAWAY {})", code_name(got))),
            (Some(got), None) => Err(format!("RST_STREAM {}", code_name(got))),
            (None, None) => Err("no RST_STREAM".to_owned()),
        },
        Want::Either(want) => match (reset, outcome.goaway_code()) {
            (_, Some(got)) if got == want => Ok(()),
            (Some(got), None) if got == want => served_after(),
            (_, Some(got)) => Err(format!("GOAWAY {}", code_name(got))),
            (Some(got), None) => Err(format!("RST_STREAM {}", code_name(got))),
            (None, None) => Err("neither RST_STREAM nor GOAWAY".to_owned()),
        },
        Want::Malformed => {
            if reached > 0 {
                return Err(format!("{reached} request(s) reached the backend"));
            }
            match (reset, outcome.status_of(case.stream), outcome.goaway_code()) {
                // A stream error may always be made a connection error (§5.4.1).
                (_, _, Some(code::PROTOCOL_ERROR)) if outcome.closed => Ok(()),
                (_, _, Some(got)) => Err(format!("GOAWAY {}", code_name(got))),
                (Some(code::PROTOCOL_ERROR), status, None)
                    if status.is_none_or(|s| (400..500).contains(&s)) =>
                {
                    served_after()
                }
                (_, Some(status), None) if (400..500).contains(&status) => served_after(),
                (Some(got), _, None) => Err(format!("RST_STREAM {}", code_name(got))),
                (None, status, None) => Err(format!("answered {status:?} without a reset")),
            }
        }
        Want::Ignored => match (outcome.goaway_code(), outcome.resets.first()) {
            (None, None) => served_after(),
            (Some(got), _) => Err(format!("GOAWAY {}", code_name(got))),
            (None, Some((s, c))) => Err(format!("RST_STREAM {} on {s}", code_name(*c))),
        },
        Want::Deviates { rfc, h2 } => {
            let now_conforms =
                || format!("h2 now answers as RFC 9113 asks ({rfc}): make it a plain case");
            match (h2, outcome.goaway_code()) {
                (Some(want), Some(got)) if got == want && outcome.closed => Ok(()),
                (None, None) if outcome.resets.is_empty() => served_after(),
                (_, Some(got)) if rfc.ends_with(&code_name(got)) => Err(now_conforms()),
                (_, Some(got)) => Err(format!("GOAWAY {}", code_name(got))),
                (_, None) => Err(format!("no GOAWAY ({rfc} asked)")),
            }
        }
    }
}

fn describe(want: Want) -> String {
    match want {
        Want::GoAway(c) => format!("GOAWAY {}", code_name(c)),
        Want::Reset(c) => format!("RST_STREAM {}", code_name(c)),
        Want::Either(c) => format!("RST or GOAWAY {}", code_name(c)),
        Want::Malformed => "RST PROTOCOL_ERROR or 4xx".to_owned(),
        Want::Ignored => "ignored".to_owned(),
        Want::Deviates { rfc, h2 } => format!(
            "{rfc}; h2: {}",
            h2.map_or("goes on".to_owned(), |c| format!("GOAWAY {}", code_name(c)))
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// The test bed

/// A proxy with two pools: the attacked one, and the bystanders' on `/bystander`, each with
/// its own backend so the attack's requests are counted apart.
struct Bed {
    target: Backend,
    _bystanders: Backend,
    proxy: Proxy,
}

impl Bed {
    async fn start(args: &[&str]) -> Self {
        let target = Backend::start("attacked");
        let bystanders = Backend::start("bystanders");
        let yaml = pools_file(&[
            pool("attacked", &[], &[(&target, 1)]),
            pool(
                "bystanders",
                &["routes: [{ host: \"*\", pathPrefix: /bystander }]"],
                &[(&bystanders, 1)],
            ),
        ]);
        let proxy = Proxy::start(&yaml, args).await;
        Self {
            target,
            _bystanders: bystanders,
            proxy,
        }
    }

    /// Starts a well-behaved h2c client and a memory sampler, both until [`Watch::finish`].
    fn watch(&self) -> Watch {
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicU64::new(0));
        let url = self.proxy.url("/bystander/page");
        let bystander = tokio::spawn({
            let (stop, served) = (stop.clone(), served.clone());
            async move {
                let client = h2c();
                let mut seen = Seen::default();
                while !stop.load(Ordering::Relaxed) {
                    let result = send(&client, Method::GET, &url, &[], "").await;
                    seen.requests += 1;
                    served.fetch_add(1, Ordering::Relaxed);
                    match result {
                        Ok(reply) if reply.status == 200 => {
                            seen.worst = seen.worst.max(reply.elapsed)
                        }
                        Ok(reply) => seen
                            .failures
                            .push(format!("{} after {:?}", reply.status, reply.elapsed)),
                        Err(e) => seen.failures.push(e),
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                seen
            }
        });
        let metrics = self.proxy.admin_url("/metrics");
        let sampler = tokio::spawn({
            let stop = stop.clone();
            async move {
                let mut samples = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    if let Some(rss) = rss(&metrics).await {
                        samples.push(rss);
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                samples
            }
        });
        Watch {
            stop,
            served,
            bystander,
            sampler,
            started: Instant::now(),
        }
    }

    /// `weir_downstream_closed_connections{reason="…"}`.
    async fn closed(&self, reason: &str) -> f64 {
        let sample = format!("weir_downstream_closed_connections_total{{reason=\"{reason}\"}}");
        self.proxy.metric(&sample).await.unwrap_or(0.0)
    }
}

/// The proxy's resident memory, from its `/metrics`.
async fn rss(metrics_url: &str) -> Option<u64> {
    let reply = send(&crate::support::http1(), Method::GET, metrics_url, &[], "")
        .await
        .ok()?;
    reply.body.lines().find_map(|line| {
        let value = line.strip_prefix("weir_process_resident_memory_bytes ")?;
        value.trim().parse::<f64>().ok().map(|v| v as u64)
    })
}

/// A bystander and a memory sampler running beside an attack.
struct Watch {
    stop: Arc<AtomicBool>,
    served: Arc<AtomicU64>,
    bystander: tokio::task::JoinHandle<Seen>,
    sampler: tokio::task::JoinHandle<Vec<u64>>,
    started: Instant,
}

impl Watch {
    /// Stops both, once the bystander has sent [`BYSTANDER_REQUESTS`] (or 10 s have passed):
    /// an attack over in a moment still gets a bystander beside it and just after.
    async fn finish(self) -> Seen {
        let bound = Instant::now() + Duration::from_secs(10);
        while self.served.load(Ordering::Relaxed) < BYSTANDER_REQUESTS && Instant::now() < bound {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.stop.store(true, Ordering::Relaxed);
        let mut seen = self.bystander.await.expect("the bystander");
        let samples = self.sampler.await.expect("the sampler");
        seen.rss_first = samples.first().copied().unwrap_or(0);
        seen.rss_peak = samples.iter().copied().max().unwrap_or(0);
        seen.samples = samples.len();
        seen.lasted = self.started.elapsed();
        seen
    }
}

/// What the bystander saw, and the proxy's memory meanwhile.
#[derive(Debug, Default)]
struct Seen {
    requests: u64,
    failures: Vec<String>,
    worst: Duration,
    rss_first: u64,
    rss_peak: u64,
    samples: usize,
    lasted: Duration,
}

impl Seen {
    fn assert_unharmed(&self) {
        assert!(
            self.requests >= BYSTANDER_REQUESTS,
            "the bystander got only {} requests through",
            self.requests
        );
        assert!(
            self.failures.is_empty(),
            "the bystander's requests failed: {:?}",
            self.failures
        );
        assert!(
            self.worst < BYSTANDER_BOUND,
            "a bystander's request took {:?}",
            self.worst
        );
        assert!(self.samples > 0, "no memory sample");
        assert!(
            self.rss_peak.saturating_sub(self.rss_first) < RSS_GROWTH_BOUND,
            "the proxy's memory grew from {} to {} MiB",
            self.rss_first >> 20,
            self.rss_peak >> 20
        );
    }
}

impl std::fmt::Display for Seen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "bystander: {} requests in {:.1} s, {} failed, slowest {:.1} ms; proxy RSS {:.1} → \
             peak {:.1} MiB",
            self.requests,
            self.lasted.as_secs_f64(),
            self.failures.len(),
            self.worst.as_secs_f64() * 1e3,
            self.rss_first as f64 / f64::from(1 << 20),
            self.rss_peak as f64 / f64::from(1 << 20),
        )
    }
}

/// Writes `bytes` on a task of its own, for up to 10 s, and gives how many were taken.
fn spawn_write(mut writer: FrameWriter, bytes: Vec<u8>) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let mut taken = 0;
        for chunk in bytes.chunks(64 * 1024) {
            if !writer.try_send(chunk, Duration::from_secs(10)).await {
                break;
            }
            taken += chunk.len();
        }
        taken
    })
}
