//! Child processes that die with their handle, and what they write.

use std::io::{BufRead as _, BufReader, Read};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::http::{http1, send};

/// Longest a process may take to start serving.
pub const START_BOUND: Duration = Duration::from_secs(30);

/// Runs `command` as Weir's programs are run under test, whatever the test's own environment
/// holds: no `WEIR_*` variable inherited (those set on `command` itself stay), no colour,
/// `WEIR_LOG=info` unless `command` sets it (startup lines, which name the ports, are info
/// lines), and stdin closed.
pub fn weir_env(command: &mut Command) -> &mut Command {
    let own: Vec<_> = command.get_envs().map(|(key, _)| key.to_owned()).collect();
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("WEIR_") && !own.contains(&key) {
            command.env_remove(key);
        }
    }
    if !own.iter().any(|key| key == "WEIR_LOG") {
        command.env("WEIR_LOG", "info");
    }
    command.env("NO_COLOR", "1").stdin(Stdio::null())
}

/// A child process with its stderr collected; killed when dropped, its log printed first
/// when the test is panicking.
pub struct Process {
    name: String,
    child: Child,
    log: Log,
}

impl Process {
    /// Starts `command` under [`weir_env`], with stderr collected and stdout as the caller
    /// set it.
    ///
    /// # Panics
    /// When it cannot be started.
    pub fn spawn(name: &str, mut command: Command) -> Self {
        let mut child = weir_env(&mut command)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let log = Log::capture(child.stderr.take().expect("piped stderr"));
        Self {
            name: name.to_owned(),
            child,
            log,
        }
    }

    /// Its name in messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its stdout, when the caller piped it (once).
    pub fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.child.stdout.take()
    }

    /// Kills it at once (SIGKILL) and waits for it: its connections reset, its ports refuse.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends `signal` to it.
    ///
    /// # Panics
    /// When the signal cannot be sent.
    pub fn signal(&self, signal: Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, signal)
            .unwrap_or_else(|e| panic!("signalling {}: {e}", self.name));
    }

    /// Asks it to stop (SIGTERM) and waits up to `bound` for it to exit; kills it after that.
    /// Returns how it exited, `None` if it had to be killed.
    pub fn terminate(&mut self, bound: Duration) -> Option<ExitStatus> {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, Signal::SIGTERM);
        let started = Instant::now();
        while started.elapsed() < bound {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        None
    }

    /// Whether it has exited, and how.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits up to `bound` for it to exit.
    pub async fn wait_exit(&mut self, bound: Duration) -> Option<ExitStatus> {
        let started = Instant::now();
        while started.elapsed() < bound {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        None
    }

    /// What it wrote to stderr so far.
    pub fn log(&self) -> String {
        self.log.text()
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits up to `bound` for a line of its stderr that contains `marker` and returns it;
    /// `Err` with the log if it exits first or the bound passes.
    pub async fn line_with(&mut self, marker: &str, bound: Duration) -> Result<String, String> {
        let started = Instant::now();
        loop {
            if let Some(line) = self.log().lines().find(|line| line.contains(marker)) {
                return Ok(line.to_owned());
            }
            if let Some(exit) = self.exit_report().await {
                return Err(exit);
            }
            if started.elapsed() > bound {
                return Err(format!(
                    "{} did not log {marker:?} within {bound:?}; log:\n{}",
                    self.name,
                    self.log()
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// When it has exited, how, with its whole log.
    async fn exit_report(&mut self) -> Option<String> {
        let status = self.exited()?;
        // Let the log thread read the last lines.
        tokio::time::sleep(Duration::from_millis(50)).await;
        Some(format!(
            "{} exited with {status}; log:\n{}",
            self.name,
            self.log()
        ))
    }

    /// Polls GET `url` (each try bounded by a second) until it answers 200; `Err` with the
    /// log if it exits first or `bound` passes.
    pub async fn until_ok(&mut self, url: &str, bound: Duration) -> Result<(), String> {
        let client = http1();
        let started = Instant::now();
        loop {
            if let Some(exit) = self.exit_report().await {
                return Err(exit);
            }
            let reply = tokio::time::timeout(
                Duration::from_secs(1),
                send(&client, http::Method::GET, url, &[], ""),
            )
            .await;
            let last = match reply {
                Ok(Ok(reply)) if reply.status == http::StatusCode::OK => return Ok(()),
                Ok(Ok(reply)) => format!("{} {}", reply.status, reply.body.trim()),
                Ok(Err(e)) => e,
                Err(_) => "no answer within 1s".to_owned(),
            };
            if started.elapsed() > bound {
                return Err(format!(
                    "{}: GET {url} did not answer 200 within {bound:?} (last: {last}); log:\n{}",
                    self.name,
                    self.log()
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- {} log ----\n{}----", self.name, self.log());
        }
        self.kill();
    }
}

/// Lines a child writes, collected by a thread.
#[derive(Clone, Default)]
pub struct Log(Arc<Mutex<String>>);

impl Log {
    /// Collects `from` line by line until it closes.
    pub fn capture(from: impl Read + Send + 'static) -> Self {
        let log = Self::default();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(from).lines() {
                let Ok(line) = line else { break };
                let mut text = sink.0.lock().unwrap_or_else(|p| p.into_inner());
                text.push_str(&line);
                text.push('\n');
            }
        });
        log
    }

    /// Everything collected so far.
    pub fn text(&self) -> String {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}
