//! `weir-controller`: see the library crate for the design, and `--help` for the flags.

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
use weir_controller::leader::{self, Role};
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

async fn run(config: Config) -> anyhow::Result<ExitCode> {
    // Before any port opens, so a signal sent as soon as a port answers still shuts down cleanly.
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let client = match kube::Client::try_default().await {
        Ok(client) => client,
        Err(e) => {
            eprintln!(
                "weir-controller: no Kubernetes client configuration (KUBECONFIG, \
                 ~/.kube/config or in-cluster): {e}"
            );
            return Ok(ExitCode::from(EXIT_BAD_CONFIG));
        }
    };
    let channel_listener = TcpListener::bind(config.channel)
        .await
        .with_context(|| format!("cannot listen on {} (channel)", config.channel))?;
    let metrics_listener = TcpListener::bind(config.metrics)
        .await
        .with_context(|| format!("cannot listen on {} (metrics)", config.metrics))?;
    // What the listeners got, not what was asked: with port 0 the startup line is how a
    // supervisor (the end-to-end tests) learns the ports, and the default advertised URL
    // must carry the real one.
    let (channel_addr, metrics_addr) = (
        channel_listener.local_addr()?,
        metrics_listener.local_addr()?,
    );

    let review = config.token_audience.clone().map(|audience| {
        (
            client.clone(),
            audience,
            config.allowed_service_accounts.clone(),
        )
    });
    let (triggers, triggered) = Triggers::new();
    let lease = config.lease(channel_addr);
    let (role_tx, role) = watch::channel(if lease.is_some() {
        Role::Follower {
            leader_channel: None,
        }
    } else {
        Role::Alone
    });
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
    let channel = Arc::new(Channel {
        shared: shared.clone(),
        auth: Authenticator::new(config.tokens.clone(), review),
        ready,
        heartbeat: HEARTBEAT,
        relay: Relay::new(&config.identity()),
    });
    tokio::spawn(channel::serve(channel_listener, channel));
    tracing::info!(
        channel = %channel_addr,
        metrics = %metrics_addr,
        namespace = config.namespace.as_deref().unwrap_or("(all)"),
        static_tokens = config.tokens.len(),
        token_audience = ?config.token_audience,
        lease = ?lease.as_ref().map(|l| format!("{}/{} as {}", l.namespace, l.name, l.identity)),
        advertise = ?lease.as_ref().and_then(|l| l.channel_url.as_deref()),
        "weir-controller starting"
    );
    let stop = Arc::new(Notify::new());
    let election = lease.map(|lease| {
        let stop = stop.clone();
        tokio::spawn(leader::run(client.clone(), lease, role_tx, async move {
            stop.notified().await;
        }))
    });

    tokio::select! {
        () = controller::run(client, config.namespace.clone(), shared, triggered, ready_tx) => {
            anyhow::bail!("the controller's watches ended");
        }
        _ = term.recv() => tracing::info!("SIGTERM received; stopping"),
        _ = int.recv() => tracing::info!("SIGINT received; stopping"),
    }
    if let Some(election) = election {
        // Hand the Lease over now rather than make the next replica wait for it to expire.
        stop.notify_one();
        if tokio::time::timeout(RELEASE_TIMEOUT, election)
            .await
            .is_err()
        {
            tracing::warn!("releasing the lease timed out; it expires on its own");
        }
    }
    Ok(ExitCode::SUCCESS)
}
