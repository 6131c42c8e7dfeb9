//! Connection limits: the cap on open client connections, the idle timeout of keep-alive
//! connections and the header read timeout. Each cuts only the connection it is about, while
//! other clients are served.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::h2_wire::{H2, Outcome, code, code_name, flag, get, headers, request_block};
use crate::support::{Backend, Proxy, pool, pools_file};

async fn start(args: &[&str]) -> (Backend, Proxy) {
    let backend = Backend::start("b1");
    let proxy = Proxy::start(&pools_file(&[pool("web", &[], &[(&backend, 1)])]), args).await;
    (backend, proxy)
}

#[tokio::test]
async fn a_client_beyond_the_connection_cap_is_reset_at_once_while_those_under_it_are_served() {
    let (_backend, proxy) = start(&["--max-connections", "3"]).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut conn = Keep::connect(&proxy).await;
        assert_eq!(conn.get("/").await, Ok(200));
        held.push(conn);
    }
    // The kernel completes the handshake; the proxy resets the connection at once, which on
    // loopback may be before `connect` has returned.
    let sent = Instant::now();
    let refused = match TcpStream::connect(proxy.addr).await {
        Ok(stream) => Keep::new(stream).get("/").await,
        Err(e) => Err(format!("connecting: {e}")),
    };
    let took = sent.elapsed();
    println!("a fourth connection with --max-connections 3: {refused:?} after {took:?}");
    let Err(why) = refused else {
        panic!("the connection over the cap was served")
    };
    assert!(
        took < Duration::from_secs(2),
        "refused only after {took:?}: {why}"
    );
    assert_eq!(
        proxy
            .metric("weir_downstream_refused_connections_total")
            .await,
        Some(1.0)
    );
    for conn in &mut held {
        assert_eq!(
            conn.get("/").await,
            Ok(200),
            "a connection under the cap was hurt"
        );
    }
    // A closed connection gives its place back.
    drop(held.pop());
    let freed = Instant::now();
    while proxy.metric("weir_downstream_active_connections").await != Some(2.0) {
        assert!(
            freed.elapsed() < Duration::from_secs(5),
            "the closed connection's place was not given back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut again = Keep::connect(&proxy).await;
    assert_eq!(again.get("/").await, Ok(200));
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout_while_a_busy_one_is_not() {
    // The idle timeout is the longer of the two: a connection waiting for its next request
    // is not under the header read timeout.
    let (_backend, proxy) = start(&["--idle-timeout", "2s", "--header-read-timeout", "1s"]).await;
    let idle = async {
        let mut conn = Keep::connect(&proxy).await;
        assert_eq!(conn.get("/").await, Ok(200));
        conn.closed_within(Duration::from_secs(6)).await
    };
    let busy = async {
        let mut conn = Keep::connect(&proxy).await;
        let mut statuses = Vec::new();
        for _ in 0..8 {
            statuses.push(conn.get("/").await);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        statuses
    };
    let long = async {
        let mut conn = Keep::connect(&proxy).await;
        conn.get("/delay/3000").await
    };
    let http2 = async {
        let H2 {
            mut reader,
            mut writer,
        } = H2::open(proxy.addr, &[]).await;
        writer.send(&get(1, "/")).await;
        let mut outcome = Outcome::default();
        reader
            .read_until(&mut outcome, Duration::from_secs(3), |o| {
                o.ended.contains(&1)
            })
            .await;
        let answered = Instant::now();
        reader
            .read_until(&mut outcome, Duration::from_secs(6), |_| false)
            .await;
        (outcome, answered.elapsed())
    };
    let (idle, busy, long, (http2, http2_after)) = tokio::join!(idle, busy, long, http2);
    println!(
        "--idle-timeout 2s: an idle HTTP/1.1 connection closed {idle:?} after its response; \
         one busy every 500 ms got {busy:?}; a 3 s request got {long:?}; an idle HTTP/2 \
         connection: {} after {http2_after:?}",
        http2.summary()
    );
    let idle = idle.expect("the idle connection was never closed");
    assert!(
        idle >= Duration::from_millis(1800) && idle < Duration::from_secs(4),
        "the idle HTTP/1.1 connection closed after {idle:?}, not about 2 s"
    );
    assert!(
        busy.iter().all(|s| *s == Ok(200)),
        "the busy connection: {busy:?}"
    );
    assert_eq!(long, Ok(200), "a request in flight past the idle timeout");
    assert_eq!(http2.status_of(1), Some(200));
    assert_eq!(
        http2.goaway_code(),
        Some(code::NO_ERROR),
        "{}",
        http2.summary()
    );
    assert!(http2.closed && http2_after < Duration::from_secs(5));
    assert_eq!(
        proxy
            .metric("weir_downstream_closed_connections_total{reason=\"idle_timeout\"}")
            .await,
        Some(2.0)
    );
}

#[tokio::test]
async fn a_slow_header_client_is_cut_after_the_header_read_timeout_while_another_is_served() {
    let (_backend, proxy) = start(&["--header-read-timeout", "1s", "--idle-timeout", "3s"]).await;
    let head =
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    // A byte every 200 ms: on a new connection, and on a kept-alive one after a request.
    let first = async {
        let mut conn = Keep::connect(&proxy).await;
        conn.trickle(head).await
    };
    let next = async {
        let mut conn = Keep::connect(&proxy).await;
        assert_eq!(conn.get("/").await, Ok(200));
        conn.trickle(head).await
    };
    // HTTP/2 has no header timeout of its own in hyper: a header block left unfinished keeps
    // the connection idle, and the idle timeout closes it.
    let http2 = async {
        let H2 {
            mut reader,
            mut writer,
        } = H2::open(proxy.addr, &[]).await;
        let started = Instant::now();
        writer
            .send(&headers(
                1,
                flag::END_STREAM,
                &request_block("GET", "/", &[]),
            ))
            .await;
        let outcome = reader.outcome(Duration::from_secs(8)).await;
        (outcome, started.elapsed())
    };
    let other = async {
        let mut conn = Keep::connect(&proxy).await;
        let mut worst = Duration::ZERO;
        let mut statuses = Vec::new();
        let until = Instant::now() + Duration::from_secs(3);
        while Instant::now() < until {
            let sent = Instant::now();
            statuses.push(conn.get("/").await);
            worst = worst.max(sent.elapsed());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        (statuses, worst)
    };
    let (first, next, (http2, http2_after), (statuses, worst)) =
        tokio::join!(first, next, http2, other);
    println!(
        "--header-read-timeout 1s: a head trickled from the start was cut after {first:?}, one \
         after a kept-alive request after {next:?}; an unfinished HTTP/2 header block: {} after \
         {http2_after:?}; meanwhile another client got {} answers, slowest {worst:?}",
        http2.summary(),
        statuses.len()
    );
    for (what, cut) in [("first", first), ("next", next)] {
        let cut = cut.unwrap_or_else(|| panic!("the {what} slow head was never cut"));
        assert!(
            cut >= Duration::from_millis(900) && cut < Duration::from_millis(2500),
            "the {what} slow head was cut after {cut:?}, not about 1 s"
        );
    }
    assert!(
        http2.closed && http2.goaway.is_some(),
        "HTTP/2: {}",
        http2.summary()
    );
    assert!(
        http2_after >= Duration::from_millis(2800) && http2_after < Duration::from_secs(6),
        "the unfinished HTTP/2 header block was cut after {http2_after:?}, not about 3 s \
         ({})",
        http2.goaway_code().map_or("no GOAWAY".into(), code_name)
    );
    assert!(
        statuses.len() >= 10 && statuses.iter().all(|s| *s == Ok(200)),
        "{statuses:?}"
    );
    assert!(worst < Duration::from_secs(2), "slowest answer {worst:?}");
    assert_eq!(
        proxy
            .metric("weir_downstream_closed_connections_total{reason=\"header_timeout\"}")
            .await,
        Some(2.0)
    );
}

/// A kept-alive HTTP/1.1 connection written by hand, so the test decides when it is idle.
struct Keep {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Keep {
    async fn connect(proxy: &Proxy) -> Self {
        let stream = TcpStream::connect(proxy.addr)
            .await
            .expect("connecting to the proxy");
        Self::new(stream)
    }

    fn new(stream: TcpStream) -> Self {
        let _ = stream.set_nodelay(true);
        Self {
            stream,
            buf: Vec::new(),
        }
    }

    /// GETs `path` and reads the whole response, within 10 s: its status, or how the
    /// connection failed.
    async fn get(&mut self, path: &str) -> Result<u16, String> {
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
        self.stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("writing: {e}"))?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .ok_or_else(|| format!("no content-length in {head:?}"))?;
                if self.buf.len() >= end + 4 + length {
                    let status = head
                        .get(9..12)
                        .and_then(|s| s.parse().ok())
                        .ok_or_else(|| format!("no status in {head:?}"))?;
                    self.buf.drain(..end + 4 + length);
                    return Ok(status);
                }
            }
            let mut chunk = [0u8; 16 * 1024];
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Err(_) => return Err("no answer within 10 s".to_owned()),
                Ok(Ok(0)) => return Err("closed by the proxy".to_owned()),
                Ok(Err(e)) => return Err(format!("reading: {e}")),
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// How long until the proxy closes the connection, up to `bound`.
    async fn closed_within(&mut self, bound: Duration) -> Option<Duration> {
        let started = Instant::now();
        let mut chunk = [0u8; 1024];
        loop {
            match tokio::time::timeout(
                bound.saturating_sub(started.elapsed()),
                self.stream.read(&mut chunk),
            )
            .await
            {
                Err(_) => return None,
                Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
                Ok(Ok(_)) => {}
            }
        }
    }

    /// Writes `bytes` one every 200 ms; how long after the first the proxy cut the connection,
    /// or `None` when it never did.
    async fn trickle(&mut self, bytes: &[u8]) -> Option<Duration> {
        let started = Instant::now();
        for byte in bytes {
            if self.stream.write_all(&[*byte]).await.is_err() {
                return Some(started.elapsed());
            }
            if self
                .closed_within(Duration::from_millis(200))
                .await
                .is_some()
            {
                return Some(started.elapsed());
            }
        }
        None
    }
}
