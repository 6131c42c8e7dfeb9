//! The proxies under test: Weir from a pools file, HAProxy and NGINX through the peers'
//! launcher, each started in front of the same targets and stopped with what it left behind.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use tokio::process::Command;

use crate::plan::{Plan, Proxy};
use crate::procs::{self, Guard};
use crate::procs::{READY_LIMIT, STOP_GRACE};
use crate::tools::Tools;

/// Starts `proxy` in front of `targets` (Weir reads them from `pools`), logging to `log`, and
/// waits until it answers on the address it returns.
pub async fn start_proxy(
    plan: &Plan,
    tools: &Tools,
    pools: &Path,
    targets: &[(SocketAddr, u32)],
    proxy: Proxy,
    log: &Path,
) -> anyhow::Result<(Guard, SocketAddr)> {
    match proxy {
        Proxy::Weir | Proxy::WeirLog => {
            let any_port = SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).to_string();
            let mut cmd = Command::new(tools.dataplane.as_ref().context("weir-dataplane")?);
            cmd.arg("--pools")
                .arg(pools)
                .args(["--listen", &any_port])
                .args(["--admin", &any_port])
                .args(["--workers", &plan.workers.to_string()]);
            if proxy == Proxy::WeirLog {
                cmd.arg("--access-log")
                    .arg(log.with_extension("access.log"));
            }
            let mut guard = Guard::spawn(&proxy.to_string(), &mut cmd, Some(log))?;
            let (listen, admin) = procs::dataplane_addrs(&mut guard, READY_LIMIT).await?;
            procs::wait_ready(&mut guard, admin, "/ready", READY_LIMIT).await?;
            procs::wait_ready(&mut guard, listen, "/", READY_LIMIT).await?;
            Ok((guard, listen))
        }
        Proxy::Haproxy | Proxy::Nginx => {
            let mut attempt = 1;
            loop {
                let listen = SocketAddr::from((Ipv4Addr::LOCALHOST, procs::peer_port()?));
                let mut cmd = Command::new("bash");
                cmd.arg(tools.peers.as_ref().context("peers script")?)
                    .arg(proxy.to_string())
                    .arg(listen.to_string())
                    .arg(plan.workers.to_string())
                    .args(
                        targets
                            .iter()
                            .map(|(addr, weight)| format!("{addr}={weight}")),
                    );
                let mut guard = Guard::spawn(&proxy.to_string(), &mut cmd, Some(log))?;
                match procs::wait_ready(&mut guard, listen, "/", READY_LIMIT).await {
                    Ok(()) => return Ok((guard, listen)),
                    // See procs::peer_port: someone took the port before the peer bound it.
                    Err(e)
                        if attempt < 3 && format!("{e:#}").contains("Address already in use") =>
                    {
                        attempt += 1;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
    }
}

/// Stops a proxy started by [`start_proxy`] and removes the config directory a peer leaves.
pub async fn stop_proxy(guard: Guard) {
    let peer_dir = peer_temp_dir(guard.pid());
    guard.stop(STOP_GRACE).await;
    if let Some(dir) = peer_dir {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// The `/tmp/weir-peer.*` directory run-peer wrote the config of process `pid` to.
///
/// run-peer leaves it behind (it execs the peer), so the benchmark removes it after each run
/// rather than leave one directory per run in /tmp.
pub fn peer_temp_dir(pid: u32) -> Option<PathBuf> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    // nginx rewrites its argv into one title ("nginx: master process nginx -c ..."), so
    // words are split on spaces as well as NULs.
    String::from_utf8_lossy(&cmdline)
        .split(|c: char| c == '\0' || c.is_whitespace())
        .find(|arg| arg.starts_with("/tmp/weir-peer."))
        .and_then(|config| Path::new(config).parent())
        .filter(|dir| dir.parent() == Some(Path::new("/tmp")))
        .map(Path::to_path_buf)
}

/// The pools file `weir-dataplane --pools` reads.
pub fn pools_yaml(targets: &[(SocketAddr, u32)]) -> String {
    let mut yaml = String::from(
        "pools:\n  - name: bench\n    routes: [{ host: \"*\", pathPrefix: / }]\n    \
         algorithm: WeightedRoundRobin\n    targets:\n",
    );
    for (addr, weight) in targets {
        yaml.push_str(&format!(
            "      - {{ address: {addr}, weight: {weight} }}\n"
        ));
    }
    yaml
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_file_lists_targets_with_weights() {
        let yaml = pools_yaml(&[
            ("127.0.0.1:19001".parse().unwrap(), 3),
            ("127.0.0.1:19002".parse().unwrap(), 2),
        ]);
        assert_eq!(
            yaml,
            "pools:\n  - name: bench\n    routes: [{ host: \"*\", pathPrefix: / }]\n    \
             algorithm: WeightedRoundRobin\n    targets:\n      \
             - { address: 127.0.0.1:19001, weight: 3 }\n      \
             - { address: 127.0.0.1:19002, weight: 2 }\n"
        );
    }
}
