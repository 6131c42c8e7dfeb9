//! What can go wrong while starting or driving a control plane.

use std::fmt;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

/// Why a control plane could not be started or a command against it failed.
///
/// `Debug` prints the message too, so that a test returning `Result` shows the advice in it.
#[derive(thiserror::Error)]
pub enum Error {
    /// A binary is missing: `scripts/control-plane` has not been run, or an override points
    /// nowhere.
    #[error(
        "{binary} not found ({detail}): run scripts/control-plane, which builds kube-apiserver, \
         etcd, kubectl and helm from Go modules into ~/.cache/weir/k8s (scripts/test runs it first)"
    )]
    NotBuilt {
        /// The binary's name.
        binary: &'static str,
        /// Where it was looked for.
        detail: String,
    },
    /// A file or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The test certificates or service-account keys could not be generated.
    #[error("generating test certificates: {0}")]
    Certificate(#[from] rcgen::Error),
    /// The kubeconfig written for the control plane could not be loaded.
    #[error("loading the control plane's kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
    /// A request to the API server failed.
    #[error("{0}")]
    Kube(#[from] kube::Error),
    /// etcd or kube-apiserver exited while starting.
    #[error("{process} exited while starting ({status}); the end of {}:\n{tail}", log.display())]
    Exited {
        /// `etcd` or `kube-apiserver`.
        process: &'static str,
        /// How it exited.
        status: ExitStatus,
        /// Its log file (removed with the control plane).
        log: PathBuf,
        /// The last lines of the log.
        tail: String,
    },
    /// kube-apiserver did not answer `/readyz` with `ok` in time.
    #[error(
        "kube-apiserver not ready after {after:?} (last /readyz: {last}); the end of {}:\n{tail}",
        log.display()
    )]
    NotReady {
        /// How long it was waited for.
        after: Duration,
        /// The last answer or error from `/readyz`.
        last: String,
        /// The kube-apiserver log file.
        log: PathBuf,
        /// The last lines of the log.
        tail: String,
    },
    /// `kubectl` or `helm` failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        /// The command line, without the `--kubeconfig` argument.
        command: String,
        /// How it exited.
        status: ExitStatus,
        /// What it wrote to stderr.
        stderr: String,
    },
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Error {
    /// An [`Error::Io`] saying what was being done.
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| Self::Io { what, source }
    }
}
