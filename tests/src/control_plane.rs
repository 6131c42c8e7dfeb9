//! etcd and kube-apiserver, started with a temporary folder, and the clients that talk to
//! them.
//!
//! etcd listens on Unix sockets in that folder (clients and peers alike), so it needs no port.
//! kube-apiserver's secure port must be a TCP port named before it starts (`--secure-port=0`
//! turns serving off, it cannot report a port of its choosing and it inherits no socket): a
//! port free a moment before is given to it, and a start that finds it taken meanwhile is
//! tried again with another, up to `ATTEMPTS` times.
//!
//! kube-apiserver serves TLS with a certificate of a CA made for it (see `pki`), trusts client
//! certificates of that CA (the admin is in `system:masters`), authorizes with RBAC and signs
//! service-account tokens with a key of its own, so TokenRequest and TokenReview work. There
//! are no nodes and no controller-manager: nothing runs pods, creates EndpointSlices for
//! Services or deletes the contents of deleted namespaces.

mod pki;
mod reaper;

use std::ffi::OsStr;
use std::fs::{self, File};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config, ResourceExt};
use tempfile::TempDir;
use tokio::io::AsyncWriteExt;

use self::pki::Pki;
use self::reaper::Reaper;
use crate::{Binaries, Error, binaries};

/// How long kube-apiserver may take to answer `/readyz` (on a busy 2-core machine it takes
/// a few seconds).
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Starts tried when the port picked for kube-apiserver was taken meanwhile by someone else.
const ATTEMPTS: u32 = 3;

/// A running etcd and kube-apiserver. Dropping it kills both and removes its folder; so does
/// the exit of the test binary, however it ends (see `reaper`).
pub struct ControlPlane {
    // Dropped in this order: the processes are killed, then the reaper is dismissed, then the
    // folder is removed.
    apiserver: Process,
    etcd: Process,
    _reaper: Reaper,
    dir: TempDir,
    server: String,
    kubeconfig: PathBuf,
    config: Config,
    kubectl: PathBuf,
    started_in: Duration,
}

/// A child process, killed when dropped.
struct Process {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl ControlPlane {
    /// The control plane shared by the tests of this test binary, started by the first call.
    /// Tests isolate themselves with [`namespace`](Self::namespace). It is never dropped: its
    /// processes and folder go when the test binary exits.
    ///
    /// # Panics
    /// When it cannot start, in every test that calls it, with the reason (for example that
    /// `scripts/control-plane` has not been run).
    pub fn shared() -> &'static ControlPlane {
        static SHARED: OnceLock<Result<ControlPlane, Error>> = OnceLock::new();
        match SHARED.get_or_init(ControlPlane::start) {
            Ok(plane) => plane,
            Err(e) => panic!("the shared control plane did not start: {e}"),
        }
    }

    /// The [`shared`](Self::shared) control plane with Weir's CRDs (the repository's `crds/`)
    /// applied and established, once per test binary: kube-apiserver delays the first create
    /// after a CRD turns Established, so installing once keeps the tests fast.
    pub async fn shared_with_crds() -> Result<&'static ControlPlane, Error> {
        static INSTALLED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
        let plane = Self::shared();
        INSTALLED.get_or_try_init(|| plane.install_crds()).await?;
        Ok(plane)
    }

    /// `kubectl apply -f crds/` (the repository's), then waits until the CRD is Established.
    pub async fn install_crds(&self) -> Result<(), Error> {
        let crds = concat!(env!("CARGO_MANIFEST_DIR"), "/../crds/");
        self.kubectl(["apply", "-f", crds]).await?;
        self.kubectl([
            "wait",
            "--for=condition=Established",
            "crd/loadbalancerpools.weir.dev",
            "--timeout=60s",
        ])
        .await?;
        Ok(())
    }

    /// Starts a control plane of its own, with the [`Binaries`] found in the usual places;
    /// returns once kube-apiserver answers `/readyz`. Blocks: call it from a test, async or not.
    pub fn start() -> Result<Self, Error> {
        Self::start_with(&Binaries::find()?)
    }

    /// Starts a control plane with the given binaries.
    pub fn start_with(binaries: &Binaries) -> Result<Self, Error> {
        // A thread and a runtime of its own, so that it may block whatever the caller runs on,
        // and so that nothing of the plane is tied to the runtime of the test that started it.
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(Error::io("starting a Tokio runtime"))?
                        .block_on(Self::start_retrying(binaries))
                })
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// A client authenticated as the admin (group `system:masters`).
    ///
    /// # Panics
    /// Outside a Tokio runtime: the client runs a task on the caller's runtime, so each test
    /// takes its own.
    pub fn client(&self) -> Client {
        Client::try_from(self.config.clone()).expect("a kube client (inside a Tokio runtime)")
    }

    /// The client configuration behind [`client`](Self::client).
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The kubeconfig file for `kubectl`, `helm` or anything else (admin identity).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// kube-apiserver's URL, `https://127.0.0.1:<port>`.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// How long the start took, until `/readyz` answered.
    pub fn started_in(&self) -> Duration {
        self.started_in
    }

    /// Creates a namespace named `<prefix>-<5 random characters>` and returns its name. Tests
    /// sharing a control plane each work in their own.
    pub async fn namespace(&self, prefix: &str) -> Result<String, Error> {
        let namespace = Namespace {
            metadata: ObjectMeta {
                generate_name: Some(format!("{prefix}-")),
                labels: Some([("weir.dev/e2e".to_owned(), "true".to_owned())].into()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        let api = Api::<Namespace>::all(self.client());
        Ok(api
            .create(&PostParams::default(), &namespace)
            .await?
            .name_any())
    }

    /// Runs `kubectl` ([`binaries::kubectl`](crate::binaries::kubectl): the one built with the
    /// control plane unless `TEST_ASSET_KUBECTL` says otherwise) against this control plane;
    /// returns its stdout.
    pub async fn kubectl<I, S>(&self, args: I) -> Result<String, Error>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.run(&self.kubectl, args, None).await
    }

    /// Runs `kubectl` with `input` on its stdin, as in `kubectl apply -f -`.
    pub async fn kubectl_with_input<I, S>(&self, args: I, input: &str) -> Result<String, Error>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.run(&self.kubectl, args, Some(input)).await
    }

    /// Runs the `helm` built by `scripts/control-plane` against this control plane, with its
    /// cache and configuration in the control plane's folder; returns its stdout.
    pub async fn helm<I, S>(&self, args: I) -> Result<String, Error>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.run(&binaries::helm()?, args, None).await
    }

    async fn start_retrying(binaries: &Binaries) -> Result<Self, Error> {
        let began = Instant::now();
        let mut attempt = 1;
        loop {
            match Self::start_once(binaries, began).await {
                Err(Error::Exited { ref tail, .. })
                    if attempt < ATTEMPTS && tail.contains("address already in use") =>
                {
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    async fn start_once(binaries: &Binaries, began: Instant) -> Result<Self, Error> {
        let dir = tempfile::Builder::new()
            .prefix("weir-control-plane-")
            .tempdir()
            .map_err(Error::io("creating a temporary folder"))?;
        let mut reaper = Reaper::spawn(dir.path())?;
        let pki = Pki::generate(&dir.path().join("pki"))?;
        let apiserver_port = apiserver_port()?;

        // etcd wants `host:port` even in a `unix://` URL, and takes its host part as the
        // socket's file name relative to its working directory, the control plane's folder:
        // the `:0` is only there to satisfy that check.
        let (client_socket, peer_socket) = ("etcd-client:0", "etcd-peer:0");
        let etcd_url = format!("unix://{client_socket}");
        let peer_url = format!("unix://{peer_socket}");
        let etcd = Process::spawn(
            "etcd",
            &binaries.etcd,
            dir.path(),
            &[
                "--name=weir-e2e".to_owned(),
                format!("--data-dir={}", dir.path().join("etcd").display()),
                format!("--listen-client-urls={etcd_url}"),
                format!("--advertise-client-urls={etcd_url}"),
                format!("--listen-peer-urls={peer_url}"),
                format!("--initial-advertise-peer-urls={peer_url}"),
                format!("--initial-cluster=weir-e2e={peer_url}"),
                // Throwaway data: no fsync makes writes as fast as memory.
                "--unsafe-no-fsync=true".to_owned(),
                "--log-level=warn".to_owned(),
            ],
            dir.path().join("etcd.log"),
            &mut reaper,
        )?;

        let file = |name: &str| pki.path(name).display().to_string();
        let apiserver = Process::spawn(
            "kube-apiserver",
            &binaries.kube_apiserver,
            dir.path(),
            &[
                // etcd's client accepts an absolute path as `unix:///PATH`.
                format!(
                    "--etcd-servers=unix://{}",
                    dir.path().join(client_socket).display()
                ),
                "--bind-address=127.0.0.1".to_owned(),
                "--advertise-address=127.0.0.1".to_owned(),
                format!("--secure-port={apiserver_port}"),
                format!("--cert-dir={}", dir.path().join("pki").display()),
                format!("--tls-cert-file={}", file("apiserver.crt")),
                format!("--tls-private-key-file={}", file("apiserver.key")),
                format!("--client-ca-file={}", file("ca.crt")),
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local".to_owned(),
                format!("--service-account-key-file={}", file("sa.pub")),
                format!("--service-account-signing-key-file={}", file("sa.key")),
                "--service-cluster-ip-range=10.96.0.0/16".to_owned(),
                "--authorization-mode=RBAC".to_owned(),
                // As envtest: the ServiceAccount admission plugin wants a `default` service
                // account in every namespace, which only the controller-manager creates.
                "--disable-admission-plugins=ServiceAccount".to_owned(),
                // No one to serve the `kubernetes` Service's endpoints to.
                "--endpoint-reconciler-type=none".to_owned(),
                "--profiling=false".to_owned(),
            ],
            dir.path().join("kube-apiserver.log"),
            &mut reaper,
        )?;

        let server = format!("https://127.0.0.1:{apiserver_port}");
        let kubeconfig = dir.path().join("kubeconfig");
        let text = format!(
            r#"apiVersion: v1
kind: Config
clusters:
  - name: weir-e2e
    cluster: {{ server: "{server}", certificate-authority: {ca:?} }}
users:
  - name: weir-e2e-admin
    user: {{ client-certificate: {crt:?}, client-key: {key:?} }}
contexts:
  - name: weir-e2e
    context: {{ cluster: weir-e2e, user: weir-e2e-admin }}
current-context: weir-e2e
"#,
            ca = file("ca.crt"),
            crt = file("admin.crt"),
            key = file("admin.key"),
        );
        fs::write(&kubeconfig, text).map_err(Error::io("writing the kubeconfig"))?;
        let config = Config::from_custom_kubeconfig(
            Kubeconfig::read_from(&kubeconfig)?,
            &KubeConfigOptions::default(),
        )
        .await?;

        let mut plane = Self {
            apiserver,
            etcd,
            _reaper: reaper,
            dir,
            server,
            kubeconfig,
            config,
            kubectl: binaries.kubectl.clone(),
            started_in: Duration::ZERO,
        };
        plane.wait_ready().await?;
        plane.started_in = began.elapsed();
        eprintln!(
            "weir-e2e: control plane at {} ready in {:.1?}; kubeconfig {}",
            plane.server,
            plane.started_in,
            plane.kubeconfig.display()
        );
        Ok(plane)
    }

    /// Polls `/readyz` until it answers `ok`, failing early when a process exits.
    async fn wait_ready(&mut self) -> Result<(), Error> {
        let client = Client::try_from(self.config.clone())?;
        let began = Instant::now();
        let mut last;
        loop {
            self.etcd.check_running()?;
            self.apiserver.check_running()?;
            let request = http::Request::get("/readyz?verbose")
                .body(Vec::new())
                .expect("a valid request");
            match tokio::time::timeout(Duration::from_secs(2), client.request_text(request)).await {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(e)) => last = e.to_string(),
                Err(_) => last = "no answer within 2 s".to_owned(),
            }
            if began.elapsed() > READY_TIMEOUT {
                return Err(Error::NotReady {
                    after: READY_TIMEOUT,
                    last,
                    log: self.apiserver.log.clone(),
                    tail: self.apiserver.tail(),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn run<I, S>(&self, program: &Path, args: I, input: Option<&str>) -> Result<String, Error>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<_> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let command = std::iter::once(program.as_os_str())
            .chain(args.iter().map(|a| a.as_os_str()))
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ");
        let helm = self.dir.path().join("helm");
        let mut child = tokio::process::Command::new(program)
            .args(&args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HELM_CACHE_HOME", helm.join("cache"))
            .env("HELM_CONFIG_HOME", helm.join("config"))
            .env("HELM_DATA_HOME", helm.join("data"))
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(Error::io(format!("running {command}")))?;
        if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
            stdin
                .write_all(input.as_bytes())
                .await
                .map_err(Error::io(format!("writing to {command}")))?;
        }
        let output = child
            .wait_with_output()
            .await
            .map_err(Error::io(format!("running {command}")))?;
        if !output.status.success() {
            return Err(Error::Command {
                command,
                status: output.status,
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }
}

impl Process {
    /// Starts `program` in `cwd` with its stdout and stderr in `log`, and tells the reaper.
    fn spawn(
        name: &'static str,
        program: &Path,
        cwd: &Path,
        args: &[String],
        log: PathBuf,
        reaper: &mut Reaper,
    ) -> Result<Self, Error> {
        let out = File::create(&log).map_err(Error::io(format!("creating {}", log.display())))?;
        let err = out
            .try_clone()
            .map_err(Error::io(format!("opening {}", log.display())))?;
        let child = Command::new(program)
            .args(args)
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(Error::io(format!("starting {}", program.display())))?;
        let process = Self { name, child, log };
        reaper.watch(process.child.id())?;
        Ok(process)
    }

    fn check_running(&mut self) -> Result<(), Error> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(Error::Exited {
                process: self.name,
                status,
                log: self.log.clone(),
                tail: self.tail(),
            }),
            Err(e) => Err(Error::io(format!("waiting for {}", self.name))(e)),
        }
    }

    /// The last lines of the log.
    fn tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port that was free a moment ago, for kube-apiserver (see the module
/// documentation for why it cannot bind port 0 itself).
fn apiserver_port() -> Result<u16, Error> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(Error::io("finding a free port"))
}
