//! `weir-controller`: see the library crate for the design, and `--help` for the flags.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{Notify, watch};
use weir_controller::auth::Authenticator;
use weir_controller::channel::{self, Channel, HEARTBEAT};
use weir_controller::config::Config;
use weir_controller::controller::{self, Shared, Triggers};
use weir_controller::dataplanes::{DataPlanes, LINGER};
use weir_controller::hub::Hub;
use weir_controller::leader::{self, LeaseConfig, Role};
use weir_controller::metrics::{self, Metrics};
use weir_controller::relay::Relay;

/// Exit code for invalid configuration (sysexits' EX_USAGE, as the data plane).
const EXIT_BAD_CONFIG: u8 = 64;
/// How long a stopping replica tries to release the Lease.
const RELEASE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

fn main() -> ExitCode {
    let config = match Config::try_parse() {
        Ok(config) => config,
        Err(e) if e.use_stderr() => {
            let _ = e.print();
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
        Err(e) => {
            // --help, --version.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
    };
    if let Err(e) = config.validate() {
        eprintln!("weir-controller: {e}");
        return ExitCode::from(EXIT_BAD_CONFIG);
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WEIR_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("weir-controller: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("weir-controller: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the controller until SIGTERM or SIGINT: the listeners, then the channel and metrics
/// servers, the election, and the controller itself.
async fn run(config: Config) -> anyhow::Result<ExitCode> {
    // Before any port opens, so a signal sent as soon as a port answers still shuts down cleanly.
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let Some(client) = kubernetes_client().await else {
        return Ok(ExitCode::from(EXIT_BAD_CONFIG));
    };
    let (channel_listener, metrics_listener) = listen(&config).await?;
    // What the listeners got, not what was asked: with port 0 the startup line is how a
    // supervisor (the end-to-end tests) learns the ports, and the default advertised URL
    // must carry the real one.
    let (channel_addr, metrics_addr) = (
        channel_listener.local_addr()?,
        metrics_listener.local_addr()?,
    );
    let lease = config.lease(channel_addr);
    let (role_tx, role) = watch::channel(if lease.is_some() {
        Role::Follower {
            leader_channel: None,
        }
    } else {
        Role::Alone
    });
    let (triggers, triggered) = Triggers::new();
    let shared = Shared {
        hub: Arc::new(Hub::new(Hub::random_base())),
        data_planes: Arc::new(DataPlanes::new(LINGER)),
        metrics: Arc::new(Metrics::new()),
        triggers,
        role,
    };
    let (ready_tx, ready) = watch::channel(false);
    tokio::spawn(metrics::serve(
        metrics_listener,
        shared.metrics.clone(),
        ready.clone(),
    ));
    serve_channel(channel_listener, &config, &client, shared.clone(), ready);
    log_start(&config, channel_addr, metrics_addr, lease.as_ref());
    let election = lease.map(|lease| Election::start(client.clone(), lease, role_tx));

    tokio::select! {
        () = controller::run(client, config.namespace.clone(), shared, triggered, ready_tx) => {
            anyhow::bail!("the controller's watches ended");
        }
        _ = term.recv() => tracing::info!("SIGTERM received; stopping"),
        _ = int.recv() => tracing::info!("SIGINT received; stopping"),
    }
    if let Some(election) = election {
        election.hand_over().await;
    }
    Ok(ExitCode::SUCCESS)
}

/// The Kubernetes client, or `None` (said on stderr) when there is no configuration.
async fn kubernetes_client() -> Option<kube::Client> {
    match kube::Client::try_default().await {
        Ok(client) => Some(client),
        Err(e) => {
            eprintln!(
                "weir-controller: no Kubernetes client configuration (KUBECONFIG, \
                 ~/.kube/config or in-cluster): {e}"
            );
            None
        }
    }
}

/// Opens the channel's and the metrics' listeners.
async fn listen(config: &Config) -> anyhow::Result<(TcpListener, TcpListener)> {
    let channel = TcpListener::bind(config.channel)
        .await
        .with_context(|| format!("cannot listen on {} (channel)", config.channel))?;
    let metrics = TcpListener::bind(config.metrics)
        .await
        .with_context(|| format!("cannot listen on {} (metrics)", config.metrics))?;
    Ok((channel, metrics))
}

/// Says what this controller runs with, on the ports it listens on.
fn log_start(
    config: &Config,
    channel: SocketAddr,
    metrics: SocketAddr,
    lease: Option<&LeaseConfig>,
) {
    tracing::info!(
        channel = %channel,
        metrics = %metrics,
        namespace = config.namespace.as_deref().unwrap_or("(all)"),
        static_tokens = config.tokens.len(),
        token_audience = ?config.token_audience,
        lease = ?lease.map(|l| format!("{}/{} as {}", l.namespace, l.name, l.identity)),
        advertise = ?lease.and_then(|l| l.channel_url.as_deref()),
        "weir-controller starting"
    );
}

/// Serves the channel data planes stream from and report to, once `ready`.
fn serve_channel(
    listener: TcpListener,
    config: &Config,
    client: &kube::Client,
    shared: Shared,
    ready: watch::Receiver<bool>,
) {
    let review = config.token_audience.clone().map(|audience| {
        (
            client.clone(),
            audience,
            config.allowed_service_accounts.clone(),
        )
    });
    let channel = Arc::new(Channel {
        shared,
        auth: Authenticator::new(config.tokens.clone(), review),
        ready,
        heartbeat: HEARTBEAT,
        relay: Relay::new(&config.identity()),
    });
    tokio::spawn(channel::serve(listener, channel));
}

/// The Lease election, running until told to stop.
struct Election {
    stop: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Election {
    /// Runs for `lease`, telling `role` this replica's part.
    fn start(client: kube::Client, lease: LeaseConfig, role: watch::Sender<Role>) -> Self {
        let stop = Arc::new(Notify::new());
        let stopped = stop.clone();
        let task = tokio::spawn(leader::run(client, lease, role, async move {
            stopped.notified().await;
        }));
        Self { stop, task }
    }

    /// Hands the Lease over now rather than make the next replica wait for it to expire.
    async fn hand_over(self) {
        self.stop.notify_one();
        if tokio::time::timeout(RELEASE_TIMEOUT, self.task)
            .await
            .is_err()
        {
            tracing::warn!("releasing the lease timed out; it expires on its own");
        }
    }
}
