//! Weir's own programs as processes for end-to-end tests: `weir-controller`, `weir-dataplane`
//! and `weir-echo` backends, an HTTP client to drive traffic through data planes, and bounded
//! waits.
//!
//! The binaries are taken from the build folder of the test executable (`target/<profile>/`,
//! the parent of its `deps/`), where `scripts/test` builds them first ([`binary`]); a
//! missing or stale one fails the test with the command that builds it. Every process binds
//! port 0 and the harness reads the ports it got from its startup line, so no port is ever
//! picked by the test and released for someone else to take. Every process is killed when its
//! handle drops, and a test that panics prints the logs of the processes it started.
//!
//! EndpointSlices may not point at loopback addresses (the API server refuses 127.0.0.0/8),
//! so backends run on the tests' own test host, a network namespace that `scripts/test-hosts`
//! makes ([`host_address`]); the data planes reach it over a veth pair and nothing leaves
//! the machine.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::io::{BufRead as _, BufReader, Read};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Longest one request may take.
pub const REQUEST_BOUND: Duration = Duration::from_secs(10);
/// Longest a process may take to start serving.
pub const START_BOUND: Duration = Duration::from_secs(30);

/// The path of Weir binary `name` (`weir-controller`, `weir-dataplane`, `weir-echo`) next to
/// the test executable's `deps/` folder (or an example's `examples/` folder: the benchmarks
/// in `tests/examples/` find them the same way, in `target/release/` when run with
/// `--release`).
///
/// `cargo test` builds a package's binaries only for that package's own integration tests,
/// so these are built by `scripts/test` (`cargo build --workspace --bins`) before the tests
/// run. A binary left from an older build would test old code in silence, so it must be at
/// least as new as every source file cargo's dep-info (`NAME.d` beside it) lists, and built
/// from this checkout's sources.
///
/// # Panics
/// When it is missing, older than one of its sources or built from another checkout, with
/// the command that builds it.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let path = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join(name))
        .expect("the test executable lives in target/<profile>/deps");
    let build = format!(
        "build it with `cargo build{} --workspace --bins` (scripts/test does)",
        if path.parent().is_some_and(|p| p.ends_with("release")) {
            " --release"
        } else {
            ""
        }
    );
    if let Err(problem) = check_built(&path) {
        panic!("{} {problem}: {build}", path.display());
    }
    path
}

/// Whether the binary at `path` exists and is as new as its sources in this checkout.
fn check_built(path: &Path) -> Result<(), String> {
    let built = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .map_err(|_| "is missing".to_owned())?;
    let dep_info = path.with_extension("d");
    let text = std::fs::read_to_string(&dep_info)
        .map_err(|e| format!("has no readable dep-info {} ({e})", dep_info.display()))?;
    let sources = dep_info_sources(&text);
    let checkout = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lies in the workspace");
    let checkout = checkout
        .canonicalize()
        .unwrap_or_else(|_| checkout.to_owned());
    let own = sources
        .iter()
        .filter(|source| source.starts_with(&checkout))
        .count();
    if own == 0 {
        return Err(format!(
            "was built from another checkout's sources ({}), not {}'s",
            sources
                .first()
                .map_or("none listed".into(), |s| s.display().to_string()),
            checkout.display()
        ));
    }
    for source in &sources {
        match std::fs::metadata(source).and_then(|m| m.modified()) {
            Ok(changed) if changed > built => {
                return Err(format!("is older than {}", source.display()));
            }
            Ok(_) => {}
            Err(_) => {
                return Err(format!(
                    "was built from {}, which is gone",
                    source.display()
                ));
            }
        }
    }
    Ok(())
}

/// The files a Makefile-style dep-info (`target: a.rs b.rs`, spaces in names escaped)
/// lists.
fn dep_info_sources(text: &str) -> Vec<PathBuf> {
    let Some((_, deps)) = text.lines().next().and_then(|line| line.split_once(": ")) else {
        return Vec::new();
    };
    let mut sources = Vec::new();
    let mut current = String::new();
    let mut chars = deps.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => current.extend(chars.next()),
            ' ' => {
                if !current.is_empty() {
                    sources.push(PathBuf::from(std::mem::take(&mut current)));
                }
            }
            c => current.push(c),
        }
    }
    if !current.is_empty() {
        sources.push(PathBuf::from(current));
    }
    sources
}

/// The network namespace of the test host, made by `scripts/test-hosts`.
pub const TEST_HOST_NAMESPACE: &str = "weir-e2e";

/// The test host's address: backends listen there, EndpointSlices name it.
///
/// # Panics
/// When the test host is missing: run `scripts/test-hosts` (as root), as `scripts/test` does.
pub fn host_address() -> IpAddr {
    let present = Path::new("/run/netns").join(TEST_HOST_NAMESPACE).exists();
    assert!(
        present,
        "the test host (network namespace {TEST_HOST_NAMESPACE}) is missing: run scripts/test-hosts \
         as root (scripts/test does), since EndpointSlices refuse loopback addresses"
    );
    IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2))
}

/// Port 0 on 127.0.0.1: the process binds a free port of its own and says which in its
/// startup line. A port picked by the test and released before the process binds it can be
/// taken meanwhile by anything else on the machine (under load it was, by a data plane's own
/// admin listener).
const ANY_LOOPBACK_PORT: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);

/// The address logged as `name=ADDR` in a `tracing` line such as
/// `weir-dataplane serving listen=127.0.0.1:40123 admin=127.0.0.1:40125`.
fn logged_addr(line: &str, name: &str) -> Option<SocketAddr> {
    let key = format!("{name}=");
    line.split_whitespace()
        .find_map(|word| word.strip_prefix(&key))
        .and_then(|value| value.parse().ok())
}

/// A child process with its stderr collected; killed when dropped. Its `WEIR_LOG` is
/// `WEIR_E2E_LOG` when set (`debug`, `weir_controller=debug`), else `info`.
pub struct Process {
    name: String,
    child: Child,
    log: Log,
}

impl Process {
    /// Starts `command` (stdin closed, stderr collected; stdout as the caller set it).
    pub fn spawn(name: &str, mut command: Command) -> Self {
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("WEIR_") {
                command.env_remove(key);
            }
        }
        let mut child = command
            .env("NO_COLOR", "1")
            .env(
                "WEIR_LOG",
                std::env::var("WEIR_E2E_LOG").unwrap_or_else(|_| "info".to_owned()),
            )
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let log = Log::capture(child.stderr.take().expect("piped stderr"));
        Self {
            name: name.to_owned(),
            child,
            log,
        }
    }

    /// Kills it at once (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Asks it to stop (SIGTERM) and waits up to `bound` for it to exit; kills it after that.
    /// Returns how it exited, `None` if it had to be killed.
    pub fn terminate(&mut self, bound: Duration) -> Option<std::process::ExitStatus> {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let started = Instant::now();
        while started.elapsed() < bound {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        None
    }

    /// Whether it has exited, and how.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// What it wrote to stderr so far.
    pub fn log(&self) -> String {
        self.log.text()
    }

    /// Waits up to `bound` for a line of its stderr that contains `marker` and returns it;
    /// `Err` with the log if it exits first or the bound passes.
    pub async fn line_with(&mut self, marker: &str, bound: Duration) -> Result<String, String> {
        let started = Instant::now();
        loop {
            if let Some(line) = self.log().lines().find(|line| line.contains(marker)) {
                return Ok(line.to_owned());
            }
            if let Some(status) = self.exited() {
                // Let the log thread read the last lines.
                tokio::time::sleep(Duration::from_millis(50)).await;
                return Err(format!(
                    "{} exited with {status}:\n{}",
                    self.name,
                    self.log()
                ));
            }
            if started.elapsed() > bound {
                return Err(format!(
                    "{} did not log {marker:?} within {bound:?}:\n{}",
                    self.name,
                    self.log()
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- {} log ----\n{}----", self.name, self.log());
        }
        self.kill();
    }
}

/// A `weir-echo` backend.
pub struct Echo {
    /// Its `--name`, answered in `x-backend`.
    pub name: String,
    /// Where it listens.
    pub addr: SocketAddr,
    _process: Process,
}

impl Echo {
    /// Starts `weir-echo --name NAME` on a free port of `ip` and waits for its address; on
    /// the test host's address it runs inside the test host's namespace.
    pub fn start(name: &str, ip: IpAddr) -> Self {
        let mut command = if ip == host_address() {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", TEST_HOST_NAMESPACE])
                .arg(binary("weir-echo"));
            c
        } else {
            Command::new(binary("weir-echo"))
        };
        command
            .args([
                "--listen",
                &SocketAddr::new(ip, 0).to_string(),
                "--name",
                name,
            ])
            .stdout(Stdio::piped());
        let mut process = Process::spawn(&format!("weir-echo {name}"), command);
        let stdout = process.child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(first)) = lines.next() {
                let _ = tx.send(first);
            }
            lines.for_each(drop);
        });
        let line = rx.recv_timeout(START_BOUND).unwrap_or_else(|_| {
            panic!(
                "weir-echo {name} did not say `listening on` within {START_BOUND:?}: {}",
                process.log()
            )
        });
        let addr = line
            .strip_prefix("listening on ")
            .and_then(|a| a.trim().parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line from weir-echo: {line:?}"));
        Self {
            name: name.to_owned(),
            addr,
            _process: process,
        }
    }
}

/// A `weir-controller` on loopback ports, with the kubeconfig of a test control plane.
pub struct Controller {
    /// The channel listener (port 0 until the first start has reported its port).
    pub channel: SocketAddr,
    /// The metrics listener (port 0 until the first start has reported its port).
    pub metrics: SocketAddr,
    args: Vec<String>,
    kubeconfig: PathBuf,
    process: Option<Process>,
    http: Http,
}

impl Controller {
    /// Starts it against `kubeconfig` with `args` (such as `--namespace` and `--token`) and
    /// waits until `/ready` answers 200: caches synced, pools compiled.
    pub async fn start(kubeconfig: &Path, args: &[&str]) -> Self {
        let mut controller = Self {
            channel: ANY_LOOPBACK_PORT,
            metrics: ANY_LOOPBACK_PORT,
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            kubeconfig: kubeconfig.to_owned(),
            process: None,
            http: Http::new(),
        };
        controller.restart().await;
        controller
    }

    /// Starts one of several replicas electing a status writer with the Lease
    /// `weir-controller` in `lease_namespace`, as `identity`; `args` as for
    /// [`start`](Self::start). It advertises its channel to the others at the address its
    /// listener got (the controller's default for a channel on a specific IP). Lease timings
    /// are client-go's defaults but for a shorter retry period, so that a released Lease is
    /// taken over within a second.
    pub async fn start_replica(
        kubeconfig: &Path,
        args: &[&str],
        lease_namespace: &str,
        identity: &str,
    ) -> Self {
        let mut args: Vec<&str> = args.to_vec();
        args.extend([
            "--lease-namespace",
            lease_namespace,
            "--identity",
            identity,
            "--lease-retry-period",
            "500ms",
        ]);
        Self::start(kubeconfig, &args).await
    }

    /// Stops it as Kubernetes does (SIGTERM); returns whether it exited cleanly within 5 s.
    pub fn terminate(&mut self) -> bool {
        self.process
            .take()
            .and_then(|mut p| p.terminate(Duration::from_secs(5)))
            .is_some_and(|status| status.success())
    }

    /// Kills it at once (SIGKILL): streams break, nothing is said to the data planes.
    pub fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
    }

    /// Starts it again on the same ports and waits until it is ready. The first start binds
    /// port 0 and reads the ports it got from its startup line; a restart binds those again,
    /// so data planes find it where they left it.
    ///
    /// Between two runs the ports are free, and a connection another program opens meanwhile
    /// may be given one as its local port: a restart that finds a port taken tries again for
    /// [`START_BOUND`].
    pub async fn restart(&mut self) {
        self.kill();
        let started = Instant::now();
        let line = loop {
            let mut command = Command::new(binary("weir-controller"));
            command
                .args(["--channel", &self.channel.to_string()])
                .args(["--metrics", &self.metrics.to_string()])
                .args(&self.args)
                .env("KUBECONFIG", &self.kubeconfig)
                .stdout(Stdio::null());
            let mut process = Process::spawn("weir-controller", command);
            let result = process
                .line_with("weir-controller starting", START_BOUND)
                .await;
            match result {
                Ok(line) => {
                    self.process = Some(process);
                    break line;
                }
                Err(log)
                    if log.contains("Address already in use")
                        && started.elapsed() < START_BOUND =>
                {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(log) => panic!("weir-controller did not start: {log}"),
            }
        };
        match (logged_addr(&line, "channel"), logged_addr(&line, "metrics")) {
            (Some(channel), Some(metrics)) => (self.channel, self.metrics) = (channel, metrics),
            _ => {
                panic!("weir-controller's startup line names no channel=ADDR metrics=ADDR: {line}")
            }
        }
        loop {
            if let Some(status) = self.process.as_mut().and_then(Process::exited) {
                panic!("weir-controller exited with {status}:\n{}", self.log());
            }
            if let Ok(reply) = self
                .http
                .get(&format!("http://{}/ready", self.metrics))
                .await
                && reply.status == StatusCode::OK
            {
                return;
            }
            assert!(
                started.elapsed() < 2 * START_BOUND,
                "weir-controller not ready within {:?}:\n{}",
                2 * START_BOUND,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `http://CHANNEL`, what data planes are given as `--controller`.
    pub fn url(&self) -> String {
        format!("http://{}", self.channel)
    }

    /// The value of the `/metrics` sample written exactly as `sample`.
    pub async fn metric(&self, sample: &str) -> Option<f64> {
        let reply = self
            .http
            .get(&format!("http://{}/metrics", self.metrics))
            .await
            .ok()?;
        reply.body.lines().find_map(|line| {
            let value = line.strip_prefix(sample)?.strip_prefix(' ')?;
            value.split_whitespace().next()?.parse().ok()
        })
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        self.process.as_ref().map(Process::log).unwrap_or_default()
    }

    /// The process id of the running controller, if it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Process::pid)
    }
}

/// A `weir-dataplane` following a controller, on loopback ports.
pub struct DataPlane {
    /// Its `--data-plane-id`.
    pub id: String,
    /// The proxy listener.
    pub listen: SocketAddr,
    /// The admin listener.
    pub admin: SocketAddr,
    process: Process,
    http: Http,
}

impl DataPlane {
    /// Starts `weir-dataplane --controller URL --data-plane-id ID` with `args` (the token,
    /// a selector) and waits until `/ready` answers 200: the controller's first state is in
    /// force.
    pub async fn start(id: &str, controller: &str, args: &[&str]) -> Self {
        let mut command = Command::new(binary("weir-dataplane"));
        command
            .args(["--controller", controller, "--data-plane-id", id])
            .args(["--listen", &ANY_LOOPBACK_PORT.to_string()])
            .args(["--admin", &ANY_LOOPBACK_PORT.to_string()])
            .args(["--workers", "1"])
            .args(args)
            .stdout(Stdio::null());
        let mut process = Process::spawn(&format!("weir-dataplane {id}"), command);
        let line = process
            .line_with("weir-dataplane serving", START_BOUND)
            .await
            .unwrap_or_else(|log| panic!("weir-dataplane {id} did not start: {log}"));
        let (Some(listen), Some(admin)) =
            (logged_addr(&line, "listen"), logged_addr(&line, "admin"))
        else {
            panic!("weir-dataplane's startup line names no listen=ADDR admin=ADDR: {line}");
        };
        let mut plane = Self {
            id: id.to_owned(),
            listen,
            admin,
            process,
            http: Http::new(),
        };
        let started = Instant::now();
        loop {
            if let Some(status) = plane.process.exited() {
                panic!("weir-dataplane {id} exited with {status}:\n{}", plane.log());
            }
            if let Ok(reply) = plane.http.get(&format!("http://{admin}/ready")).await
                && reply.status == StatusCode::OK
            {
                return plane;
            }
            assert!(
                started.elapsed() < START_BOUND,
                "weir-dataplane {id} not ready within {START_BOUND:?}:\n{}",
                plane.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// GET `path` through the proxy, on a kept-alive connection.
    pub async fn get(&self, path: &str) -> Result<Reply, String> {
        self.http
            .get(&format!("http://{}{path}", self.listen))
            .await
    }

    /// `n` GETs of `path` in a row, tallied.
    pub async fn tally(&self, path: &str, n: usize) -> Tally {
        let mut tally = Tally::default();
        for _ in 0..n {
            tally.record(self.get(path).await);
        }
        tally
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }
}

/// An HTTP/1.1 client keeping one connection alive per host.
#[derive(Clone)]
pub struct Http(Client<HttpConnector, Full<Bytes>>);

/// A whole answer.
#[derive(Clone, Debug)]
pub struct Reply {
    /// Its status.
    pub status: StatusCode,
    /// `x-backend`: which backend answered.
    pub backend: Option<String>,
    /// The body, as text.
    pub body: String,
}

impl Http {
    /// A new client.
    pub fn new() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Self(
            Client::builder(TokioExecutor::new())
                .pool_max_idle_per_host(1)
                .build(connector),
        )
    }

    /// GET `url`, bounded by [`REQUEST_BOUND`].
    pub async fn get(&self, url: &str) -> Result<Reply, String> {
        self.send(Method::GET, url, None).await
    }

    /// A request with an optional bearer token, bounded by [`REQUEST_BOUND`].
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        bearer: Option<&str>,
    ) -> Result<Reply, String> {
        self.send_body(method, url, bearer, Bytes::new()).await
    }

    /// Like [`send`](Self::send), with a request body.
    pub async fn send_body(
        &self,
        method: Method,
        url: &str,
        bearer: Option<&str>,
        body: impl Into<Bytes>,
    ) -> Result<Reply, String> {
        let mut request = Request::builder().method(method).uri(url);
        if let Some(token) = bearer {
            request = request.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request
            .body(Full::new(body.into()))
            .map_err(|e| e.to_string())?;
        let exchange = async {
            let response = self
                .0
                .request(request)
                .await
                .map_err(|e| format!("{e:?}"))?;
            let (parts, body) = response.into_parts();
            let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
            Ok(Reply {
                status: parts.status,
                backend: parts
                    .headers
                    .get("x-backend")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned),
                body: String::from_utf8_lossy(&body).into_owned(),
            })
        };
        tokio::time::timeout(REQUEST_BOUND, exchange)
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {REQUEST_BOUND:?}")))
    }
}

impl Default for Http {
    fn default() -> Self {
        Self::new()
    }
}

/// Answers counted by backend.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    /// Requests sent.
    pub requests: u64,
    /// Requests without a 200 answer.
    pub failures: u64,
    /// 200 answers by backend.
    pub by_backend: BTreeMap<String, u64>,
    /// The first few failures.
    pub failed: Vec<String>,
}

impl Tally {
    /// Counts one answer.
    pub fn record(&mut self, result: Result<Reply, String>) {
        self.requests += 1;
        match result {
            Ok(reply) if reply.status == StatusCode::OK => {
                let backend = reply.backend.unwrap_or_else(|| "(none)".to_owned());
                *self.by_backend.entry(backend).or_default() += 1;
            }
            other => {
                self.failures += 1;
                if self.failed.len() < 5 {
                    self.failed.push(match other {
                        Ok(reply) => format!("{} {}", reply.status, reply.body.trim()),
                        Err(e) => e,
                    });
                }
            }
        }
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
        write!(f, "{} requests, {} failed;", self.requests, self.failures)?;
        for (backend, n) in &self.by_backend {
            write!(f, " {backend} {n} ({:.1}%)", self.share(backend))?;
        }
        if !self.failed.is_empty() {
            write!(f, "; first failures: {:?}", self.failed)?;
        }
        Ok(())
    }
}

/// Polls `check` every 50 ms until it gives a value, for at most `bound`; returns the value
/// and how long it took.
///
/// # Panics
/// After `bound`, with `what` and the last thing `check` said.
pub async fn eventually<T, F, Fut>(what: &str, bound: Duration, mut check: F) -> (T, Duration)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let started = Instant::now();
    loop {
        match check().await {
            Ok(value) => return (value, started.elapsed()),
            Err(last) if started.elapsed() >= bound => {
                panic!("{what}: not within {bound:?}; last: {last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Lines a child writes, collected by a thread.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<String>>);

impl Log {
    fn capture(from: impl Read + Send + 'static) -> Self {
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

    fn text(&self) -> String {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}
