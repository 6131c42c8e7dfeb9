//! Cleanup that survives the test process: a small `sh` that holds the other end of a pipe.
//!
//! It is told the id of every process the control plane starts. If the pipe closes without a
//! `done` line (the test binary exited, with a shared control plane that is never dropped, or
//! crashed or was killed), it kills those processes and removes the control plane's folder.
//! A control plane that is dropped stops its processes itself and then says `done`.

use std::io::Write;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};

use crate::Error;

const SCRIPT: &str = r#"
trap '' INT HUP TERM
pids=
while read -r word pid; do
  case "$word" in
    pid) pids="$pids $pid" ;;
    done) exit 0 ;;
  esac
done
[ -z "$pids" ] || kill -KILL $pids 2>/dev/null
for _ in 1 2 3 4 5 6 7 8 9 10; do
  rm -rf "$1" 2>/dev/null
  [ -e "$1" ] || exit 0
  sleep 0.2
done
"#;

/// The running reaper of one control plane.
pub(super) struct Reaper {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Reaper {
    /// Starts the reaper of the control plane living in `dir`.
    pub(super) fn spawn(dir: &Path) -> Result<Self, Error> {
        let mut child = Command::new("sh")
            .args(["-c", SCRIPT, "weir-e2e-reaper"])
            .arg(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(Error::io("starting the cleanup process (sh)"))?;
        let stdin = child.stdin.take();
        Ok(Self { child, stdin })
    }

    /// Adds a process to kill if the test binary goes away.
    pub(super) fn watch(&mut self, pid: u32) -> Result<(), Error> {
        self.say(&format!("pid {pid}"))
            .map_err(Error::io("telling the cleanup process a process id"))
    }

    fn say(&mut self, line: &str) -> std::io::Result<()> {
        match &mut self.stdin {
            Some(stdin) => writeln!(stdin, "{line}"),
            None => Ok(()),
        }
    }
}

impl Drop for Reaper {
    /// The owner has stopped its processes: the reaper leaves without touching anything.
    fn drop(&mut self) {
        let _ = self.say("done");
        self.stdin = None;
        let _ = self.child.wait();
    }
}
