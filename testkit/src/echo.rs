//! `weir-echo` backends, and what they report.

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::mpsc;

use serde_json::Value;

use crate::binary::binary;
use crate::http::get;
use crate::process::{Process, START_BOUND};
use crate::startup::echo_addr;

/// A `weir-echo` backend on a port of its choosing; killed when dropped.
pub struct Echo {
    /// Its `--name`, answered in `x-backend`.
    pub name: String,
    /// Where it listens.
    pub addr: SocketAddr,
    process: Process,
}

impl Echo {
    /// Starts `weir-echo --name NAME` on a free port of 127.0.0.1 and waits for its
    /// `listening on` line.
    pub fn start(name: &str) -> Self {
        Self::start_at(name, SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// Starts `weir-echo --name NAME` on `addr` (port 0 for a free one; a killed backend
    /// comes back on its own port).
    pub fn start_at(name: &str, addr: SocketAddr) -> Self {
        Self::start_with(name, addr, Command::new(binary("weir-echo")))
    }

    /// Starts `weir-echo` through `command`, which runs it (the binary itself, or a wrapper
    /// such as `ip netns exec NS weir-echo`); `--listen ADDR --name NAME` are appended.
    ///
    /// # Panics
    /// When it does not say where it listens within [`START_BOUND`].
    pub fn start_with(name: &str, addr: SocketAddr, mut command: Command) -> Self {
        command
            .args(["--listen", &addr.to_string(), "--name", name])
            .stdout(Stdio::piped());
        let mut process = Process::spawn(&format!("weir-echo {name}"), command);
        let stdout = process.take_stdout().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(first)) = lines.next() {
                let _ = tx.send(first);
            }
            lines.for_each(drop);
        });
        let Ok(line) = rx.recv_timeout(START_BOUND) else {
            panic!(
                "weir-echo {name} did not say `listening on` within {START_BOUND:?}; stderr:\n{}",
                process.log()
            );
        };
        let addr = echo_addr(&line).unwrap_or_else(|e| panic!("{e}"));
        Self {
            name: name.to_owned(),
            addr,
            process,
        }
    }

    /// Kills the process at once (SIGKILL): its connections reset, its port refuses.
    pub fn kill(&mut self) {
        self.process.kill();
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

/// The values of header `name` in a `weir-echo` `/headers` report.
///
/// # Panics
/// When `report` holds no header list.
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
///
/// # Panics
/// When it arrived more than once.
pub fn seen_header(report: &Value, name: &str) -> Option<String> {
    let mut values = seen_headers(report, name);
    assert!(
        values.len() <= 1,
        "{name} arrived {} times: {values:?}",
        values.len()
    );
    values.pop()
}
