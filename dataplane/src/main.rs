//! `weir-dataplane`: see the library crate for the design, and `--help` for the flags.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use weir_api::PoolsFile;
use weir_dataplane::channel::{self, ChannelSettings, Received, Token};
use weir_dataplane::settings::Args;
use weir_dataplane::state::State;
use weir_dataplane::{admin, config_file, reload, server};

/// Exit code for invalid configuration (EX_CONFIG would be 78; linkerd and sysexits' EX_USAGE
/// use 64 for bad input on the command line or in files named there).
const EXIT_BAD_CONFIG: u8 = 64;

/// mimalloc: the proxy allocates many small, short-lived buffers per request, where glibc's
/// malloc showed up in profiles (about 5% of CPU in malloc, free and consolidation).
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WEIR_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let workers = args
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    // One worker runs on a current-thread runtime: no work-stealing queues to synchronise, and
    // the proxy's tasks wake each other without crossing threads.
    let built = if workers <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()
    };
    let runtime = match built {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("weir-dataplane: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args, workers)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("weir-dataplane: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `$POD_NAME` (set through the downward API), else the host name.
fn default_identity() -> String {
    std::env::var("POD_NAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "weir-dataplane".to_owned())
}

/// Binds the proxy listener with a deeper accept backlog than tokio's default of 1024, so a
/// burst of new connections queues in the kernel instead of being refused (NGINX and the
/// peers' benchmark configs use 4096 too; the kernel caps it at `net.core.somaxconn`).
fn listen(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

/// Raises the soft open-files limit to the hard one: every proxied connection holds two
/// descriptors (client and target), and the usual soft default of 1024 caps the proxy at
/// about 500 concurrent connections. Go's runtime and NGINX's `worker_rlimit_nofile` do the same.
fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!(soft, hard, error = %e, "cannot raise the open-files limit");
            }
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot read the open-files limit"),
    }
}

async fn run(args: Args, workers: usize) -> anyhow::Result<ExitCode> {
    // Before any port opens: a supervisor that sees the port may signal at once, and a
    // signal before the handler exists kills without draining.
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    raise_fd_limit();
    let pools = match &args.pools {
        Some(path) => match config_file::load(path) {
            Ok(pools) => pools,
            Err(e) => {
                eprintln!("weir-dataplane: {e}");
                return Ok(ExitCode::from(EXIT_BAD_CONFIG));
            }
        },
        None => PoolsFile::default(),
    };
    let pool_count = pools.pools.len();
    let access_log = match weir_dataplane::access_log::AccessLog::start(
        &args.access_log,
        args.access_log_format,
    )
    .await
    {
        Ok(log) => log,
        Err(e) => {
            eprintln!("weir-dataplane: --access-log: {e}");
            return Ok(ExitCode::from(EXIT_BAD_CONFIG));
        }
    };
    let state = Arc::new(State::new(args.proxy.clone(), pools).with_access_log(access_log));
    let proxy = listen(args.listen).with_context(|| format!("cannot listen on {}", args.listen))?;
    let admin_listener = TcpListener::bind(args.admin)
        .await
        .with_context(|| format!("cannot listen on {} (admin)", args.admin))?;
    let (listen, admin_addr) = (proxy.local_addr()?, admin_listener.local_addr()?);
    tokio::spawn(admin::run(admin_listener, state.clone()));
    if let Some(path) = args.pools.clone() {
        tokio::spawn(reload::watch(
            path,
            state.clone(),
            args.proxy.watch_interval.get(),
        ));
    }
    if let Some(controller) = args.controller.clone() {
        let settings = ChannelSettings {
            controller,
            token: match (&args.token_file, &args.token) {
                (Some(file), _) => Token::File(file.clone()),
                (None, Some(token)) => Token::Static(token.clone()),
                (None, None) => Token::None,
            },
            data_plane: args.data_plane_id.clone().unwrap_or_else(default_identity),
            selector: args.pool_selector.clone(),
        };
        state.set_managed();
        let received = Arc::new(std::sync::Mutex::new(Received::default()));
        tokio::spawn(channel::follow(
            settings.clone(),
            state.clone(),
            received.clone(),
        ));
        tokio::spawn(channel::report(settings, state.clone(), received));
    }
    {
        let state = state.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_millis(100));
            loop {
                tick.tick().await;
                state.maintain();
            }
        });
    }
    if args.controller.is_none() {
        // Standalone, the file is the configuration; with a controller, readiness waits for
        // its first state.
        state.set_ready();
    }
    tracing::info!(%listen, admin = %admin_addr, workers, pools = pool_count, file = ?args.pools, "weir-dataplane serving");

    let signalled = {
        let state = state.clone();
        async move {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received"),
                _ = int.recv() => tracing::info!("SIGINT received"),
            }
            state.set_draining();
        }
    };
    server::serve(proxy, state, signalled).await;
    Ok(ExitCode::SUCCESS)
}
