//! The conns scenario: what an idle client connection costs each proxy in memory.
//!
//! Each proxy in turn gets N keep-alive client connections (`--connections`, 3,000 by
//! default), one request on each, and is then left alone until every connection is idle; the
//! growth of its resident set (VmRSS, summed over its processes) from before the connections
//! to after, divided by N, is the figure. The same is done for N idle WebSocket tunnels
//! (`GET /ws` upgraded by weir-echo), which hold a target connection each as well.
//!
//! Requests are sent a few at a time ([`IN_FLIGHT`]), so that every proxy needs only a few
//! target connections and the figure is the client side's; the kernel's socket buffers are
//! not in RSS and count for none of the proxies.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use weir_testkit::TempDir;

use crate::plan::{Plan, Proxy};
use crate::procfs;
use crate::procs::{self, STOP_GRACE};
use crate::proxies::{pools_yaml, start_proxy, stop_proxy};
use crate::tools::Tools;

/// Most connections one run may open: each takes a descriptor here and two in the proxy.
pub const MAX_CONNECTIONS: u32 = 8_000;
/// Connections opened and requests sent at a time.
const IN_FLIGHT: usize = 16;
/// How long the connections are left alone before RSS is read: longer than any proxy's
/// deferred release of buffers, far shorter than any idle timeout (HAProxy's 30 s is the
/// shortest).
const SETTLE: Duration = Duration::from_secs(2);
/// Bound on connecting and one exchange, per connection.
const EXCHANGE_LIMIT: Duration = Duration::from_secs(10);

/// What is opened and left idle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// A keep-alive HTTP/1.1 connection after one `GET /`.
    KeepAlive,
    /// A WebSocket tunnel to weir-echo's `/ws`, after the 101.
    WebSocket,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Self::KeepAlive => "idle keep-alive connection",
            Self::WebSocket => "idle WebSocket tunnel",
        }
    }
}

/// One proxy's figure for one kind.
struct Figure {
    proxy: Proxy,
    kind: Kind,
    /// Bytes of RSS per connection; `None` when the proxy did not serve every connection.
    bytes_per_conn: Option<f64>,
    before_kib: u64,
    after_kib: u64,
    /// Connections that were refused, failed or closed before the reading.
    lost: usize,
}

/// Runs the conns scenario.
pub async fn run(plan: &Plan, tools: &Tools, tmp: &TempDir) -> anyhow::Result<bool> {
    let n = plan.connections;
    if n > MAX_CONNECTIONS {
        bail!("conns opens at most {MAX_CONNECTIONS} connections (--connections {n})");
    }
    raise_fd_limit(u64::from(n) + 256)?;
    let mut backends = Vec::new();
    for (i, weight) in [3, 2, 1].into_iter().enumerate() {
        let name = format!("echo-{}", i + 1);
        let log = tmp.path().join(format!("{name}.log"));
        let any_port = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        let backend =
            procs::start_echo(&tools.echo, &name, any_port, plan.backend_workers, &log).await?;
        backends.push((backend, weight));
    }
    let targets: Vec<(SocketAddr, u32)> = backends.iter().map(|(b, w)| (b.addr, *w)).collect();
    let pools = tmp.path().join("pools.yaml");
    std::fs::write(&pools, pools_yaml(&targets))?;

    let mut figures = Vec::new();
    for kind in [Kind::KeepAlive, Kind::WebSocket] {
        for &proxy in &plan.proxies {
            let log = tmp.path().join(format!("{proxy}-{kind:?}.log"));
            let (mut guard, listen) =
                start_proxy(plan, tools, &pools, &targets, proxy, &log).await?;
            // Warm-up: the proxy's first connections and target connections, so that what
            // follows measures connections rather than first-use allocations.
            drop(open(listen, IN_FLIGHT, kind).await);
            tokio::time::sleep(SETTLE).await;
            let before_kib = rss_kib(guard.pid());
            let (conns, mut lost) = open(listen, n as usize, kind).await;
            tokio::time::sleep(SETTLE).await;
            let after_kib = rss_kib(guard.pid());
            lost += conns.iter().filter(|c| !still_open(c)).count();
            guard.check_alive()?;
            let bytes_per_conn = (lost == 0)
                .then(|| after_kib.saturating_sub(before_kib) as f64 * 1024.0 / f64::from(n));
            let figure = Figure {
                proxy,
                kind,
                bytes_per_conn,
                before_kib,
                after_kib,
                lost,
            };
            println!("{}", figure.line(n));
            figures.push(figure);
            drop(conns);
            stop_proxy(guard).await;
        }
    }
    for (backend, _) in backends {
        backend.guard.stop(STOP_GRACE).await;
    }

    println!();
    println!(
        "memory per connection: {n} connections each, {} proxy worker(s), RSS growth / {n}",
        plan.workers
    );
    for kind in [Kind::KeepAlive, Kind::WebSocket] {
        let of = |p: Proxy| {
            figures
                .iter()
                .find(|f| f.kind == kind && f.proxy == p)
                .and_then(|f| f.bytes_per_conn)
        };
        let mut line = format!("{:<28}", kind.label());
        for &proxy in &plan.proxies {
            let shown = of(proxy).map_or_else(|| "n/a".to_owned(), |b| format!("{:.0} B", b));
            line.push_str(&format!("  {proxy} {shown:>9}"));
        }
        for (peer, label) in [
            (Proxy::Haproxy, "Weir/HAProxy"),
            (Proxy::Nginx, "Weir/NGINX"),
        ] {
            if let (Some(weir), Some(other)) = (of(Proxy::Weir), of(peer)) {
                line.push_str(&format!("  {label} {:.2}x", weir / other.max(1.0)));
            }
        }
        println!("{line}");
    }
    println!("(n/a: the proxy lost connections or does not tunnel; below 1x favours Weir)");
    println!("reproduce: {}", plan.command_line());
    Ok(true)
}

impl Figure {
    fn line(&self, n: u32) -> String {
        format!(
            "{:<8} {:<27} rss {:>7.1} -> {:>7.1} MiB  {}  lost {}/{n}",
            self.proxy,
            self.kind.label(),
            self.before_kib as f64 / 1024.0,
            self.after_kib as f64 / 1024.0,
            self.bytes_per_conn
                .map_or_else(|| "n/a".to_owned(), |b| format!("{b:.0} B/conn")),
            self.lost,
        )
    }
}

/// Opens `n` connections of `kind` to `listen`, [`IN_FLIGHT`] at a time, and returns those
/// that got their answer with the count of those that did not.
async fn open(listen: SocketAddr, n: usize, kind: Kind) -> (Vec<TcpStream>, usize) {
    let mut open = Vec::with_capacity(n);
    let mut lost = 0;
    let mut tasks = JoinSet::new();
    for i in 0..n {
        if tasks.len() >= IN_FLIGHT {
            match tasks.join_next().await {
                Some(Ok(Ok(Ok(stream)))) => open.push(stream),
                _ => lost += 1,
            }
        }
        tasks.spawn(tokio::time::timeout(
            EXCHANGE_LIMIT,
            exchange(listen, kind, i),
        ));
    }
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(Ok(Ok(stream))) => open.push(stream),
            _ => lost += 1,
        }
    }
    (open, lost)
}

/// Connects and makes the one exchange, leaving the connection open and idle.
async fn exchange(listen: SocketAddr, kind: Kind, i: usize) -> anyhow::Result<TcpStream> {
    let mut stream = TcpStream::connect(listen).await?;
    let request = match kind {
        Kind::KeepAlive => format!("GET /conns/{i} HTTP/1.1\r\nHost: {listen}\r\n\r\n"),
        Kind::WebSocket => format!(
            "GET /ws HTTP/1.1\r\nHost: {listen}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        ),
    };
    stream.write_all(request.as_bytes()).await?;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        let read = stream.read(&mut buf).await?;
        if read == 0 {
            bail!("closed before an answer");
        }
        got.extend_from_slice(&buf[..read]);
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
    };
    let head = String::from_utf8_lossy(&got[..head_end]).to_ascii_lowercase();
    let want = match kind {
        Kind::KeepAlive => "http/1.1 200",
        Kind::WebSocket => "http/1.1 101",
    };
    if !head.starts_with(want) {
        bail!("answered {:?}", head.lines().next().unwrap_or_default());
    }
    if kind == Kind::KeepAlive {
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .context("no Content-Length")?;
        while got.len() < head_end + length {
            let read = stream.read(&mut buf).await?;
            if read == 0 {
                bail!("closed inside the body");
            }
            got.extend_from_slice(&buf[..read]);
        }
    }
    Ok(stream)
}

/// Whether the proxy still holds the connection open: nothing to read, and no end of file.
fn still_open(stream: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(stream.try_read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

/// Current resident set of `root`'s process tree, KiB.
fn rss_kib(root: u32) -> u64 {
    procfs::tree(&procfs::all_processes(), root)
        .iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
        .filter_map(|status| parse_vm_rss_kib(&status))
        .sum()
}

/// `VmRSS` of a `/proc/PID/status`, KiB.
fn parse_vm_rss_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
}

/// Raises this process's open-files limit to at least `want` (up to the hard limit); the
/// proxies inherit it, and Weir derives its connection cap from it.
fn raise_fd_limit(want: u64) -> anyhow::Result<()> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft >= want {
        return Ok(());
    }
    if hard < want {
        bail!("the open-files hard limit {hard} is below the {want} this run needs");
    }
    setrlimit(Resource::RLIMIT_NOFILE, want.max(soft), hard)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_current_resident_set() {
        let status = "Name:\tnginx\nVmHWM:\t    5123 kB\nVmRSS:\t 4000 kB\n";
        assert_eq!(parse_vm_rss_kib(status), Some(4000));
        assert_eq!(parse_vm_rss_kib("Name:\tkthreadd\n"), None);
        assert!(rss_kib(std::process::id()) > 0);
    }
}
