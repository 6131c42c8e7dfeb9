//! Where the binaries and scripts the benchmark starts are.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

use crate::plan::{Args, Plan, Scenario};

/// Where the binaries and scripts the benchmark starts are.
pub struct Tools {
    pub echo: PathBuf,
    pub dataplane: Option<PathBuf>,
    pub peers: Option<PathBuf>,
}

impl Tools {
    pub fn locate(args: &Args, plan: &Plan) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("locating weir-bench")?;
        let bin_dir = match &args.bin_dir {
            Some(dir) => dir.clone(),
            None => exe
                .parent()
                .context("weir-bench has no parent dir")?
                .to_path_buf(),
        };
        let need = |name: &str| -> anyhow::Result<PathBuf> {
            let path = bin_dir.join(name);
            if !path.is_file() {
                bail!(
                    "{} not found; build it with `cargo build --release -p {name}` or use bench/run",
                    path.display()
                );
            }
            // Beside weir-bench, the binaries are this checkout's build products: one older
            // than its sources would measure old code in silence. One named by --bin-dir may
            // come from anywhere.
            if args.bin_dir.is_none() {
                if let Err(problem) = weir_testkit::check_built(&path) {
                    bail!(
                        "{} {problem}; build it with `cargo build --release -p {name}` or use \
                         bench/run",
                        path.display()
                    );
                }
            }
            Ok(path)
        };
        let echo = need("weir-echo")?;
        let dataplane = if plan.proxies.iter().any(|p| p.is_weir()) {
            Some(need("weir-dataplane")?)
        } else {
            None
        };
        let peers = if plan.proxies.iter().any(|p| !p.is_weir()) {
            let script = match &args.peers_script {
                Some(script) => script.clone(),
                None => default_peers_script(&exe)?,
            };
            if !script.is_file() {
                bail!(
                    "peers script {} not found (see --peers-script)",
                    script.display()
                );
            }
            Some(script)
        } else {
            None
        };
        if plan.scenario == Scenario::H2 {
            if which("h2load").is_none() {
                bail!("h2load is not installed (Debian: nghttp2-client); run scripts/install-deps");
            }
        } else if plan.scenario != Scenario::Battery && which("wrk").is_none() {
            bail!("wrk is not installed; run scripts/install-deps");
        }
        Ok(Self {
            echo,
            dataplane,
            peers,
        })
    }
}

/// `<workspace>/../shared/peers/run-peer`, with the workspace found from the binary's place
/// in `target/<profile>/`, or failing that from where this crate was compiled.
pub fn default_peers_script(exe: &Path) -> anyhow::Result<PathBuf> {
    let from_exe = exe.ancestors().nth(3).map(Path::to_path_buf);
    let from_build = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf);
    let root = from_exe
        .filter(|root| root.join("bench").is_dir())
        .or(from_build)
        .context("cannot find the workspace root; pass --peers-script")?;
    Ok(root.join("../shared/peers/run-peer"))
}

pub fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|path| path.is_file())
    })
}
