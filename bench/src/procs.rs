//! Child processes that cannot outlive the benchmark, and tiny HTTP probes of them.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use weir_testkit::startup;

use crate::procfs;

/// How long a proxy or backend may take to become ready.
pub const READY_LIMIT: Duration = Duration::from_secs(10);
/// How long a stopped proxy gets to exit before SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// A child process, leader of its own process group, that is killed with its whole group
/// when dropped: on success, on error and when Ctrl-C drops the benchmark's future.
pub struct Guard {
    name: String,
    child: Child,
    pid: u32,
    log: Option<PathBuf>,
    reaped: bool,
}

impl Guard {
    /// Spawns `cmd` in a new process group, appending its stdout and stderr to `log`
    /// unless the caller already set stdout.
    pub fn spawn(name: &str, cmd: &mut Command, log: Option<&Path>) -> anyhow::Result<Self> {
        if let Some(log) = log {
            let file = File::options()
                .create(true)
                .append(true)
                .open(log)
                .with_context(|| format!("opening {}", log.display()))?;
            cmd.stderr(file.try_clone()?);
            cmd.stdout(file);
        }
        // A group of its own lets us stop nginx's workers with its master, and keeps a
        // terminal's Ctrl-C from killing children before we measured or cleaned up.
        let child = cmd
            .stdin(Stdio::null())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        let pid = child.id().ok_or_else(|| anyhow!("{name} exited at once"))?;
        Ok(Self {
            name: name.to_owned(),
            child,
            pid,
            log: log.map(Path::to_path_buf),
            reaped: false,
        })
    }

    /// The process id, which is also the process group id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The child's stdout, when the caller asked for a pipe.
    pub fn take_stdout(&mut self) -> Option<tokio::process::ChildStdout> {
        self.child.stdout.take()
    }

    /// Fails if the process has exited, quoting the end of its log.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => {
                self.reaped = true;
                bail!("{} exited ({status}){}", self.name, self.log_tail())
            }
            Err(err) => bail!("waiting for {}: {err}", self.name),
        }
    }

    /// The last lines of the process's log, for error messages.
    pub fn log_tail(&self) -> String {
        let Some(log) = &self.log else {
            return String::new();
        };
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(15)..].join("\n");
        if tail.is_empty() {
            String::new()
        } else {
            format!("; last lines of {}:\n{tail}", log.display())
        }
    }

    /// Kills the whole group with SIGKILL at once, as a crash would, and reaps the leader.
    pub async fn kill(mut self) -> Option<ExitStatus> {
        self.signal_group(Signal::SIGKILL);
        let status = tokio::time::timeout(Duration::from_secs(2), self.child.wait())
            .await
            .ok()
            .and_then(Result::ok);
        self.reaped = status.is_some();
        self.kill_leftovers();
        status
    }

    /// Asks the whole group to stop with SIGTERM, then kills what is left after `grace`.
    pub async fn stop(mut self, grace: Duration) -> Option<ExitStatus> {
        self.signal_group(Signal::SIGTERM);
        let status = tokio::time::timeout(grace, self.child.wait())
            .await
            .ok()
            .and_then(Result::ok);
        self.reaped = status.is_some();
        self.kill_leftovers();
        status
    }

    fn signal_group(&self, signal: Signal) {
        // ESRCH just means the group is already gone.
        let _ = killpg(Pid::from_raw(self.pid as i32), signal);
    }

    /// SIGKILLs the group if the leader or any member (an orphaned worker) is still there.
    fn kill_leftovers(&mut self) {
        let group_alive =
            !self.reaped || procfs::all_processes().iter().any(|p| p.pgrp == self.pid);
        if group_alive {
            self.signal_group(Signal::SIGKILL);
        }
        if !self.reaped {
            // SIGKILL is not refusable; reap so no zombie is left behind.
            let deadline = Instant::now() + Duration::from_secs(1);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    self.reaped = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if !self.reaped {
            self.signal_group(Signal::SIGTERM);
            // Drop can't await: a short blocking wait gives nginx and haproxy the chance to
            // exit cleanly before SIGKILL.
            let deadline = Instant::now() + Duration::from_secs(2);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    self.reaped = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.kill_leftovers();
    }
}

/// A started `weir-echo` backend.
pub struct Backend {
    /// Its process.
    pub guard: Guard,
    /// The address it reported.
    pub addr: SocketAddr,
}

/// Starts `weir-echo` on `listen` (port 0 for a free port) and waits for its
/// `listening on ADDR` line.
pub async fn start_echo(
    exe: &Path,
    name: &str,
    listen: SocketAddr,
    workers: u16,
    log: &Path,
) -> anyhow::Result<Backend> {
    let stderr = File::options().create(true).append(true).open(log)?;
    let mut cmd = Command::new(exe);
    cmd.args(["--listen", &listen.to_string(), "--name", name])
        .args(["--workers", &workers.to_string()])
        .stdout(Stdio::piped())
        .stderr(stderr);
    let mut guard = Guard::spawn(name, &mut cmd, None)?;
    let stdout = guard.take_stdout().context("weir-echo stdout")?;
    let mut line = String::new();
    tokio::time::timeout(
        Duration::from_secs(10),
        BufReader::new(stdout).read_line(&mut line),
    )
    .await
    .with_context(|| format!("{name} did not report its address within 10 s"))??;
    let addr = startup::echo_addr(&line).map_err(|e| anyhow!("{name}: {e}"))?;
    Ok(Backend { guard, addr })
}

/// A port that was free a moment ago on 127.0.0.1, for the peers only: HAProxy and NGINX
/// read their port from the config file run-peer writes and cannot say which one they got
/// from port 0, so the port is picked here, released, and may be taken by someone else before
/// the peer binds it. [`crate::proxies::start_proxy`] starts the peer again on another port when it
/// exits saying so. Weir binds port 0 and reports its ports ([`dataplane_addrs`]).
pub fn peer_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// The proxy and admin addresses a `weir-dataplane` started with both on port 0 got, from
/// its `weir-dataplane serving listen=ADDR admin=ADDR` log line (an info line: `WEIR_LOG`
/// must let it through), waited for up to `limit`.
pub async fn dataplane_addrs(
    guard: &mut Guard,
    limit: Duration,
) -> anyhow::Result<(SocketAddr, SocketAddr)> {
    let log = guard
        .log
        .clone()
        .context("weir-dataplane was started without a log file")?;
    let deadline = Instant::now() + limit;
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(line) = text
            .lines()
            .rev()
            .find(|line| line.contains(startup::DATAPLANE_SERVING))
        {
            return startup::dataplane_addrs(line).map_err(|e| anyhow!(e));
        }
        guard.check_alive()?;
        if Instant::now() >= deadline {
            bail!(
                "{} did not log `weir-dataplane serving listen=ADDR admin=ADDR` within {limit:?} \
                 (an info line: is WEIR_LOG below info?){}",
                guard.name,
                guard.log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `GET path` over a fresh connection; returns the status code and the body (unparsed when
/// chunked: callers only read small fixed-length bodies).
pub async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        stream
            .write_all(
                format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        anyhow::Ok(response)
    };
    let response = tokio::time::timeout(Duration::from_secs(2), exchange)
        .await
        .with_context(|| format!("GET http://{addr}{path} timed out"))??;
    let text = String::from_utf8_lossy(&response);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("GET http://{addr}{path}: no status line in {text:?}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or_else(String::new, |(_, body)| body.to_owned());
    Ok((status, body))
}

/// Polls `GET path` until it answers 200, the process dies, or `limit` passes.
pub async fn wait_ready(
    guard: &mut Guard,
    addr: SocketAddr,
    path: &str,
    limit: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    let mut last = String::from("no attempt");
    while Instant::now() < deadline {
        guard.check_alive()?;
        match http_get(addr, path).await {
            Ok((200, _)) => return Ok(()),
            Ok((status, _)) => last = format!("status {status}"),
            Err(err) => last = format!("{err:#}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!(
        "{} not ready: GET http://{addr}{path} still failing after {limit:?} ({last}){}",
        guard.name,
        guard.log_tail()
    )
}

/// The request counters of every backend, in target order.
pub async fn backend_requests(backends: &[Backend]) -> anyhow::Result<Vec<u64>> {
    let mut counts = Vec::with_capacity(backends.len());
    for backend in backends {
        let (status, body) = http_get(backend.addr, "/_stats").await?;
        let stats: serde_json::Value = serde_json::from_str(&body)
            .with_context(|| format!("bad /_stats from {} ({status}): {body:?}", backend.addr))?;
        counts.push(stats["requests"].as_u64().unwrap_or_default());
    }
    Ok(counts)
}
