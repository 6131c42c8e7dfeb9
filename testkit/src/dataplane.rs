//! `weir-dataplane` processes on ports of their choosing.

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::process::{Process, START_BOUND, weir_env};
use crate::startup::{DATAPLANE_SERVING, dataplane_addrs};

/// The `weir-dataplane` command at `exe` (a pools file or a controller is the caller's to add)
/// with both listeners on port 0 of 127.0.0.1, under [`weir_env`], stdout discarded and
/// stderr piped.
pub fn dataplane_command(exe: impl AsRef<OsStr>) -> Command {
    let mut command = Command::new(exe);
    command
        .args(["--listen", "127.0.0.1:0"])
        .args(["--admin", "127.0.0.1:0"]);
    weir_env(&mut command)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    command
}

/// A running `weir-dataplane`, its ports read from its startup line; killed when dropped.
pub struct DataPlane {
    /// The proxy listener.
    pub listen: SocketAddr,
    /// The admin listener.
    pub admin: SocketAddr,
    process: Process,
}

impl DataPlane {
    /// Starts `command` (from [`dataplane_command`]) and waits for its
    /// `weir-dataplane serving listen=ADDR admin=ADDR` line; `Err` with its log if it exits
    /// first or does not say it within [`START_BOUND`].
    pub async fn spawn(name: &str, command: Command) -> Result<Self, String> {
        let mut process = Process::spawn(name, command);
        let line = process.line_with(DATAPLANE_SERVING, START_BOUND).await?;
        let (listen, admin) = dataplane_addrs(&line)?;
        Ok(Self {
            listen,
            admin,
            process,
        })
    }

    /// Waits up to `bound` for `/ready` to answer 200; `Err` with the log if it exits first
    /// or the bound passes.
    pub async fn ready(&mut self, bound: Duration) -> Result<(), String> {
        let url = self.admin_url("/ready");
        self.process.until_ok(&url, bound).await
    }

    /// `http://LISTEN{path}` on the proxy listener.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.listen)
    }

    /// `http://ADMIN{path}` on the admin listener.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// Sends `signal` to the process.
    pub fn signal(&self, signal: Signal) {
        self.process.signal(signal);
    }

    /// Waits up to `bound` for the process to exit.
    pub async fn wait_exit(&mut self, bound: Duration) -> Option<ExitStatus> {
        self.process.wait_exit(bound).await
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
