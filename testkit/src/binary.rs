//! Weir's binaries in the build folder, refused when stale.

use std::path::{Path, PathBuf};

/// The path of Weir binary `name` (`weir-controller`, `weir-dataplane`, `weir-echo`) next to
/// the test executable's `deps/` folder (or an example's `examples/` folder: the benchmarks
/// in `tests/examples/` find them the same way, in `target/release/` when run with
/// `--release`).
///
/// `cargo test` builds a package's binaries only for that package's own integration tests,
/// so these are built by `scripts/test` (`cargo build --workspace --bins`) before the tests
/// run. A binary left from an older build would test old code in silence, so it must pass
/// [`check_built`].
///
/// # Panics
/// When it is missing, older than one of its sources or built from another checkout, with
/// the command that builds it.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let path = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join(name))
        .expect("the test executable lives in target/<profile>/deps");
    let build = format!(
        "build it with `cargo build{} --workspace --bins` (scripts/test does)",
        if path.parent().is_some_and(|p| p.ends_with("release")) {
            " --release"
        } else {
            ""
        }
    );
    if let Err(problem) = check_built(&path) {
        panic!("{} {problem}: {build}", path.display());
    }
    path
}

/// Whether the binary at `path` exists, was built from this checkout's sources, and is at
/// least as new as every source file cargo's dep-info (`NAME.d` beside it) lists; `Err` says
/// which of these fails ("is missing", "is older than src/main.rs", …).
pub fn check_built(path: &Path) -> Result<(), String> {
    let built = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .map_err(|_| "is missing".to_owned())?;
    let dep_info = path.with_extension("d");
    let text = std::fs::read_to_string(&dep_info)
        .map_err(|e| format!("has no readable dep-info {} ({e})", dep_info.display()))?;
    let sources = dep_info_sources(&text);
    let checkout = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testkit/ lies in the workspace");
    let checkout = checkout
        .canonicalize()
        .unwrap_or_else(|_| checkout.to_owned());
    let own = sources
        .iter()
        .filter(|source| source.starts_with(&checkout))
        .count();
    if own == 0 {
        return Err(format!(
            "was built from another checkout's sources ({}), not {}'s",
            sources
                .first()
                .map_or("none listed".into(), |s| s.display().to_string()),
            checkout.display()
        ));
    }
    for source in &sources {
        match std::fs::metadata(source).and_then(|m| m.modified()) {
            Ok(changed) if changed > built => {
                return Err(format!("is older than {}", source.display()));
            }
            Ok(_) => {}
            Err(_) => {
                return Err(format!(
                    "was built from {}, which is gone",
                    source.display()
                ));
            }
        }
    }
    Ok(())
}

/// The files a Makefile-style dep-info (`target: a.rs b.rs`, spaces in names escaped)
/// lists.
fn dep_info_sources(text: &str) -> Vec<PathBuf> {
    let Some((_, deps)) = text.lines().next().and_then(|line| line.split_once(": ")) else {
        return Vec::new();
    };
    let mut sources = Vec::new();
    let mut current = String::new();
    let mut chars = deps.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => current.extend(chars.next()),
            ' ' => {
                if !current.is_empty() {
                    sources.push(PathBuf::from(std::mem::take(&mut current)));
                }
            }
            c => current.push(c),
        }
    }
    if !current.is_empty() {
        sources.push(PathBuf::from(current));
    }
    sources
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dep_info_lists_every_source_with_escaped_spaces_kept() {
        let text =
            "/t/debug/weir-echo: /w/echo/src/main.rs /w/my\\ dir/lib.rs\n\n/w/echo/src/main.rs:\n";
        assert_eq!(
            dep_info_sources(text),
            [
                PathBuf::from("/w/echo/src/main.rs"),
                PathBuf::from("/w/my dir/lib.rs")
            ]
        );
    }

    #[test]
    fn a_dep_info_without_a_rule_lists_nothing() {
        assert!(dep_info_sources("").is_empty());
        assert!(dep_info_sources("no rule here").is_empty());
    }

    #[test]
    fn a_missing_binary_is_refused_as_missing() {
        let dir = tempfile::tempdir().expect("a temporary folder");
        assert_eq!(
            check_built(&dir.path().join("weir-nothing")),
            Err("is missing".to_owned())
        );
    }

    #[test]
    fn a_binary_built_from_another_checkout_is_refused() {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let exe = dir.path().join("weir-echo");
        std::fs::write(&exe, "").expect("writing the binary");
        std::fs::write(
            exe.with_extension("d"),
            format!("{}: /elsewhere/echo/src/main.rs\n", exe.display()),
        )
        .expect("writing its dep-info");
        let problem = check_built(&exe).expect_err("another checkout's binary");
        assert!(problem.contains("another checkout"), "{problem}");
    }
}
