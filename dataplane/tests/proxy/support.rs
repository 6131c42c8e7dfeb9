//! What the tests share: `weir-echo` backends and a `weir-dataplane` proxy as child processes
//! on loopback ports, pools files, HTTP/1.1 and h2c clients, raw TCP exchanges, and tallies of
//! which backend answered.
//!
//! Every process is killed when its handle drops, on panic too; a failing test prints the
//! proxy's log. Every wait is bounded in time.
//!
//! No port is picked by a test and released for a process to bind: a released port can be
//! taken meanwhile by any listener on the machine (under load a proxy's admin listener took
//! the port a test had meant to refuse connections). Processes bind port 0 and the tests read
//! the port from their startup line; an address that must refuse connections is a socket the
//! test keeps bound without listening ([`Refusing`]).

use std::collections::BTreeMap;
use std::fmt;
use std::io::{BufRead as _, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode, Version};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use nix::sys::signal::Signal;
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// Longest one request may take before it counts as failed.
pub const REQUEST_BOUND: Duration = Duration::from_secs(10);
/// Longest a process may take to start serving.
const START_BOUND: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Processes

/// A `weir-echo` backend on a port of its choosing.
pub struct Backend {
    /// Its `--name`, answered in `x-backend`.
    pub name: String,
    /// Where it listens.
    pub addr: SocketAddr,
    child: Child,
    log: Log,
}

impl Backend {
    /// Starts `weir-echo --name NAME` on 127.0.0.1 and waits for its `listening on` line.
    pub fn start(name: &str) -> Self {
        Self::start_at(name, SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// Starts `weir-echo --name NAME` on `addr` (a killed backend coming back on its port).
    pub fn start_at(name: &str, addr: SocketAddr) -> Self {
        let mut child = Command::new(echo_exe())
            .args(["--listen", &addr.to_string(), "--name", name])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start weir-echo: {e}"));
        let log = Log::capture(child.stderr.take().expect("piped stderr"));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(first)) = lines.next() {
                let _ = tx.send(first);
            }
            lines.for_each(drop);
        });
        let mut backend = Self {
            name: name.to_owned(),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            child,
            log,
        };
        let Ok(line) = rx.recv_timeout(START_BOUND) else {
            panic!(
                "weir-echo {name} did not say `listening on` within {START_BOUND:?}; stderr:\n{}",
                backend.log.text()
            );
        };
        backend.addr = line
            .strip_prefix("listening on ")
            .and_then(|a| a.trim().parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line from weir-echo: {line:?}"));
        backend
    }

    /// Kills the process at once (SIGKILL): its connections reset, its port refuses.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Requests it has served, `/_stats` and `/health` excepted.
    pub async fn requests(&self) -> u64 {
        let stats = get(&format!("http://{}/_stats", self.addr), &[])
            .await
            .json();
        stats["requests"]
            .as_u64()
            .unwrap_or_else(|| panic!("no request count in {stats}"))
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `weir-echo` binary next to this test's `deps/` folder. `cargo test` builds only the
/// tested package's binaries; `scripts/test` builds the workspace's first.
fn echo_exe() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let path = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("weir-echo"))
        .expect("the test executable lives in target/<profile>/deps");
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build --workspace --bins` (scripts/test does)",
        path.display()
    );
    path
}

/// A running `weir-dataplane` serving a pools file in its own temporary folder.
pub struct Proxy {
    /// The proxy listener.
    pub addr: SocketAddr,
    /// The admin listener.
    pub admin: SocketAddr,
    pools: PathBuf,
    child: Child,
    log: Log,
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
        Self::spawn(None, extra_args)
            .await
            .unwrap_or_else(|log| panic!("weir-dataplane did not start: {log}"))
    }

    async fn start_with(yaml: Option<&str>, extra_args: &[&str]) -> Self {
        let proxy = Self::spawn(yaml, extra_args)
            .await
            .unwrap_or_else(|log| panic!("weir-dataplane did not start: {log}"));
        let started = Instant::now();
        loop {
            let ready = tokio::time::timeout(
                Duration::from_secs(1),
                send(
                    &proxy.client,
                    Method::GET,
                    &proxy.admin_url("/ready"),
                    &[],
                    "",
                ),
            )
            .await;
            if let Ok(Ok(reply)) = ready {
                if reply.status == StatusCode::OK {
                    return proxy;
                }
            }
            assert!(
                started.elapsed() <= START_BOUND,
                "weir-dataplane's /ready did not answer 200 within {START_BOUND:?}; log:\n{}",
                proxy.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Starts the proxy on port 0 for both listeners and waits for its
    /// `weir-dataplane serving listen=ADDR admin=ADDR` line; `Err` with its log if it exits
    /// first or does not say it within [`START_BOUND`].
    async fn spawn(yaml: Option<&str>, extra_args: &[&str]) -> Result<Self, String> {
        let dir = TempDir::new();
        let pools = dir.path().join("pools.yaml");
        if let Some(yaml) = yaml {
            std::fs::write(&pools, yaml).expect("writing the pools file");
        }
        let mut child = dataplane_command(yaml.map(|_| pools.as_path()), extra_args)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start weir-dataplane: {e}"));
        let log = Log::capture(child.stderr.take().expect("piped stderr"));
        let unbound = SocketAddr::from(([127, 0, 0, 1], 0));
        let mut proxy = Self {
            addr: unbound,
            admin: unbound,
            pools,
            child,
            log,
            client: http1(),
            _dir: dir,
        };
        let started = Instant::now();
        let line = loop {
            if let Some(line) = proxy
                .log()
                .lines()
                .find(|line| line.contains("weir-dataplane serving"))
            {
                break line.to_owned();
            }
            if let Ok(Some(status)) = proxy.child.try_wait() {
                // Let the log thread read the last lines.
                tokio::time::sleep(Duration::from_millis(50)).await;
                return Err(format!("it exited with {status}; log:\n{}", proxy.log()));
            }
            if started.elapsed() > START_BOUND {
                return Err(format!(
                    "it did not log `weir-dataplane serving` within {START_BOUND:?}; log:\n{}",
                    proxy.log()
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        match (logged_addr(&line, "listen"), logged_addr(&line, "admin")) {
            (Some(addr), Some(admin)) => (proxy.addr, proxy.admin) = (addr, admin),
            _ => {
                return Err(format!(
                    "its startup line names no listen= and admin=: {line}"
                ));
            }
        }
        Ok(proxy)
    }

    /// `http://ADDR{path}` on the proxy listener.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `http://ADMIN{path}` on the admin listener.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
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
        reply.body.lines().find_map(|line| {
            let value = line.strip_prefix(sample)?.strip_prefix(' ')?;
            value.split_whitespace().next()?.parse().ok()
        })
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
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, signal).expect("signalling weir-dataplane");
    }

    /// Waits up to `bound` for the process to exit.
    pub async fn wait_exit(&mut self, bound: Duration) -> Option<ExitStatus> {
        let started = Instant::now();
        while started.elapsed() < bound {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        None
    }

    /// What the proxy logged so far.
    pub fn log(&self) -> String {
        self.log.text()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- weir-dataplane log ----\n{}----", self.log());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `weir-dataplane` command for `pools`, both listeners on port 0 of 127.0.0.1, with
/// stderr piped and no `WEIR_*` variable from the environment (`WEIR_LOG` is `info`: the
/// startup line that names the ports is an info line).
pub fn dataplane_command(pools: Option<&Path>, extra_args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_weir-dataplane"));
    if let Some(pools) = pools {
        cmd.arg("--pools").arg(pools);
    }
    cmd.args(["--listen", "127.0.0.1:0"])
        .args(["--admin", "127.0.0.1:0"])
        .args(extra_args);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("WEIR_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("NO_COLOR", "1")
        .env("WEIR_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

/// The address logged as `name=ADDR` in a `tracing` line.
fn logged_addr(line: &str, name: &str) -> Option<SocketAddr> {
    let key = format!("{name}=");
    line.split_whitespace()
        .find_map(|word| word.strip_prefix(&key))
        .and_then(|value| value.parse().ok())
}

/// A loopback address that refuses connections for as long as it is held: a socket bound
/// there without listening, so the kernel answers every SYN with a reset and no other socket
/// can bind the port meanwhile (it is bound without `SO_REUSEADDR`, which listeners that set
/// it would otherwise share).
pub struct Refusing {
    /// The address.
    pub addr: SocketAddr,
    _socket: tokio::net::TcpSocket,
}

impl Refusing {
    /// Binds a free loopback port, without listening.
    pub fn bind() -> Self {
        let socket = tokio::net::TcpSocket::new_v4().expect("a TCP socket");
        socket
            .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .expect("binding 127.0.0.1:0");
        Self {
            addr: socket.local_addr().expect("a bound address"),
            _socket: socket,
        }
    }
}

/// Lines a child writes, collected by a thread.
#[derive(Clone, Default)]
pub struct Log(Arc<Mutex<String>>);

impl Log {
    /// Collects `from` line by line until it closes.
    pub fn capture(from: impl Read + Send + 'static) -> Self {
        let log = Self::default();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(from).lines() {
                let Ok(line) = line else { break };
                let mut text = sink.0.lock().unwrap_or_else(|p| p.into_inner());
                text.push_str(&line);
                text.push('\n');
            }
        });
        log
    }

    /// Everything collected so far.
    pub fn text(&self) -> String {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// A folder removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// A new, empty folder under the system's temporary folder.
    pub fn new() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "weir-proxy-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("creating a temporary folder");
        Self(path)
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
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
// HTTP clients

/// hyper-util's pooled client.
pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn connector() -> HttpConnector {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector
}

/// An HTTP/1.1 client that keeps one connection alive per host.
pub fn http1() -> HttpClient {
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1)
        .build(connector())
}

/// An HTTP/2 client with prior knowledge (h2c).
pub fn h2c() -> HttpClient {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build(connector())
}

/// A whole response.
#[derive(Debug)]
pub struct Reply {
    /// Status.
    pub status: StatusCode,
    /// Protocol version it came over.
    pub version: Version,
    /// Header fields.
    pub headers: HeaderMap,
    /// Body, as text.
    pub body: String,
    /// From sending the request to the end of the body.
    pub elapsed: Duration,
}

impl Reply {
    /// The value of header `name`, when there is one and it is text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The backend that answered (`x-backend`).
    pub fn backend(&self) -> Option<&str> {
        self.header("x-backend")
    }

    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

/// Sends one request and reads the whole response, within [`REQUEST_BOUND`].
pub async fn send(
    client: &HttpClient,
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<Reply, String> {
    let mut request = Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(Full::new(Bytes::from(body.to_owned())))
        .map_err(|e| format!("building the request: {e}"))?;
    let started = Instant::now();
    let exchange = async {
        let response = client
            .request(request)
            .await
            .map_err(|e| format!("{e:?}"))?;
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| format!("reading the body: {e}"))?;
        Ok::<_, String>(Reply {
            status: parts.status,
            version: parts.version,
            headers: parts.headers,
            body: String::from_utf8_lossy(&body.to_bytes()).into_owned(),
            elapsed: started.elapsed(),
        })
    };
    match tokio::time::timeout(REQUEST_BOUND, exchange).await {
        Ok(result) => result,
        Err(_) => Err(format!("no complete answer within {REQUEST_BOUND:?}")),
    }
}

/// GET `url` with a fresh HTTP/1.1 client; panics when no answer comes.
pub async fn get(url: &str, headers: &[(&str, &str)]) -> Reply {
    send(&http1(), Method::GET, url, headers, "")
        .await
        .unwrap_or_else(|e| panic!("GET {url} failed: {e}"))
}

/// The values of header `name` in a `weir-echo` `/headers` report.
pub fn seen_headers(report: &Value, name: &str) -> Vec<String> {
    report["headers"]
        .as_array()
        .unwrap_or_else(|| panic!("no header list in {report}"))
        .iter()
        .filter(|pair| pair[0].as_str() == Some(name))
        .filter_map(|pair| pair[1].as_str().map(str::to_owned))
        .collect()
}

/// The single value of header `name` in a `/headers` report, if it arrived.
pub fn seen_header(report: &Value, name: &str) -> Option<String> {
    let mut values = seen_headers(report, name);
    assert!(
        values.len() <= 1,
        "{name} arrived {} times: {values:?}",
        values.len()
    );
    values.pop()
}

// ---------------------------------------------------------------------------------------------
// Load

/// When a load run stops.
#[derive(Clone, Copy, Debug)]
pub enum Stop {
    /// After this many requests in all.
    After(usize),
    /// When this instant passes.
    At(Instant),
}

/// What a load run saw.
#[derive(Debug, Default)]
pub struct Tally {
    /// Requests sent.
    pub requests: u64,
    /// Requests without a 200 answer.
    pub failures: u64,
    /// The first few failures, described.
    pub failed: Vec<String>,
    /// 200 answers by backend.
    pub by_backend: BTreeMap<String, u64>,
    /// When each backend first answered.
    pub first_seen: BTreeMap<String, Instant>,
    /// Slowest request.
    pub worst: Duration,
    /// When the last failed request was sent.
    pub last_failure: Option<Instant>,
}

impl Tally {
    fn record(&mut self, result: Result<Reply, String>, sent: Instant) {
        self.requests += 1;
        match result {
            Ok(reply) if reply.status == StatusCode::OK => {
                self.worst = self.worst.max(reply.elapsed);
                let backend = reply.backend().unwrap_or("(no x-backend)").to_owned();
                self.first_seen.entry(backend.clone()).or_insert(sent);
                *self.by_backend.entry(backend).or_default() += 1;
            }
            other => {
                self.failures += 1;
                self.last_failure = self.last_failure.max(Some(sent));
                if let Ok(reply) = &other {
                    self.worst = self.worst.max(reply.elapsed);
                }
                if self.failed.len() < 5 {
                    self.failed.push(match other {
                        Ok(reply) => format!("{} {}", reply.status, reply.body.trim()),
                        Err(e) => e,
                    });
                }
            }
        }
    }

    fn merge(&mut self, other: Self) {
        self.requests += other.requests;
        self.failures += other.failures;
        self.failed.extend(other.failed);
        self.failed.truncate(5);
        for (backend, n) in other.by_backend {
            *self.by_backend.entry(backend).or_default() += n;
        }
        for (backend, at) in other.first_seen {
            let first = self.first_seen.entry(backend).or_insert(at);
            *first = (*first).min(at);
        }
        self.worst = self.worst.max(other.worst);
        self.last_failure = self.last_failure.max(other.last_failure);
    }

    /// 200 answers from `backend`.
    pub fn count(&self, backend: &str) -> u64 {
        self.by_backend.get(backend).copied().unwrap_or(0)
    }

    /// `backend`'s share of the 200 answers, in percent.
    pub fn share(&self, backend: &str) -> f64 {
        let ok: u64 = self.by_backend.values().sum();
        if ok == 0 {
            0.0
        } else {
            self.count(backend) as f64 * 100.0 / ok as f64
        }
    }
}

impl fmt::Display for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} requests, {} failed, worst latency {:.1} ms;",
            self.requests,
            self.failures,
            self.worst.as_secs_f64() * 1e3
        )?;
        for (backend, n) in &self.by_backend {
            write!(f, " {backend} {n} ({:.1}%)", self.share(backend))?;
        }
        if !self.failed.is_empty() {
            write!(f, "; first failures: {:?}", self.failed)?;
        }
        Ok(())
    }
}

/// GETs `url` from `clients` concurrent clients, each on its own kept-alive connection, until
/// `stop`, and tallies the answers.
pub async fn load(url: String, clients: usize, stop: Stop) -> Tally {
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..clients {
        let url = url.clone();
        let share = match stop {
            Stop::After(total) => total / clients + usize::from(i < total % clients),
            Stop::At(_) => usize::MAX,
        };
        tasks.spawn(async move {
            let client = http1();
            let mut tally = Tally::default();
            for _ in 0..share {
                if let Stop::At(end) = stop {
                    if Instant::now() >= end {
                        break;
                    }
                }
                let sent = Instant::now();
                let result = send(&client, Method::GET, &url, &[], "").await;
                tally.record(result, sent);
            }
            tally
        });
    }
    let mut total = Tally::default();
    while let Some(tally) = tasks.join_next().await {
        total.merge(tally.expect("a load client panicked"));
    }
    total
}

/// GETs `url` at a fixed `rate` per second for `duration`, whatever the answers take (up to
/// `max_in_flight` at once), as an open-loop load generator does, and tallies the answers.
pub async fn load_at_rate(
    url: String,
    rate: u32,
    duration: Duration,
    max_in_flight: usize,
) -> Tally {
    let client = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(max_in_flight)
        .build(connector());
    let limit = Arc::new(tokio::sync::Semaphore::new(max_in_flight));
    let mut tick = tokio::time::interval(Duration::from_secs(1) / rate);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let end = Instant::now() + duration;
    let mut tasks = tokio::task::JoinSet::new();
    while Instant::now() < end {
        tick.tick().await;
        let permit = limit
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let (client, url) = (client.clone(), url.clone());
        tasks.spawn(async move {
            let sent = Instant::now();
            let result = send(&client, Method::GET, &url, &[], "").await;
            drop(permit);
            (result, sent)
        });
    }
    let mut tally = Tally::default();
    while let Some(done) = tasks.join_next().await {
        let (result, sent) = done.expect("a load request panicked");
        tally.record(result, sent);
    }
    tally
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
