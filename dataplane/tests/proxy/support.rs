//! What the data plane's tests share: a `weir-dataplane` proxy serving a pools file in its own
//! folder, pools files, and raw TCP exchanges; the rest (`weir-echo` backends, HTTP/1.1 and h2c
//! clients, load and tallies of which backend answered, the [`Refusing`] socket) is
//! `weir-testkit`'s, which the end-to-end tests and the benchmark use too, and is re-exported
//! here under the names the tests use.
//!
//! Every process is killed when its handle drops, on panic too; a failing test prints the
//! proxy's log. Every wait is bounded in time. No port is picked by a test: processes bind
//! port 0 and the tests read the port from their startup line (the `weir-testkit` crate doc
//! says why).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use nix::sys::signal::Signal;
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use weir_testkit::{DataPlane, HttpClient, START_BOUND};

pub use weir_testkit::Echo as Backend;
pub use weir_testkit::{
    Refusing, Reply, Stop, Tally, TempDir, eventually, get, h2c, http1, load, load_at_rate,
    seen_header, send,
};

// ---------------------------------------------------------------------------------------------
// The proxy

/// A running `weir-dataplane` serving a pools file in its own temporary folder.
pub struct Proxy {
    /// The proxy listener.
    pub addr: SocketAddr,
    pools: PathBuf,
    plane: DataPlane,
    client: HttpClient,
    _dir: TempDir,
}

impl Proxy {
    /// Starts the proxy on free ports with `yaml` as its pools file and `extra_args`, and waits
    /// until `/ready` answers 200.
    pub async fn start(yaml: &str, extra_args: &[&str]) -> Self {
        Self::start_with(Some(yaml), extra_args).await
    }

    /// Starts the proxy with `extra_args` and no pools file (its pools come from a
    /// controller named in them), and waits until `/ready` answers 200.
    pub async fn start_managed(extra_args: &[&str]) -> Self {
        Self::start_with(None, extra_args).await
    }

    /// Starts the proxy with `extra_args` and no pools file, and returns once it serves,
    /// without waiting for `/ready` (a data plane whose controller refuses it never is).
    pub async fn spawn_managed(extra_args: &[&str]) -> Self {
        Self::spawn(None, extra_args).await
    }

    async fn start_with(yaml: Option<&str>, extra_args: &[&str]) -> Self {
        let mut proxy = Self::spawn(yaml, extra_args).await;
        if let Err(log) = proxy.plane.ready(START_BOUND).await {
            panic!("weir-dataplane was not ready: {log}");
        }
        proxy
    }

    /// Starts the proxy on port 0 for both listeners and waits for its startup line.
    async fn spawn(yaml: Option<&str>, extra_args: &[&str]) -> Self {
        let dir = TempDir::new();
        let pools = dir.path().join("pools.yaml");
        if let Some(yaml) = yaml {
            std::fs::write(&pools, yaml).expect("writing the pools file");
        }
        let command = dataplane_command(yaml.map(|_| pools.as_path()), extra_args);
        let plane = DataPlane::spawn("weir-dataplane", command)
            .await
            .unwrap_or_else(|log| panic!("weir-dataplane did not start: {log}"));
        Self {
            addr: plane.listen,
            pools,
            plane,
            client: http1(),
            _dir: dir,
        }
    }

    /// `http://ADDR{path}` on the proxy listener.
    pub fn url(&self, path: &str) -> String {
        self.plane.url(path)
    }

    /// `http://ADMIN{path}` on the admin listener.
    pub fn admin_url(&self, path: &str) -> String {
        self.plane.admin_url(path)
    }

    /// GET `path` through the proxy on a kept-alive HTTP/1.1 connection.
    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        send(&self.client, Method::GET, &self.url(path), headers, "")
            .await
            .unwrap_or_else(|e| panic!("GET {path} through the proxy failed: {e}"))
    }

    /// A request to the admin listener.
    pub async fn admin(&self, method: Method, path: &str, body: &str) -> Reply {
        send(&self.client, method, &self.admin_url(path), &[], body)
            .await
            .unwrap_or_else(|e| panic!("admin {path} failed: {e}"))
    }

    /// The `/status` document.
    pub async fn status(&self) -> Value {
        let reply = self.admin(Method::GET, "/status", "").await;
        assert_eq!(reply.status, StatusCode::OK, "/status: {}", reply.body);
        reply.json()
    }

    /// The value of the `/metrics` sample written exactly as `sample` (name and labels).
    pub async fn metric(&self, sample: &str) -> Option<f64> {
        let reply = self.admin(Method::GET, "/metrics", "").await;
        assert_eq!(reply.status, StatusCode::OK, "/metrics: {}", reply.body);
        weir_testkit::metric(&reply.body, sample)
    }

    /// The pools file the proxy watches.
    pub fn pools_file(&self) -> &Path {
        &self.pools
    }

    /// Replaces the pools file atomically (write beside it, then rename), as editors and
    /// ConfigMap updates do.
    pub fn write_pools(&self, yaml: &str) {
        let next = self.pools.with_extension("yaml.next");
        std::fs::write(&next, yaml).expect("writing the next pools file");
        std::fs::rename(&next, &self.pools).expect("renaming the pools file into place");
    }

    /// Sends `signal` to the process.
    pub fn signal(&self, signal: Signal) {
        self.plane.signal(signal);
    }

    /// Waits up to `bound` for the process to exit.
    pub async fn wait_exit(&mut self, bound: Duration) -> Option<ExitStatus> {
        self.plane.wait_exit(bound).await
    }

    /// What the proxy logged so far.
    pub fn log(&self) -> String {
        self.plane.log()
    }
}

/// The `weir-dataplane` command for `pools`, both listeners on port 0 of 127.0.0.1, with
/// stderr piped and no `WEIR_*` variable from the environment (`WEIR_LOG` is `info`: the
/// startup line that names the ports is an info line).
pub fn dataplane_command(pools: Option<&Path>, extra_args: &[&str]) -> Command {
    let mut cmd = weir_testkit::dataplane_command(env!("CARGO_BIN_EXE_weir-dataplane"));
    if let Some(pools) = pools {
        cmd.arg("--pools").arg(pools);
    }
    cmd.args(extra_args);
    cmd
}

// ---------------------------------------------------------------------------------------------
// Pools files

/// A pools file with `pools` (each from [`pool`]).
pub fn pools_file(pools: &[String]) -> String {
    let mut yaml = String::from("pools:\n");
    for pool in pools {
        yaml.push_str(pool);
    }
    yaml
}

/// One pool entry: `settings` are lines such as `algorithm: Random`, then the targets with
/// their weights.
pub fn pool(name: &str, settings: &[&str], targets: &[(&Backend, u32)]) -> String {
    let addresses: Vec<(SocketAddr, u32)> = targets.iter().map(|(b, w)| (b.addr, *w)).collect();
    pool_at(name, settings, &addresses)
}

/// [`pool`] with bare addresses, for targets that are not backends.
pub fn pool_at(name: &str, settings: &[&str], targets: &[(SocketAddr, u32)]) -> String {
    let mut yaml = format!("  - name: {name}\n");
    for line in settings {
        yaml.push_str(&format!("    {line}\n"));
    }
    if targets.is_empty() {
        yaml.push_str("    targets: []\n");
    } else {
        yaml.push_str("    targets:\n");
        for (address, weight) in targets {
            yaml.push_str(&format!(
                "      - {{ address: {address}, weight: {weight} }}\n"
            ));
        }
    }
    yaml
}

// ---------------------------------------------------------------------------------------------
// Raw TCP

/// One response read off a raw connection.
#[derive(Debug)]
pub struct RawReply {
    /// The status, when a status line arrived.
    pub status: Option<u16>,
    /// Everything that arrived, as text.
    pub text: String,
    /// From connecting to the end of the response (or of the connection).
    pub elapsed: Duration,
}

impl RawReply {
    /// The value of header `name` in the response head.
    pub fn header(&self, name: &str) -> Option<&str> {
        let head = self.text.split("\r\n\r\n").next()?;
        head.lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Writes `request` to `addr` as is (while reading, so an early answer is not lost) and reads
/// one response: up to the end of its body, or the end of the connection, within 5 s.
pub async fn raw(addr: SocketAddr, request: &[u8]) -> RawReply {
    let started = Instant::now();
    let stream = TcpStream::connect(addr)
        .await
        .expect("connecting to the proxy");
    let (mut reader, mut writer) = stream.into_split();
    let request = request.to_vec();
    // The write half is handed back rather than dropped: dropping it would half-close the
    // connection, which the proxy could take as the client's end.
    let write = tokio::spawn(async move {
        let _ = writer.write_all(&request).await;
        writer
    });
    let mut received = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !complete(&received) {
        match tokio::time::timeout_at(deadline, reader.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
        }
    }
    let elapsed = started.elapsed();
    drop(write.await);
    let text = String::from_utf8_lossy(&received).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok());
    RawReply {
        status,
        text,
        elapsed,
    }
}

/// Whether `received` holds a whole response: a head and a body of its `Content-Length`, or a
/// last chunk.
fn complete(received: &[u8]) -> bool {
    let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&received[..end]).to_ascii_lowercase();
    let body = &received[end + 4..];
    if let Some(len) = head.lines().find_map(|l| l.strip_prefix("content-length:")) {
        return len
            .trim()
            .parse::<usize>()
            .is_ok_and(|len| body.len() >= len);
    }
    if head.contains("transfer-encoding: chunked") {
        return body.ends_with(b"0\r\n\r\n");
    }
    false
}

/// What happened to a connection left waiting.
#[derive(Debug)]
pub enum Hangup {
    /// The proxy closed it (end of stream or reset) after this long, having sent these bytes.
    Closed(Duration, String),
    /// It was still open when the bound passed.
    StillOpen(String),
}

/// Connects, writes `partial` and waits up to `bound` for the proxy to close the connection.
pub async fn wait_for_hangup(addr: SocketAddr, partial: &[u8], bound: Duration) -> Hangup {
    let mut stream = TcpStream::connect(addr)
        .await
        .expect("connecting to the proxy");
    let started = Instant::now();
    stream.write_all(partial).await.expect("writing");
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + bound;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                let text = String::from_utf8_lossy(&received).into_owned();
                return Hangup::Closed(started.elapsed(), text);
            }
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
            Err(_) => return Hangup::StillOpen(String::from_utf8_lossy(&received).into_owned()),
        }
    }
}
