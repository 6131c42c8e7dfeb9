//! Where the control plane's programs are found.
//!
//! `kube-apiserver` and `etcd`, first match wins:
//! 1. `TEST_ASSET_KUBE_APISERVER` / `TEST_ASSET_ETCD` (envtest's variables, a file each);
//! 2. `KUBEBUILDER_ASSETS` (envtest's folder);
//! 3. `WEIR_K8S_BIN`, the folder `scripts/control-plane` prints (`scripts/test` sets it);
//! 4. the cache folder that `scripts/control-plane --check` reports, so that a plain
//!    `cargo test -p weir-e2e` works once the binaries have been built.
//!
//! `helm` from steps 3 and 4 only (envtest does not ship it).
//!
//! `kubectl`, first match wins:
//! 1. `TEST_ASSET_KUBECTL` (envtest's variable, a file);
//! 2. the one `scripts/control-plane` builds from the same Kubernetes release as
//!    `kube-apiserver`, found as in steps 3 and 4 above;
//! 3. `kubectl` on `PATH`, as a last resort (which may be outside `kubectl`'s supported
//!    version skew of one minor version either side of the API server).

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::Error;

/// The programs a control plane runs, and the clients tests drive it with.
#[derive(Clone, Debug)]
pub struct Binaries {
    /// The `kube-apiserver` binary.
    pub kube_apiserver: PathBuf,
    /// The `etcd` binary.
    pub etcd: PathBuf,
    /// The `kubectl` to run: a path, or a bare name looked up on `PATH`.
    pub kubectl: PathBuf,
}

impl Binaries {
    /// Finds `kube-apiserver`, `etcd` and `kubectl` as the [module documentation](self) says.
    ///
    /// Fails with [`Error::NotBuilt`] (which says to run `scripts/control-plane`) when a
    /// binary is missing.
    pub fn find() -> Result<Self, Error> {
        Ok(Self {
            kube_apiserver: server_binary("kube-apiserver", "TEST_ASSET_KUBE_APISERVER")?,
            etcd: server_binary("etcd", "TEST_ASSET_ETCD")?,
            kubectl: kubectl()?,
        })
    }
}

/// Finds `kubectl` as the [module documentation](self) says: a path, or the bare name
/// `kubectl` (looked up on `PATH` when run) if neither `TEST_ASSET_KUBECTL` nor a built one is
/// there.
///
/// Fails only when `TEST_ASSET_KUBECTL` names no file.
pub fn kubectl() -> Result<PathBuf, Error> {
    if let Some(path) = env::var_os("TEST_ASSET_KUBECTL") {
        return executable(PathBuf::from(path), "kubectl", "TEST_ASSET_KUBECTL");
    }
    Ok(built("kubectl").unwrap_or_else(|_| PathBuf::from("kubectl")))
}

/// Finds `helm`, built by `scripts/control-plane`.
pub fn helm() -> Result<PathBuf, Error> {
    built("helm")
}

fn server_binary(name: &'static str, variable: &'static str) -> Result<PathBuf, Error> {
    if let Some(path) = env::var_os(variable) {
        return executable(PathBuf::from(path), name, variable);
    }
    if let Some(dir) = env::var_os("KUBEBUILDER_ASSETS") {
        return executable(Path::new(&dir).join(name), name, "KUBEBUILDER_ASSETS");
    }
    built(name)
}

/// A binary that `scripts/control-plane` builds.
fn built(name: &'static str) -> Result<PathBuf, Error> {
    if let Some(dir) = env::var_os("WEIR_K8S_BIN") {
        return executable(Path::new(&dir).join(name), name, "WEIR_K8S_BIN");
    }
    let dir = cache_dir().as_ref().map_err(|detail| Error::NotBuilt {
        binary: name,
        detail: detail.clone(),
    })?;
    executable(dir.join(name), name, "scripts/control-plane --check")
}

fn executable(path: PathBuf, binary: &'static str, from: &'static str) -> Result<PathBuf, Error> {
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::NotBuilt {
            binary,
            detail: format!("no file {} (from {from})", path.display()),
        })
    }
}

/// The bin folder of the cache, asked once per process of `scripts/control-plane --check`.
fn cache_dir() -> &'static Result<PathBuf, String> {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    DIR.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/control-plane");
        let output = Command::new(&script)
            .arg("--check")
            .output()
            .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
        let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
        if !output.status.success() {
            return Err(stderr);
        }
        let stdout = String::from_utf8_lossy(&output.stdout);
        let dir = stdout.lines().last().map(PathBuf::from);
        dir.ok_or_else(|| format!("{} --check printed no folder", script.display()))
    })
}
