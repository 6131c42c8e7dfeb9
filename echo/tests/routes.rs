//! Runs the real `weir-echo` binary and checks every route over HTTP/1.1, h2c and WebSocket.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;

struct Echo {
    child: Child,
    addr: SocketAddr,
}

async fn start(extra: &[&str]) -> Echo {
    let mut child = Command::new(env!("CARGO_BIN_EXE_weir-echo"))
        .args(["--listen", "127.0.0.1:0"])
        .args(extra)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn weir-echo");
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    tokio::time::timeout(
        Duration::from_secs(10),
        BufReader::new(stdout).read_line(&mut line),
    )
    .await
    .expect("weir-echo announces itself in time")
    .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .parse()
        .unwrap();
    Echo { child, addr }
}

async fn send(addr: SocketAddr, version: Version, req: Request<Full<Bytes>>) -> Response<Incoming> {
    let io = TokioIo::new(TcpStream::connect(addr).await.unwrap());
    if version == Version::HTTP_2 {
        let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .unwrap();
        tokio::spawn(conn);
        sender.send_request(req).await.unwrap()
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(conn);
        sender.send_request(req).await.unwrap()
    }
}

fn request(version: Version, addr: SocketAddr, path: &str) -> hyper::http::request::Builder {
    let builder = Request::builder().version(version);
    if version == Version::HTTP_2 {
        builder.uri(format!("http://{addr}{path}"))
    } else {
        builder.uri(path).header("host", addr.to_string())
    }
}

async fn get(addr: SocketAddr, version: Version, path: &str) -> (StatusCode, String, Bytes) {
    let req = request(version, addr, path)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = send(addr, version, req).await;
    let backend = resp
        .headers()
        .get("x-backend")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, backend, body)
}

async fn stats(addr: SocketAddr) -> serde_json::Value {
    let (_, _, body) = get(addr, Version::HTTP_11, "/_stats").await;
    serde_json::from_slice(&body).unwrap()
}

#[tokio::test]
async fn default_route_names_the_backend_on_both_protocols() {
    let echo = start(&["--name", "b1"]).await;
    for version in [Version::HTTP_11, Version::HTTP_2] {
        let (status, backend, body) = get(echo.addr, version, "/anything/at/all?x=1").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(backend, "b1");
        assert_eq!(&body[..], b"b1\n");
    }
}

#[tokio::test]
async fn name_defaults_to_the_listen_address() {
    let echo = start(&[]).await;
    let (_, backend, body) = get(echo.addr, Version::HTTP_11, "/").await;
    assert_eq!(backend, echo.addr.to_string());
    assert_eq!(body, format!("{}\n", echo.addr));
}

#[tokio::test]
async fn health_follows_the_unhealthy_file_and_stats_count_separately() {
    let dir = std::env::temp_dir().join(format!("weir-echo-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let flag = dir.join("unhealthy");
    let _ = std::fs::remove_file(&flag);
    let echo = start(&["--name", "h", "--unhealthy-file", flag.to_str().unwrap()]).await;

    let (status, _, body) = get(echo.addr, Version::HTTP_11, "/health").await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"ok\n"[..]));
    std::fs::write(&flag, b"").unwrap();
    let (status, _, _) = get(echo.addr, Version::HTTP_11, "/health").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    std::fs::remove_file(&flag).unwrap();
    let (status, _, _) = get(echo.addr, Version::HTTP_2, "/health").await;
    assert_eq!(status, StatusCode::OK);

    get(echo.addr, Version::HTTP_11, "/").await;
    get(echo.addr, Version::HTTP_2, "/status/500").await;
    let stats = stats(echo.addr).await;
    assert_eq!(
        stats,
        serde_json::json!({"backend": "h", "requests": 2, "health_checks": 3})
    );
    let _ = std::fs::remove_dir_all(Path::new(&dir));
}

#[tokio::test]
async fn headers_lists_what_was_received() {
    let echo = start(&["--name", "hd"]).await;
    let req = request(Version::HTTP_11, echo.addr, "/headers?q=1")
        .method("POST")
        .header("x-one", "1")
        .header("x-two", "2")
        .header("x-one", "again")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = send(echo.addr, Version::HTTP_11, req).await;
    assert_eq!(resp.headers()["content-type"], "application/json");
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let report: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(report["backend"], "hd");
    assert_eq!(report["method"], "POST");
    assert_eq!(report["uri"], "/headers?q=1");
    assert_eq!(report["version"], "HTTP/1.1");
    let headers = report["headers"].as_array().unwrap();
    let of = |name: &str| -> Vec<&str> {
        headers
            .iter()
            .filter(|pair| pair[0] == name)
            .map(|pair| pair[1].as_str().unwrap())
            .collect()
    };
    assert_eq!(of("x-one"), ["1", "again"]);
    assert_eq!(of("x-two"), ["2"]);
    assert_eq!(of("host"), [echo.addr.to_string()]);

    let (_, _, body) = get(echo.addr, Version::HTTP_2, "/headers").await;
    let report: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(report["version"], "HTTP/2.0");
}

#[tokio::test]
async fn echo_returns_the_request_body() {
    let echo = start(&["--name", "e"]).await;
    let payload: Bytes = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    for version in [Version::HTTP_11, Version::HTTP_2] {
        let req = request(version, echo.addr, "/echo")
            .method("PUT")
            .body(Full::new(payload.clone()))
            .unwrap();
        let resp = send(echo.addr, version, req).await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["x-backend"], "e");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body.len(), payload.len());
        assert!(body == payload, "{version:?} body differs");
    }
}

#[tokio::test]
async fn collect_answers_with_the_body_once_all_of_it_is_in() {
    let echo = start(&["--name", "c"]).await;
    let payload: Bytes = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let req = request(Version::HTTP_11, echo.addr, "/collect")
        .method("POST")
        .body(Full::new(payload.clone()))
        .unwrap();
    let resp = send(echo.addr, Version::HTTP_11, req).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["x-backend"], "c");
    assert_eq!(
        resp.headers()["content-length"],
        payload.len().to_string().as_str(),
        "the length is known: the whole body was read first"
    );
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(body == payload, "the body differs");
}

#[tokio::test]
async fn status_and_delay_routes() {
    let echo = start(&["--name", "s"]).await;
    let (status, _, body) = get(echo.addr, Version::HTTP_11, "/status/503").await;
    assert_eq!(
        (status, &body[..]),
        (StatusCode::SERVICE_UNAVAILABLE, &b"s\n"[..])
    );
    let (status, _, body) = get(echo.addr, Version::HTTP_11, "/status/204").await;
    assert_eq!((status, body.len()), (StatusCode::NO_CONTENT, 0));
    let (status, _, _) = get(echo.addr, Version::HTTP_11, "/status/nope").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let started = Instant::now();
    let (status, _, body) = get(echo.addr, Version::HTTP_2, "/delay/200").await;
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"s\n"[..]));
}

#[tokio::test]
async fn slow_body_sends_the_head_first() {
    let echo = start(&["--name", "sl"]).await;
    let started = Instant::now();
    let req = request(Version::HTTP_11, echo.addr, "/slow-body/150")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = send(echo.addr, Version::HTTP_11, req).await;
    let head_after = started.elapsed();
    assert!(
        head_after < Duration::from_millis(140),
        "head took {head_after:?}"
    );
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(started.elapsed() >= Duration::from_millis(450));
    assert_eq!(&body[..], b"sl\nsl\nsl\n");
}

#[tokio::test]
async fn websocket_echoes_messages() {
    let echo = start(&["--name", "ws"]).await;
    let (mut ws, resp) = tokio_tungstenite::connect_async(format!("ws://{}/ws", echo.addr))
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-backend"], "ws");
    ws.send(Message::text("hello")).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::text("ws: hello")
    );
    ws.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::binary(vec![1u8, 2, 3])
    );
    ws.close(None).await.unwrap();

    let (status, _, _) = get(echo.addr, Version::HTTP_11, "/ws").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn sigterm_exits_cleanly() {
    let mut echo = start(&[]).await;
    let pid = echo.child.id().unwrap();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(5), echo.child.wait())
        .await
        .expect("exits after SIGTERM")
        .unwrap();
    assert!(status.success(), "{status:?}");
}
