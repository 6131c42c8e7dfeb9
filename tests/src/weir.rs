//! Weir's own programs as processes for end-to-end tests: `weir-controller`, `weir-dataplane`
//! following it, and `weir-echo` backends on the test host, with an HTTP client to drive
//! traffic through data planes.
//!
//! What the harnesses share lives in `weir-testkit` (re-exported here where the tests name
//! it): the binaries are taken from the build folder of the test executable, where
//! `scripts/test` builds them first, and a missing or stale one fails the test with the
//! command that builds it ([`binary`]); every process binds port 0 and the harness reads the
//! ports it got from its startup line; every process is killed when its handle drops, and a
//! test that panics prints the logs of the processes it started. A process's `WEIR_LOG` is
//! `WEIR_E2E_LOG` when set (`debug`, `weir_controller=debug`), else `info`.
//!
//! EndpointSlices may not point at loopback addresses (the API server refuses 127.0.0.0/8),
//! so backends run on the tests' own test host, a network namespace that `scripts/test-hosts`
//! makes ([`host_address`]); the data planes reach it over a veth pair and nothing leaves
//! the machine.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use weir_testkit::startup::{CONTROLLER_STARTING, logged_addr};
use weir_testkit::{Answer, HttpClient};

pub use weir_testkit::{Process, REQUEST_BOUND, START_BOUND, Tally, binary, eventually};

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
/// startup line.
const ANY_LOOPBACK_PORT: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);

/// `command` with `WEIR_LOG` from `WEIR_E2E_LOG` (`info` when unset).
fn logging(mut command: Command) -> Command {
    command.env(
        "WEIR_LOG",
        std::env::var("WEIR_E2E_LOG").unwrap_or_else(|_| "info".to_owned()),
    );
    command
}

/// A `weir-echo` backend (its `name` and `addr` are `weir-testkit`'s [`Echo`]'s).
///
/// [`Echo`]: weir_testkit::Echo
pub struct Echo(weir_testkit::Echo);

impl Echo {
    /// Starts `weir-echo --name NAME` on a free port of `ip` and waits for its address; on
    /// the test host's address it runs inside the test host's namespace.
    pub fn start(name: &str, ip: IpAddr) -> Self {
        let command = if ip == host_address() {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", TEST_HOST_NAMESPACE])
                .arg(binary("weir-echo"));
            c
        } else {
            Command::new(binary("weir-echo"))
        };
        Self(weir_testkit::Echo::start_with(
            name,
            SocketAddr::new(ip, 0),
            logging(command),
        ))
    }
}

impl Deref for Echo {
    type Target = weir_testkit::Echo;

    fn deref(&self) -> &Self::Target {
        &self.0
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
        let (line, mut process) = loop {
            let mut command = Command::new(binary("weir-controller"));
            command
                .args(["--channel", &self.channel.to_string()])
                .args(["--metrics", &self.metrics.to_string()])
                .args(&self.args)
                .env("KUBECONFIG", &self.kubeconfig)
                .stdout(Stdio::null());
            let mut process = Process::spawn("weir-controller", logging(command));
            match process.line_with(CONTROLLER_STARTING, START_BOUND).await {
                Ok(line) => break (line, process),
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
        let ready = format!("http://{}/ready", self.metrics);
        let bound = (2 * START_BOUND).saturating_sub(started.elapsed());
        if let Err(log) = process.until_ok(&ready, bound).await {
            panic!("weir-controller not ready: {log}");
        }
        self.process = Some(process);
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
        weir_testkit::metric(&reply.body, sample)
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
    plane: weir_testkit::DataPlane,
    http: Http,
}

impl DataPlane {
    /// Starts `weir-dataplane --controller URL --data-plane-id ID` with `args` (the token,
    /// a selector) and waits until `/ready` answers 200: the controller's first state is in
    /// force.
    pub async fn start(id: &str, controller: &str, args: &[&str]) -> Self {
        let mut command = weir_testkit::dataplane_command(binary("weir-dataplane"));
        command
            .args(["--controller", controller, "--data-plane-id", id])
            .args(["--workers", "1"])
            .args(args);
        let name = format!("weir-dataplane {id}");
        let mut plane = weir_testkit::DataPlane::spawn(&name, logging(command))
            .await
            .unwrap_or_else(|log| panic!("{name} did not start: {log}"));
        if let Err(log) = plane.ready(START_BOUND).await {
            panic!("{name} not ready: {log}");
        }
        Self {
            id: id.to_owned(),
            listen: plane.listen,
            admin: plane.admin,
            plane,
            http: Http::new(),
        }
    }

    /// GET `path` through the proxy, on a kept-alive connection.
    pub async fn get(&self, path: &str) -> Result<Reply, String> {
        self.http.get(&self.plane.url(path)).await
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
        self.plane.log()
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.plane.pid()
    }
}

/// An HTTP/1.1 client keeping one connection alive per host.
#[derive(Clone)]
pub struct Http(HttpClient);

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

impl Answer for Reply {
    fn status(&self) -> StatusCode {
        self.status
    }
    fn backend(&self) -> Option<&str> {
        self.backend.as_deref()
    }
    fn body(&self) -> &str {
        &self.body
    }
}

impl Http {
    /// A new client.
    pub fn new() -> Self {
        Self(weir_testkit::http1())
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
        let reply = weir_testkit::exchange(&self.0, request).await?;
        Ok(Reply {
            status: reply.status,
            backend: reply.backend().map(str::to_owned),
            body: reply.body,
        })
    }
}

impl Default for Http {
    fn default() -> Self {
        Self::new()
    }
}
