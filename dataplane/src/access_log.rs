//! The access log: one structured line per request, written off the request path.
//!
//! A request fills an [`Entry`] as it goes; the entry is sent when the request ends (the
//! response body's end, the proxy's own answer, or the client leaving) to a bounded queue that
//! a writer task drains into stdout or a file. The request path never waits for the writer:
//! when the queue is full the line is dropped and counted (`weir_access_log_dropped_total`),
//! since a proxy that slows down because its log disk is slow fails everyone to inform no one.
//!
//! Sampling is per pool (`accessLog.samplePercent`); requests that failed (a 5xx, or an answer
//! the proxy gave itself) are always logged.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use http::{HeaderValue, Method, Uri};
use tokio::io::AsyncWriteExt as _;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Lines waiting for the writer; beyond this many, lines are dropped.
pub const QUEUE: usize = 16 * 1024;

/// Where the access log goes: `--access-log off|stdout|PATH`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sink {
    /// No access log.
    Off,
    /// The process's stdout (the container's log).
    Stdout,
    /// A file, appended to (created when missing).
    File(PathBuf),
}

/// How a line is written: `--access-log-format json|text`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One JSON object per line.
    #[default]
    Json,
    /// A short line for people: `time client "METHOD host path" status bytes duration ...`.
    Text,
}

/// The access log's queue and counters, shared by every request.
#[derive(Debug)]
pub struct AccessLog {
    tx: mpsc::Sender<Entry>,
    /// Lines written.
    pub written: Arc<AtomicU64>,
    /// Lines dropped because the queue was full.
    pub dropped: AtomicU64,
}

/// Everything one line says about one request.
#[derive(Debug)]
pub struct Entry {
    /// When the request arrived.
    pub time: SystemTime,
    /// Its `X-Request-ID`.
    pub request_id: HeaderValue,
    /// The W3C `traceparent` it was forwarded with, which holds the trace id.
    pub traceparent: Option<HeaderValue>,
    /// The client's address.
    pub client: SocketAddr,
    /// The request's method.
    pub method: Method,
    /// The host it was for.
    pub host: Option<HeaderValue>,
    /// Its target as sent: path and query.
    pub uri: Uri,
    /// The status answered (499: the client left first).
    pub status: u16,
    /// The pool that took it.
    pub pool: Option<String>,
    /// The target of the last try.
    pub target: Option<SocketAddr>,
    /// Tries made.
    pub attempts: u32,
    /// Request body bytes read from the client.
    pub bytes_in: u64,
    /// Response body bytes sent to the client.
    pub bytes_out: u64,
    /// From arrival to the end of the response.
    pub duration: Duration,
    /// From sending the last try to its response head.
    pub upstream: Option<Duration>,
    /// Why the proxy answered itself (`x-weir-error`), or `response-incomplete` when the
    /// response body did not reach its end.
    pub error: Option<&'static str>,
}

/// A request's entry until the request ends; sent to the log when dropped, so a request whose
/// client leaves while a target is still thinking is logged too (as 499).
#[derive(Debug)]
pub struct Pending {
    log: Arc<AccessLog>,
    started: Instant,
    entry: Option<Entry>,
    streaming: bool,
}

/// Why the access log could not start.
#[derive(Debug, thiserror::Error)]
pub enum AccessLogError {
    /// The file cannot be opened for appending.
    #[error("cannot open the access log {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
}

impl FromStr for Sink {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "" => Err("an empty --access-log: say off, stdout or a file path".to_owned()),
            "off" => Ok(Self::Off),
            "stdout" | "-" => Ok(Self::Stdout),
            path => Ok(Self::File(PathBuf::from(path))),
        }
    }
}

impl AccessLog {
    /// Opens `sink` and starts its writer task on the current runtime; `None` for
    /// [`Sink::Off`]. The file is opened here, so a path that cannot be written stops the
    /// data plane at startup instead of losing every line.
    pub async fn start(sink: &Sink, format: Format) -> Result<Option<Arc<Self>>, AccessLogError> {
        let out: Box<dyn tokio::io::AsyncWrite + Send + Unpin> = match sink {
            Sink::Off => return Ok(None),
            Sink::Stdout => Box::new(tokio::io::stdout()),
            Sink::File(path) => Box::new(
                tokio::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .await
                    .map_err(|source| AccessLogError::Open {
                        path: path.clone(),
                        source,
                    })?,
            ),
        };
        let (tx, rx) = mpsc::channel(QUEUE);
        let written = Arc::new(AtomicU64::new(0));
        tokio::spawn(write_lines(rx, out, format, written.clone()));
        Ok(Some(Arc::new(Self {
            tx,
            written,
            dropped: AtomicU64::new(0),
        })))
    }

    /// Queues `entry`, or drops and counts it when the writer is behind.
    pub fn record(&self, entry: Entry) {
        if self.tx.try_send(entry).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Pending {
    /// A request that arrived at `started` (`entry.time` its wall-clock time); until told
    /// otherwise it is a request whose client left (499).
    pub fn new(log: Arc<AccessLog>, started: Instant, entry: Entry) -> Self {
        Self {
            log,
            started,
            entry: Some(entry),
            streaming: false,
        }
    }

    /// The response head is on its way and its body follows: the request ends with the body,
    /// and a body dropped before its end (the client left mid-response) is logged as such.
    pub fn streaming(mut self) -> Box<Self> {
        self.streaming = true;
        Box::new(self)
    }

    /// The entry, to fill in as the request goes.
    pub fn entry(&mut self) -> &mut Entry {
        self.entry.as_mut().expect("an entry until sent")
    }

    /// Forgets the request: it was not sampled and did not fail.
    pub fn discard(mut self) {
        self.entry = None;
    }

    /// Counts response body bytes sent to the client.
    pub fn sent(&mut self, bytes: u64) {
        if let Some(e) = &mut self.entry {
            e.bytes_out += bytes;
        }
    }

    /// The response ended; `complete` unless its body broke off.
    pub fn finish(mut self, complete: bool) {
        self.streaming = !complete;
        drop(self);
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(mut entry) = self.entry.take() {
            if self.streaming {
                entry.error.get_or_insert("response-incomplete");
            }
            entry.duration = self.started.elapsed();
            self.log.record(entry);
        }
    }
}

/// The writer task: formats lines into a buffer and writes it whenever the queue is empty, so
/// a busy proxy makes one write for many lines and an idle one writes each line at once.
async fn write_lines(
    mut rx: mpsc::Receiver<Entry>,
    mut out: Box<dyn tokio::io::AsyncWrite + Send + Unpin>,
    format: Format,
    written: Arc<AtomicU64>,
) {
    let mut buf = String::with_capacity(64 * 1024);
    while let Some(entry) = rx.recv().await {
        let mut lines = 1;
        format_line(&mut buf, &entry, format);
        while buf.len() < 60 * 1024 {
            match rx.try_recv() {
                Ok(entry) => {
                    format_line(&mut buf, &entry, format);
                    lines += 1;
                }
                Err(_) => break,
            }
        }
        let wrote = out.write_all(buf.as_bytes()).await;
        let flushed = out.flush().await;
        if let Err(e) = wrote.and(flushed) {
            tracing::warn!(error = %e, lines, "cannot write the access log; lines lost");
        } else {
            written.fetch_add(lines, Ordering::Relaxed);
        }
        buf.clear();
    }
}

/// Appends one line for `e` to `buf`.
pub fn format_line(buf: &mut String, e: &Entry, format: Format) {
    let time = humantime::format_rfc3339_millis(e.time);
    let path = e.uri.path_and_query().map_or("/", |p| p.as_str());
    // `00-<trace id>-<span id>-<flags>`, validated or written by the proxy itself.
    let trace_id = e
        .traceparent
        .as_ref()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.get(3..35));
    match format {
        Format::Json => {
            let line = serde_json::json!({
                "time": time.to_string(),
                "request_id": String::from_utf8_lossy(e.request_id.as_bytes()),
                "trace_id": trace_id,
                "client": e.client.to_string(),
                "method": e.method.as_str(),
                "host": text(&e.host),
                "path": path,
                "status": e.status,
                "pool": e.pool,
                "target": e.target.map(|t| t.to_string()),
                "attempts": e.attempts,
                "bytes_in": e.bytes_in,
                "bytes_out": e.bytes_out,
                "duration_ms": millis(e.duration),
                "upstream_ms": e.upstream.map(millis),
                "error": e.error,
            });
            let _ = writeln!(buf, "{line}");
        }
        Format::Text => {
            let dash = std::borrow::Cow::Borrowed("-");
            let _ = writeln!(
                buf,
                "{time} {client} \"{method} {host}{path}\" {status} {bytes_out} {duration:.3}ms \
                 pool={pool} target={target} attempts={attempts} upstream={upstream} \
                 in={bytes_in} id={id} trace={trace} error={error}",
                client = e.client,
                method = e.method,
                host = text(&e.host).unwrap_or(dash),
                status = e.status,
                bytes_out = e.bytes_out,
                duration = millis(e.duration),
                pool = e.pool.as_deref().unwrap_or("-"),
                target = e.target.map_or_else(|| "-".to_owned(), |t| t.to_string()),
                attempts = e.attempts,
                upstream = e
                    .upstream
                    .map_or_else(|| "-".to_owned(), |u| format!("{:.3}ms", millis(u))),
                bytes_in = e.bytes_in,
                id = String::from_utf8_lossy(e.request_id.as_bytes()),
                trace = trace_id.unwrap_or("-"),
                error = e.error.unwrap_or("-"),
            );
        }
    }
}

fn text(v: &Option<HeaderValue>) -> Option<std::borrow::Cow<'_, str>> {
    v.as_ref().map(|v| String::from_utf8_lossy(v.as_bytes()))
}

fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        Entry {
            time: SystemTime::UNIX_EPOCH + Duration::from_millis(1_764_619_200_123),
            request_id: HeaderValue::from_static("req-1"),
            traceparent: Some(HeaderValue::from_static(
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            )),
            client: "127.0.0.1:5000".parse().unwrap(),
            method: Method::GET,
            host: Some(HeaderValue::from_static("shop.example")),
            uri: "/cart?id=7".parse().unwrap(),
            status: 200,
            pool: Some("web".into()),
            target: Some("10.0.0.1:8080".parse().unwrap()),
            attempts: 1,
            bytes_in: 0,
            bytes_out: 512,
            duration: Duration::from_micros(1500),
            upstream: Some(Duration::from_micros(1200)),
            error: None,
        }
    }

    #[test]
    fn a_json_line_has_every_field() {
        let mut buf = String::new();
        format_line(&mut buf, &entry(), Format::Json);
        assert!(
            buf.ends_with('\n') && buf.matches('\n').count() == 1,
            "{buf:?}"
        );
        let v: serde_json::Value = serde_json::from_str(&buf).unwrap();
        assert_eq!(v["time"], "2025-12-01T20:00:00.123Z");
        assert_eq!(v["request_id"], "req-1");
        assert_eq!(v["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(v["client"], "127.0.0.1:5000");
        assert_eq!(v["method"], "GET");
        assert_eq!(v["host"], "shop.example");
        assert_eq!(v["path"], "/cart?id=7");
        assert_eq!(v["status"], 200);
        assert_eq!(v["pool"], "web");
        assert_eq!(v["target"], "10.0.0.1:8080");
        assert_eq!(v["attempts"], 1);
        assert_eq!(v["bytes_out"], 512);
        assert_eq!(v["duration_ms"], 1.5);
        assert_eq!(v["upstream_ms"], 1.2);
        assert_eq!(v["error"], serde_json::Value::Null);
    }

    #[test]
    fn a_hostile_path_cannot_break_a_json_line() {
        let mut e = entry();
        e.host = Some(HeaderValue::from_static("x\",\"forged\":\"1"));
        let mut buf = String::new();
        format_line(&mut buf, &e, Format::Json);
        let v: serde_json::Value = serde_json::from_str(&buf).unwrap();
        assert!(v.get("forged").is_none(), "{buf}");
    }

    #[test]
    fn a_text_line_reads_left_to_right() {
        let mut e = entry();
        e.status = 502;
        e.error = Some("connect-failure");
        let mut buf = String::new();
        format_line(&mut buf, &e, Format::Text);
        assert_eq!(
            buf,
            "2025-12-01T20:00:00.123Z 127.0.0.1:5000 \"GET shop.example/cart?id=7\" 502 512 \
             1.500ms pool=web target=10.0.0.1:8080 attempts=1 upstream=1.200ms in=0 id=req-1 \
             trace=4bf92f3577b34da6a3ce929d0e0e4736 error=connect-failure\n"
        );
    }

    #[test]
    fn sinks_are_named_as_on_the_command_line() {
        assert_eq!("off".parse::<Sink>(), Ok(Sink::Off));
        assert_eq!("stdout".parse::<Sink>(), Ok(Sink::Stdout));
        assert_eq!(
            "/var/log/weir/access.log".parse::<Sink>(),
            Ok(Sink::File("/var/log/weir/access.log".into()))
        );
        assert!("".parse::<Sink>().is_err());
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts_instead_of_waiting() {
        let (tx, _rx) = mpsc::channel(2);
        let log = AccessLog {
            tx,
            written: Arc::default(),
            dropped: AtomicU64::new(0),
        };
        for _ in 0..5 {
            log.record(entry());
        }
        assert_eq!(log.dropped.load(Ordering::Relaxed), 3);
    }

    #[tokio::test]
    async fn a_request_whose_client_left_is_logged_as_499_when_dropped() {
        let (tx, mut rx) = mpsc::channel(4);
        let log = Arc::new(AccessLog {
            tx,
            written: Arc::default(),
            dropped: AtomicU64::new(0),
        });
        let mut e = entry();
        e.status = 499;
        e.error = Some("client-gone");
        drop(Pending::new(log.clone(), Instant::now(), e));
        let got = rx.try_recv().expect("a line for the abandoned request");
        assert_eq!((got.status, got.error), (499, Some("client-gone")));
        Pending::new(log, Instant::now(), entry()).discard();
        assert!(rx.try_recv().is_err(), "a discarded entry is not logged");
    }
}
